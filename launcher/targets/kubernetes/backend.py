"""dlaunch jobs in one namespace of one cluster: submit (pre-flight, then server-side apply), inspect,
follow, list and delete them. The shape of kubeflow/sdk's trainer backends
(kubeflow/trainer/backends/base.py): `submit`, `dry_run`, `get_job`, `list_jobs`, `get_job_logs`,
`wait_for_job_status`, `delete_job`. Requests go through `client.KubeClient`; nothing here prints.
"""

from __future__ import annotations

import contextlib
import functools
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from launcher.spec import JobSpec
from launcher.targets.kubernetes import logs as job_logs
from launcher.targets.kubernetes import preflight
from launcher.targets.kubernetes import status as job_status
from launcher.targets.kubernetes.client import (
    CONFIG_MAP, EVENT, JOB_KINDS, KUEUE_JOB_UID_LABEL, NETWORK_POLICY, POD, PRIORITY_CLASS, RAY_JOB, SERVICE,
    WORKLOADS, ClusterError, JobNotFoundError, Kind, KubeClient, KubeRequestError, RetryPolicy, describe,
    is_dlaunch_job, kind_of, main_kind,
)
from launcher.targets.kubernetes.kubeconfig import load_cluster
from launcher.targets.kubernetes.prepare_job import SPEC_KEY as PREPARE_SPEC_KEY
from launcher.targets.kubernetes.prepare_job import prepared_output
from launcher.targets.kubernetes.pods import DEFAULT_NAMESPACE, JOB_LABEL, SPEC_HASH_ANNOTATION
from launcher.targets.kubernetes.status import SUBMITTED_BY_ANNOTATION, USER_LABEL

DELETE_TIMEOUT_S = 300


def owner_reference(owner: dict[str, Any]) -> dict[str, Any]:
    """A reference that makes the garbage collector delete a dependent with its owner.

    Not `controller` (the owner's controller does not manage it). `blockOwnerDeletion`: a foreground
    delete of the job (cancel, --replace) removes the dependents before the job itself is gone, so a
    replacement never re-applies a ConfigMap the collector is about to delete.
    """
    meta = owner["metadata"]
    return {"apiVersion": owner["apiVersion"], "kind": owner["kind"], "name": meta["name"], "uid": meta["uid"],
            "controller": False, "blockOwnerDeletion": True}


def with_owner(obj: dict[str, Any], owner: dict[str, Any]) -> dict[str, Any]:
    """A copy of `obj` owned by `owner` (its only ownerReference)."""
    return {**obj, "metadata": {**obj["metadata"], "ownerReferences": [owner_reference(owner)]}}


# ----- users ------------------------------------------------------------------------------------
def user_label_value(user: str) -> str:
    """A user name as a label value: `alice@example.com` -> `alice-example.com`."""
    value = re.sub(r"[^A-Za-z0-9_.-]+", "-", user).strip("-_.")[:63].rstrip("-_.")
    return value or "unknown"


def with_submitter(obj: dict[str, Any], user: str) -> dict[str, Any]:
    """A copy of `obj` labelled with who submitted it, for `dlaunch list`."""
    meta = dict(obj["metadata"])
    meta["labels"] = {**meta.get("labels", {}), USER_LABEL: user_label_value(user)}
    meta["annotations"] = {**meta.get("annotations", {}), SUBMITTED_BY_ANNOTATION: user}
    return {**obj, "metadata": meta}


# ----- the backend --------------------------------------------------------------------------------
CREATE, UNCHANGED, REPLACE = "create", "unchanged", "replace"


@dataclass
class SubmitResult:
    """What `submit` did: the action taken, the objects applied, and lines worth telling the user."""

    action: str
    applied: list[str] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)


def resubmit_action(existing: dict[str, Any] | None, spec_hash: str, replace: bool) -> str:
    """create, unchanged (a no-op) or replace; refuses to replace a live job with a changed spec."""
    if existing is None:
        return CREATE
    state = job_status.job_state(existing)
    old_hash = (existing["metadata"].get("annotations") or {}).get(SPEC_HASH_ANNOTATION)
    if replace or state.phase == "Failed" or state.phase == "Deleting":
        return REPLACE
    if old_hash == spec_hash:
        return UNCHANGED
    if state.phase == "Succeeded":
        return REPLACE
    name, namespace = existing["metadata"]["name"], existing["metadata"].get("namespace")
    raise ClusterError(f"job {name} is {state.phase} in namespace {namespace} with a different spec (spec hash "
                       f"{old_hash}, yours {spec_hash}): pass --replace to delete it and start again from its latest "
                       "checkpoint, or wait for it to finish")


def check_ours(kind: Kind, existing: dict[str, Any] | None, name: str, namespace: str) -> None:
    """Refuse to take over an object of the job's name that dlaunch did not create (e.g. KubeRay's
    submitter Job of a Ray job of the same name)."""
    if existing is None or is_dlaunch_job(existing, name):
        return
    owners = existing["metadata"].get("ownerReferences") or []
    rayjob = next((ref["name"] for ref in owners if ref.get("kind") == "RayJob"), None)
    if rayjob is not None:
        raise ClusterError(f"{describe(kind, name)} in namespace {namespace} is KubeRay's submitter Job of "
                           f"{describe(RAY_JOB, rayjob)}, not a dlaunch job: cancel that Ray job first (dlaunch cancel "
                           f"--name {rayjob} -n {namespace}) or choose another job name")
    raise ClusterError(f"{describe(kind, name)} already exists in namespace {namespace} and was not created by "
                       "dlaunch: choose another job name, or delete it if it is a leftover")


class KubernetesBackend:
    """dlaunch jobs in one namespace of one cluster: submit, inspect, follow, delete."""

    def __init__(self, client: KubeClient) -> None:
        self.client = client

    @classmethod
    def connect(cls, context: str | None, namespace: str | None, retry: RetryPolicy | None = None
                ) -> "KubernetesBackend":
        """Load the kubeconfig (or in-cluster config); the namespace defaults to the context's, then `default`."""
        cluster = load_cluster(context)
        return cls(KubeClient(cluster, namespace or cluster.default_namespace or DEFAULT_NAMESPACE, retry))

    @property
    def namespace(self) -> str:
        return self.client.namespace

    def submit(self, spec: JobSpec, objects: list[dict[str, Any]], *, replace: bool = False, dry_run: bool = False,
               wait: bool = False, follow: bool = False) -> SubmitResult:
        """Pre-flight, then create, leave alone, or replace the job's objects (see `resubmit_action`)."""
        checked = preflight.run_preflight(self.client, spec, objects, wait=wait, follow=follow, replace=replace)
        kind = main_kind(spec.backend)
        existing = self.client.read(kind, spec.name)
        check_ours(kind, existing, spec.name, self.namespace)
        action = resubmit_action(existing, spec.spec_hash(), replace)
        result = SubmitResult(action, messages=[f"note: {note}" for note in checked.notes])
        if action == UNCHANGED:
            phase = job_status.job_state(existing or {}).phase
            result.messages.append(f"job {spec.name} is unchanged and already {phase} in namespace {self.namespace}: "
                                   "nothing to do (pass --replace to start it again)")
            return result
        if action == REPLACE:
            self._remove_for_replace(kind, spec, dry_run, result)
        job = None
        for obj in objects:
            if dry_run and action == REPLACE and kind_of(obj) == kind:
                continue  # the server would refuse it while the old one exists; it was validated at creation
            answer = self.client.apply(with_submitter(obj, checked.user), dry_run=dry_run)
            job = answer if kind_of(obj) == kind else job
            result.applied.append(describe(kind_of(obj), obj["metadata"]["name"]))
        if job is not None and not dry_run:
            self._own_dependents(objects, job, checked.user)
        return result

    def _own_dependents(self, objects: list[dict[str, Any]], job: dict[str, Any], user: str) -> None:
        """Make the job own its other objects (ConfigMap, Service, NetworkPolicy), so they go with it (its TTL, a cancel, a
        replacement) through the garbage collector. Applied after the job exists: the reference needs
        its uid, and its pods need the ConfigMap from the start."""
        for obj in objects:
            if kind_of(obj) not in JOB_KINDS:
                self.client.apply(with_owner(with_submitter(obj, user), job))

    def dry_run(self, spec: JobSpec, objects: list[dict[str, Any]], *, replace: bool = False) -> SubmitResult:
        """Everything `submit` would do, validated by the API server (`dryRun=All`), nothing persisted."""
        return self.submit(spec, objects, replace=replace, dry_run=True)

    def _remove_for_replace(self, kind: Kind, spec: JobSpec, dry_run: bool, result: SubmitResult) -> None:
        """Delete the previous run (foreground: its pods first) and wait until it is gone."""
        self.client.delete(kind, spec.name, dry_run=dry_run)
        if dry_run:
            result.messages.append(f"{describe(kind, spec.name)} would be deleted and created again (server dry run)")
            return
        self.wait_until_deleted(kind, spec.name, spec.kubernetes.termination_grace + DELETE_TIMEOUT_S)
        result.messages.append(f"replaced the previous run of job {spec.name}: the new run resumes from its latest "
                               "checkpoint, if it has one")

    def wait_until_deleted(self, kind: Kind, name: str, timeout_s: float) -> None:
        """Block until the object is gone (foreground deletion waits for its pods)."""
        deadline = time.monotonic() + timeout_s
        current = self.client.read(kind, name)
        if current is None:
            return
        for event_type, _ in self.client.watch(kind, current["metadata"]["resourceVersion"], known=[current],
                                               field_selector=f"metadata.name={name}", deadline=deadline):
            if event_type == "DELETED":
                return
        if self.client.read(kind, name) is not None:
            raise ClusterError(f"{describe(kind, name)} is still being deleted after {timeout_s:.0f} s: check its "
                               f"pods with `dlaunch status --name {name} -n {self.namespace}` and try again")

    def find_job(self, name: str, kind: Kind | None = None) -> tuple[Kind, dict[str, Any]]:
        """The job's main object (a Job or a RayJob carrying dlaunch's job label), or `JobNotFoundError`.

        By name, then by label: KubeRay's submitter Job has the RayJob's name but not the label.
        """
        for candidate in [kind] if kind else list(JOB_KINDS):
            found = self.client.read(candidate, name)  # None also when KubeRay is not installed
            if found is not None and is_dlaunch_job(found, name):
                return candidate, found
        raise JobNotFoundError(name, self.namespace)

    def get_job(self, name: str, kind: Kind | None = None) -> job_status.JobStatus:
        """Phase, each pod's state and why it is pending or failing, why pods cannot be created or Kueue
        holds the job, and the last checkpoint."""
        kind, obj = self.find_job(name, kind)
        pods, _ = self.client.list(POD, f"{JOB_LABEL}={name}")
        missing = job_status.pods_missing(obj, pods)
        events: list[dict[str, Any]] = []
        if missing or job_status.needs_events(pods):
            events, _ = self.client.list(EVENT, field_selector="type=Warning")
        problem = job_status.creation_problem(events, job_status.event_owners(obj)) if missing else ""
        if job_status.job_state(obj).phase == "Queued":
            problem = self.queue_problem(obj)
        return job_status.job_status(obj, pods, events, self.checkpoint_of(name), problem)

    def queue_problem(self, obj: dict[str, Any]) -> str:
        """Why Kueue has not admitted the job, from its Workload (v1beta2, else v1beta1) or its absence.

        Kueue creates no Workload while the job's PriorityClass is missing: its reconciler
        (pkg/controller/jobframework/reconciler.go, handleJobWithNoWorkload -> prepareWorkload ->
        ExtractPriority) fails on the NotFound and retries, without an event.
        """
        try:
            found = self.client.list_any_version(WORKLOADS, f"{KUEUE_JOB_UID_LABEL}={obj['metadata']['uid']}")
        except KubeRequestError as exc:
            if exc.status == 403:
                return ""
            raise
        if found is not None and found[1]:
            return job_status.queue_problem(found[1][0], None)
        return job_status.queue_problem(None, self.missing_priority_class(job_status.priority_class_of(obj)))

    def missing_priority_class(self, name: str | None) -> str | None:
        """`name` if no PriorityClass has it (None when it exists, is not set, or may not be read)."""
        if name is None:
            return None
        try:
            return name if self.client.read(PRIORITY_CLASS, name) is None else None
        except KubeRequestError as exc:
            if exc.status == 403:
                return None
            raise

    def checkpoint_of(self, name: str) -> job_status.CheckpointInfo:
        """Where the job's checkpoints are and the last committed step, read from its ConfigMap."""
        config_maps, _ = self.client.list(CONFIG_MAP, f"{JOB_LABEL}={name}")
        data_spec = next((cm["data"][PREPARE_SPEC_KEY] for cm in config_maps
                          if PREPARE_SPEC_KEY in (cm.get("data") or {})), None)
        if data_spec is not None:  # a `dlaunch prepare --on` job: it writes a dataset, not checkpoints
            return job_status.CheckpointInfo(None, prepared_output(data_spec), "none: a prepare job writes a dataset")
        text = next((cm.get("data", {}).get("job.json") for cm in config_maps if "job.json" in cm.get("data", {})),
                    None)
        if text is None:
            return job_status.CheckpointInfo(None, None, "unknown (the job's ConfigMap is gone)")
        return job_status.checkpoint_info(text, name)

    def list_jobs(self, user: str | None) -> list[job_status.JobSummary]:
        """dlaunch jobs in the namespace, only `user`'s unless None (then everyone's)."""
        selector = JOB_LABEL + (f",{USER_LABEL}={user_label_value(user)}" if user else "")
        found: list[dict[str, Any]] = []
        for kind in JOB_KINDS:
            try:
                found += self.client.list(kind, selector)[0]
            except KubeRequestError as exc:
                if not (kind == RAY_JOB and exc.status == 404):
                    raise
        mine = [obj for obj in found
                if user is None or (obj["metadata"].get("annotations") or {}).get(SUBMITTED_BY_ANNOTATION) == user]
        return sorted((job_status.job_summary(obj) for obj in mine), key=lambda s: s.name)

    def get_job_logs(self, name: str, *, index: int | None = None, every: bool = False, follow: bool,
                     write: Callable[[str], None], kind: Kind | None = None,
                     stop: threading.Event | None = None) -> None:
        """Print one log: pod `index`'s, every pod's (`every`, interleaved with prefixes), or by default
        the job's main output: pod 0's, or for Ray the driver's (the submitter pod's, where KubeRay's
        `ray job logs --follow` prints the training output).

        Following ends when the job finishes (or, given `stop`, when it is set).
        """
        kind, obj = self.find_job(name, kind)
        nodes = job_status.node_count(obj)
        if index is not None and index >= nodes:
            raise ClusterError(f"job {name} has pods 0 to {nodes - 1}, not {index}: pass --index between them")
        driver: list[int | str] = [job_status.DRIVER] if kind == RAY_JOB else []
        if every:
            sources = driver + list(range(nodes))
        else:
            sources = [index if index is not None else (driver or [0])[0]]
        done = stop.is_set if stop is not None else functools.partial(self._job_finished, kind, name)
        job_logs.show_logs(self.client, name, sources, follow=follow, write=write, done=done, prefix=every)

    def _job_finished(self, kind: Kind, name: str) -> bool:
        obj = self.client.read(kind, name)
        return obj is None or job_status.job_state(obj).terminal

    def wait_for_job_status(self, name: str, kind: Kind | None = None,
                            on_change: Callable[[job_status.JobState], None] | None = None) -> job_status.JobState:
        """Watch the job until it succeeds or fails; `on_change` hears each new phase."""
        kind, obj = self.find_job(name, kind)
        state = job_status.job_state(obj)
        if on_change:
            on_change(state)
        events = self.client.watch(kind, obj["metadata"]["resourceVersion"], known=[obj],
                                   field_selector=f"metadata.name={name}")
        with contextlib.closing(events):
            while not state.terminal:
                event_type, obj = next(events)
                if event_type == "DELETED":
                    raise ClusterError(f"job {name} was deleted before it finished (by `dlaunch cancel`?): its "
                                       "checkpoints are kept; submit it again to resume")
                new = job_status.job_state(obj)
                if new != state and on_change:
                    on_change(new)
                state = new
        return state

    def delete_job(self, name: str, *, wait: bool = False) -> list[str]:
        """Delete the job's objects (the job first, foreground: its pods and owned objects go before it).

        The ConfigMap, Service and NetworkPolicy, owned by the job, usually go with it (garbage
        collector); they are deleted by name too, for jobs submitted before dlaunch set owner
        references. Returns what went.
        """
        found = self._labelled_objects(name)
        if not found:
            raise JobNotFoundError(name, self.namespace)
        for kind, item in found:
            self.client.delete(kind, item)  # False: already gone with its owner
            if wait and kind in JOB_KINDS:
                self.wait_until_deleted(kind, item, DELETE_TIMEOUT_S)
        return [describe(kind, item) for kind, item in found]

    def _labelled_objects(self, name: str) -> list[tuple[Kind, str]]:
        """(kind, name) of every object carrying the job's label: jobs first, then what they own."""
        found: list[tuple[Kind, str]] = []
        for kind in (*JOB_KINDS, SERVICE, CONFIG_MAP, NETWORK_POLICY):
            try:
                items, _ = self.client.list(kind, f"{JOB_LABEL}={name}")
            except KubeRequestError as exc:
                if kind == RAY_JOB and exc.status == 404:
                    continue
                raise
            found += [(kind, item["metadata"]["name"]) for item in items]
        return found
