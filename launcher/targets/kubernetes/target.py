"""The Kubernetes target: a spec becomes rendered objects (the request), applied to a namespace.

`prepare` applies `--namespace` to the spec once and renders it; what `--dry-run` prints is the
request's YAML, and `launch` applies exactly those objects. Everything else goes through
`backend.KubernetesBackend` in the job's namespace. Nothing here prints.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from launcher.spec import JobSpec
from launcher.targets.base import Cancelled, Handle, JobRow, Outcome, SubmitOptions, Where
from launcher.targets.kubernetes import status as job_status
from launcher.targets.kubernetes.backend import KubernetesBackend, SubmitResult
from launcher.targets.kubernetes.client import ClusterError, Kind, main_kind
from launcher.targets.kubernetes.documents import objects_to_yaml
from launcher.targets.kubernetes.kubeconfig import kubeconfig_path
from launcher.targets.kubernetes.pods import namespace_of
from launcher.targets.kubernetes.render import render
from training.contract import BatchLayout

Obj = dict[str, Any]


def with_namespace(spec: JobSpec, namespace: str | None) -> JobSpec:
    """The spec with `--namespace` applied: render this one, since pod 0's DNS name contains the namespace.

    (`--context` only says where to connect: it changes neither the objects nor the spec hash.)
    """
    if not namespace or namespace == spec.kubernetes.namespace:
        return spec
    return spec.model_copy(update={"kubernetes": spec.kubernetes.model_copy(update={"namespace": namespace})})


@dataclass(frozen=True)
class KubeRequest:
    """The objects to apply, the namespace they were rendered for and the context to apply them with."""

    spec: JobSpec
    objects: list[Obj]
    namespace: str
    context: str | None
    options: SubmitOptions = field(default_factory=SubmitOptions)

    @property
    def name(self) -> str:
        return self.spec.name

    def text(self) -> str:
        return objects_to_yaml(self.objects)

    @classmethod
    def from_objects(cls, spec: JobSpec, objects: list[Obj], *, context: str | None, namespace: str | None,
                     options: SubmitOptions) -> "KubeRequest":
        """A request for objects rendered elsewhere; `namespace` (if given) must be theirs."""
        rendered = {obj["metadata"].get("namespace") for obj in objects} - {None}
        target = namespace or namespace_of(spec)
        if rendered != {target}:
            raise ClusterError(f"the objects were rendered for namespace {', '.join(sorted(rendered))}, not {target}: "
                               f"set kubernetes.namespace: {target} in the spec instead of passing --namespace (pod "
                               "0's rendezvous address contains the namespace)")
        return cls(spec, objects, target, context or spec.kubernetes.context, options)


@dataclass(frozen=True)
class KubeJob:
    """What a handle needs beyond the name: the kind of its main object, the context, its spec if known."""

    kind: Kind | None
    context: str | None
    spec: JobSpec | None = None


def submitted_lines(request: KubeRequest, backend: KubernetesBackend, result: SubmitResult) -> list[str]:
    """What was applied, where the checkpoints are (a resubmitted job resumes from them), what next."""
    lines = list(result.messages)
    spec, context = request.spec, backend.client.cluster.context
    if result.applied:
        lines.append(f"job {spec.name} submitted to namespace {backend.namespace}"
                     f"{f' (context {context})' if context else ''}: applied {', '.join(result.applied)}")
        settings = spec.training.checkpoint
        checkpoint = job_status.checkpoint_info_for(settings.uri, spec.name, settings.endpoint_url)
        resume = "; the job resumes from it" if checkpoint.step is not None else ""
        lines.append(f"checkpoints: {checkpoint.summary()}{resume}")
    ref = f"--name {spec.name} -n {backend.namespace}"
    lines.append(f"next: dlaunch status {ref}  |  dlaunch logs {ref} --follow  |  dlaunch cancel {ref}")
    return lines


def lines_of(produce: Callable[[Callable[[str], None]], None]) -> Iterator[str]:
    """The lines a writer-callback producer writes, as an iterator (the producer runs in a thread);
    its dlaunch errors are raised here."""
    lines: queue.Queue[tuple[str, Any]] = queue.Queue()

    def run() -> None:
        try:
            produce(lambda text: lines.put(("line", text)))
        except Exception as exc:  # noqa: BLE001 - handed to the consuming thread, not swallowed
            lines.put(("error", exc))
        lines.put(("end", None))
    threading.Thread(target=run, name="dlaunch-logs", daemon=True).start()
    while True:
        kind, value = lines.get()
        if kind == "end":
            return
        if kind == "error":
            raise value
        yield value


class KubernetesTarget:
    """dlaunch jobs on a cluster: the namespace and context come from `Where`, else the spec, else the
    kubeconfig context."""

    name = "kubernetes"

    def __init__(self, where: Where) -> None:
        self.where = where
        self._backends: dict[tuple[str | None, str | None], KubernetesBackend] = {}

    def backend(self, context: str | None, namespace: str | None) -> KubernetesBackend:
        """A backend connected to `context` and `namespace` (one per pair, reused)."""
        key = (context, namespace)
        if key not in self._backends:
            self._backends[key] = KubernetesBackend.connect(context, namespace)
        return self._backends[key]

    @staticmethod
    def available() -> bool:
        """Whether a cluster is configured here at all (a kubeconfig, or a pod's service account)."""
        return kubeconfig_path() is not None or bool(os.environ.get("KUBERNETES_SERVICE_HOST"))

    # ----- submit ---------------------------------------------------------------------------------
    def prepare(self, spec: JobSpec, layout: BatchLayout, options: SubmitOptions) -> KubeRequest:
        """Render the spec (with `--namespace` applied, once) into the objects `launch` will apply."""
        spec = with_namespace(spec, self.where.namespace)
        return KubeRequest(spec, render(spec, layout), namespace_of(spec), self.where.context or
                           spec.kubernetes.context, options)

    def launch(self, request: KubeRequest) -> Handle:  # type: ignore[override]
        """Pre-flight, then apply the request's objects (or leave an unchanged job alone)."""
        backend = self.backend(request.context, request.namespace)
        options = request.options
        result = backend.submit(request.spec, request.objects, replace=options.replace, wait=options.wait,
                                follow=options.follow)
        return Handle(self.name, request.name, backend.namespace, tuple(submitted_lines(request, backend, result)),
                      KubeJob(main_kind(request.spec.backend), request.context, request.spec))

    def server_dry_run(self, request: KubeRequest) -> list[str]:
        """Everything `launch` would do, validated by the API server (`dryRun=All`); lines to show."""
        backend = self.backend(request.context, request.namespace)
        result = backend.dry_run(request.spec, request.objects, replace=request.options.replace)
        return result.messages + [f"{name} serverside-applied (server dry run)" for name in result.applied]

    # ----- a job ------------------------------------------------------------------------------------
    def find(self, name: str, spec: JobSpec | None = None) -> Handle:
        """A handle for job `name` (its namespace: --namespace, else the spec's, else the context's)."""
        context = self.where.context or (spec.kubernetes.context if spec else None)
        namespace = self.where.namespace or (namespace_of(spec) if spec else None)
        backend = self.backend(context, namespace)
        kind = main_kind(spec.backend) if spec else None
        return Handle(self.name, name, backend.namespace, (), KubeJob(kind, context, spec))

    def _backend_of(self, handle: Handle) -> KubernetesBackend:
        return self.backend(handle.detail.context, handle.where)

    def status(self, handle: Handle) -> job_status.JobStatus:
        return self._backend_of(handle).get_job(handle.name, handle.detail.kind)

    def logs(self, handle: Handle, *, rank: int | None = None, every: bool = False,
             follow: bool = False, stop: threading.Event | None = None) -> Iterator[str]:
        """Pod `rank`'s log (a pod index), every pod's interleaved, or by default the job's main output."""
        backend = self._backend_of(handle)
        return lines_of(lambda write: backend.get_job_logs(handle.name, index=rank, every=every, follow=follow,
                                                           write=write, kind=handle.detail.kind, stop=stop))

    def wait(self, handle: Handle, on_change: Callable[[str], None] | None = None) -> Outcome:
        """Watch the job until it succeeds or fails; `on_change` hears each new phase."""
        def changed(state: job_status.JobState) -> None:
            if on_change is not None:
                on_change(f"job {handle.name}: {state.describe()}")
        state = self._backend_of(handle).wait_for_job_status(handle.name, handle.detail.kind, on_change=changed)
        return Outcome(state.phase, None, state.reason)

    def cancel(self, handle: Handle, *, wait: bool = False) -> Cancelled:
        """Delete the job's objects, its Job or RayJob first; the checkpoints stay."""
        backend, spec = self._backend_of(handle), handle.detail.spec
        if spec is not None:
            settings = spec.training.checkpoint
            checkpoint = job_status.checkpoint_info_for(settings.uri, handle.name, settings.endpoint_url)
        else:
            checkpoint = backend.checkpoint_of(handle.name)  # read before its ConfigMap goes
        deleted = backend.delete_job(handle.name, wait=wait)
        how = "deleted" if wait else "deleting (foreground: pods stop first, each within its grace period)"
        return Cancelled([f"job {handle.name}: {how} {', '.join(deleted)} in namespace {backend.namespace}",
                          f"checkpoints are kept: {checkpoint.summary()}; submit the same spec again to resume from "
                          "the latest"])

    def list(self, all_users: bool = False) -> list[JobRow]:
        """dlaunch jobs in the namespace: only yours unless `all_users`."""
        backend = self.backend(self.where.context, self.where.namespace)
        jobs = backend.list_jobs(None if all_users else backend.client.whoami())
        return [JobRow(job.name, self.name, job.backend, job.phase, backend.namespace, job_status.age(job.created),
                       {"summary": job}) for job in jobs]

    def namespace(self) -> str:
        """The namespace `list` looks in."""
        return self.backend(self.where.context, self.where.namespace).namespace
