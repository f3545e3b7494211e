"""Submit, follow and manage dlaunch jobs on a Kubernetes cluster, through the official client.

`KubernetesBackend` is the one interface (the shape of kubeflow/sdk's trainer backends):
`submit`, `dry_run`, `get_job`, `list_jobs`, `get_job_logs`, `wait_for_job_status`,
`delete_job`. Underneath it, `KubeClient` sends every request: plain dicts in and out, bounded
retries with backoff on 429, 5xx and dropped connections, watches that reconnect from the last
resourceVersion and relist on 410 Gone, and server-side apply with field manager `dlaunch`.
Client errors become `SubmitError`s that name the object and the next step.

The `kubernetes` package is imported here and nowhere else, and only when a command needs a
cluster: the CLI never loads this module at start-up.
"""

from __future__ import annotations

import contextlib
import functools
import getpass
import json
import os
import random
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import urllib3
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes import watch as k8s_watch
from kubernetes.client.exceptions import ApiException

from launcher.errors import SubmitError
from launcher.spec import JobSpec
from launcher.targets.kubernetes import logs as job_logs
from launcher.targets.kubernetes import preflight
from launcher.targets.kubernetes import status as job_status
from launcher.targets.kubernetes.pods import DEFAULT_NAMESPACE, JOB_LABEL, SPEC_HASH_ANNOTATION, namespace_of
from launcher.targets.kubernetes.status import SUBMITTED_BY_ANNOTATION, USER_LABEL

FIELD_MANAGER = "dlaunch"
APPLY_CONTENT_TYPE = "application/apply-patch+yaml"
FOREGROUND = "Foreground"
TRANSIENT_STATUS = frozenset({429, 500, 502, 503, 504})
REQUEST_TIMEOUT_S = (10, 60)
WATCH_WINDOW_S = 240
LOG_READ_TIMEOUT_S = 600
DELETE_TIMEOUT_S = 300
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
NEXT_STEPS = {
    None: "check that the cluster is reachable from here (kubectl cluster-info) and that --context names it",
    401: "your credentials were rejected or have expired: log in to the cluster again (refresh your kubeconfig)",
    403: "ask a cluster admin for the dlaunch user role in this namespace (see k8s/README.md)",
    404: "check the namespace and the job name (`dlaunch list` shows your jobs)",
    409: "another object has this name: `dlaunch cancel` it or choose another job name",
    410: "the API server expired the request: run the command again",
    422: "the API server rejected the object: fix what the message names (`dlaunch render` shows the objects)",
    429: "the API server is throttling requests: try again in a minute",
}
SERVER_FAILURE_STEP = "the API server is failing: try again shortly, or ask the cluster admin"
OTHER_STEP = "dlaunch sent a request this API server does not accept: please report it with the message above"


# ----- errors -------------------------------------------------------------------------------------
class ClusterError(SubmitError):
    """The cluster cannot be reached, configured or used as asked."""


class KubeRequestError(ClusterError):
    """A request failed for good (after retries): `what` failed, why, and what to do next."""

    def __init__(self, what: str, status: int | None, detail: str) -> None:
        self.status, self.detail = status, detail
        super().__init__(f"{what}: {detail}. {next_step(status)}")


class LogStreamDropped(ClusterError):
    """A followed log stream ended without reaching the end of the container's output."""


class JobNotFoundError(ClusterError):
    """No dlaunch job of that name in the namespace."""

    def __init__(self, name: str, namespace: str) -> None:
        super().__init__(f"no job named '{name}' in namespace '{namespace}': check the name, --namespace and "
                         f"--context (`dlaunch list` shows your jobs)")


def next_step(status: int | None) -> str:
    """What the user can do about a request that failed with `status` (None: no answer at all)."""
    if status in NEXT_STEPS:
        return NEXT_STEPS[status]
    return SERVER_FAILURE_STEP if status is not None and status >= 500 else OTHER_STEP


def failure_detail(exc: Exception) -> tuple[int | None, str]:
    """The HTTP status (None for a connection failure) and the API server's own message."""
    if isinstance(exc, ApiException):
        try:
            message = json.loads(exc.body or "{}").get("message")
        except ValueError:
            message = None
        return exc.status, f"{exc.status} {message or exc.reason or 'error'}"
    reason = getattr(exc, "reason", None) or exc
    text = str(reason)
    for known in ("Connection refused", "Name or service not known", "timed out", "Remote end closed connection"):
        if known.lower() in text.lower():
            return None, f"connection failed: {known.lower()}"
    return None, f"connection failed: {type(exc).__name__}: {text[:150]}"


def is_transient(exc: Exception) -> bool:
    """Worth retrying: throttling, server errors, and connections reset or cut mid-answer."""
    if isinstance(exc, ApiException):
        return exc.status in TRANSIENT_STATUS
    return isinstance(exc, (urllib3.exceptions.ProtocolError, urllib3.exceptions.ReadTimeoutError))


# ----- resource kinds ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Kind:
    """A Kubernetes resource dlaunch touches, and how the official client names it."""

    kind: str
    plural: str
    group: str = ""
    version: str = "v1"
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def snake(self) -> str:
        return re.sub(r"(?<!^)(?=[A-Z])", "_", self.kind).lower()

    @property
    def label(self) -> str:
        """How kubectl names it: `configmap`, `job.batch`, `rayjob.ray.io`."""
        return f"{self.kind.lower()}.{self.group}" if self.group else self.kind.lower()


CONFIG_MAP = Kind("ConfigMap", "configmaps")
SERVICE = Kind("Service", "services")
SECRET = Kind("Secret", "secrets")
POD = Kind("Pod", "pods")
EVENT = Kind("Event", "events")
NAMESPACE = Kind("Namespace", "namespaces", namespaced=False)
NODE = Kind("Node", "nodes", namespaced=False)
SERVICE_ACCOUNT = Kind("ServiceAccount", "serviceaccounts")
RESOURCE_QUOTA = Kind("ResourceQuota", "resourcequotas")
PRIORITY_CLASS = Kind("PriorityClass", "priorityclasses", "scheduling.k8s.io", namespaced=False)
NETWORK_POLICY = Kind("NetworkPolicy", "networkpolicies", "networking.k8s.io")
JOB = Kind("Job", "jobs", "batch")
RAY_JOB = Kind("RayJob", "rayjobs", "ray.io")
# Kueue serves v1beta2 (its storage version) and, deprecated, v1beta1 (apis/kueue/v1beta1:
# "This version is deprecated. Use v1beta2 instead."); older Kueue releases only v1beta1.
# Reads try them in this order.
KUEUE_GROUP = "kueue.x-k8s.io"
LOCAL_QUEUES = tuple(Kind("LocalQueue", "localqueues", KUEUE_GROUP, v) for v in ("v1beta2", "v1beta1"))
WORKLOADS = tuple(Kind("Workload", "workloads", KUEUE_GROUP, v) for v in ("v1beta2", "v1beta1"))
# Kueue labels each Workload with the uid of the job it stands for (pkg/controller/constants: JobUIDLabel).
KUEUE_JOB_UID_LABEL = "kueue.x-k8s.io/job-uid"
KINDS = {(k.api_version, k.kind): k for k in (CONFIG_MAP, SERVICE, SECRET, POD, NETWORK_POLICY, JOB, RAY_JOB)}
JOB_KINDS = (JOB, RAY_JOB)


def kind_of(obj: dict[str, Any]) -> Kind:
    found = KINDS.get((obj.get("apiVersion", ""), obj.get("kind", "")))
    if found is None:
        raise ClusterError(f"dlaunch does not know how to apply {obj.get('apiVersion')} {obj.get('kind')} objects")
    return found


def main_kind(backend: str) -> Kind:
    """The object that is the job: a RayJob for Ray, an Indexed Job for DeepSpeed."""
    return RAY_JOB if backend == "ray" else JOB


def describe(kind: Kind, name: str) -> str:
    return f"{kind.label}/{name}"


def is_dlaunch_job(obj: dict[str, Any], name: str) -> bool:
    """dlaunch's own job object: it carries dlaunch's job label. KubeRay's submitter Job, a batch Job
    with the RayJob's name (rayjob_controller.go, createNewK8sJob), only carries KubeRay's labels."""
    return (obj.get("metadata", {}).get("labels") or {}).get(JOB_LABEL) == name


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


# ----- retries ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class RetryPolicy:
    """Bounded exponential backoff with jitter; a server's Retry-After wins (up to the cap)."""

    attempts: int = 6
    base_delay_s: float = 0.5
    max_delay_s: float = 16.0

    def delay(self, attempt: int, retry_after: str | None) -> float:
        if retry_after is not None and retry_after.strip().isdigit():
            return min(float(retry_after), self.max_delay_s)
        return min(self.base_delay_s * 2**attempt, self.max_delay_s) * random.uniform(0.5, 1.0)


def retry_after_of(exc: Exception) -> str | None:
    headers = getattr(exc, "headers", None)
    return headers.get("Retry-After") if headers else None


# ----- configuration ----------------------------------------------------------------------------
@dataclass
class ClusterConfig:
    """A configured client for one cluster, the context it came from and that context's namespace."""

    api_client: Any
    context: str | None
    default_namespace: str | None
    server: str


def kubeconfig_path() -> str | None:
    """$KUBECONFIG (read now, not at import), else ~/.kube/config if it exists."""
    if os.environ.get("KUBECONFIG"):
        return os.environ["KUBECONFIG"]
    default = Path("~/.kube/config").expanduser()
    return str(default) if default.exists() else None


def load_cluster(context: str | None = None) -> ClusterConfig:
    """Client settings from the kubeconfig (a chosen or the current context), or in-cluster config."""
    path = kubeconfig_path()
    if path is not None:
        return _from_kubeconfig(path, context)
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        if context is not None:
            raise ClusterError(f"--context {context} needs a kubeconfig, but there is none here: this is a pod "
                               "using its service account; drop --context")
        return _in_cluster()
    raise ClusterError("no Kubernetes configuration: no kubeconfig at ~/.kube/config or $KUBECONFIG, and not running "
                       "in a pod: point KUBECONFIG at your cluster's kubeconfig (for kind: kind export kubeconfig)")


def _from_kubeconfig(path: str, context: str | None) -> ClusterConfig:
    try:
        contexts, current = k8s_config.list_kube_config_contexts(config_file=path)
    except (k8s_config.ConfigException, OSError, ValueError) as exc:
        raise ClusterError(f"cannot read kubeconfig {path}: {exc}: fix it or point KUBECONFIG at another") from exc
    names = [c["name"] for c in contexts]
    chosen = context or (current or {}).get("name")
    if chosen not in names:
        raise ClusterError(f"context '{chosen}' is not in kubeconfig {path} (it has: {', '.join(names)}): pass "
                           "--context with one of those, or set kubernetes.context in the spec")
    configuration = k8s.Configuration()
    try:
        k8s_config.load_kube_config(config_file=path, context=chosen, client_configuration=configuration,
                                    persist_config=False)
    except (k8s_config.ConfigException, OSError, ValueError) as exc:
        raise ClusterError(f"cannot use context '{chosen}' of kubeconfig {path}: {exc}") from exc
    namespace = next(c for c in contexts if c["name"] == chosen).get("context", {}).get("namespace")
    return _finish(configuration, chosen, namespace)


def _in_cluster() -> ClusterConfig:
    configuration = k8s.Configuration()
    try:
        k8s_config.load_incluster_config(client_configuration=configuration)
    except k8s_config.ConfigException as exc:
        raise ClusterError(f"cannot use this pod's service account: {exc}") from exc
    namespace = SERVICE_ACCOUNT_NAMESPACE.read_text().strip() if SERVICE_ACCOUNT_NAMESPACE.exists() else None
    return _finish(configuration, None, namespace)


def _finish(configuration: Any, context: str | None, namespace: str | None) -> ClusterConfig:
    # dlaunch retries itself (bounded, with backoff); urllib3's silent retries would hide failures.
    configuration.retries = False
    return ClusterConfig(k8s.ApiClient(configuration), context, namespace, configuration.host)


# ----- requests -----------------------------------------------------------------------------------
class KubeClient:
    """REST operations in one namespace, on plain dicts, each retried on transient failures."""

    def __init__(self, cluster: ClusterConfig, namespace: str, retry: RetryPolicy | None = None) -> None:
        self.cluster, self.namespace, self.retry = cluster, namespace, retry or RetryPolicy()
        self.core = k8s.CoreV1Api(cluster.api_client)
        self.custom = k8s.CustomObjectsApi(cluster.api_client)
        self.authz = k8s.AuthorizationV1Api(cluster.api_client)
        self.authn = k8s.AuthenticationV1Api(cluster.api_client)

    @property
    def server(self) -> str:
        return self.cluster.server

    def call(self, what: str, fn: Callable[..., Any], *, text: bool = False, **kwargs: Any) -> Any:
        """Send one request (retrying transient failures) and decode its JSON (or text) answer."""
        kwargs.setdefault("_request_timeout", REQUEST_TIMEOUT_S)
        for attempt in range(self.retry.attempts):
            try:
                data = fn(_preload_content=False, **kwargs).data
                return data.decode("utf-8", "replace") if text else json.loads(data or b"{}")
            except (ApiException, urllib3.exceptions.HTTPError) as exc:
                if not is_transient(exc) or attempt == self.retry.attempts - 1:
                    raise KubeRequestError(what, *failure_detail(exc)) from exc
                time.sleep(self.retry.delay(attempt, retry_after_of(exc)))
        raise AssertionError("unreachable: the loop returns or raises")

    def _method(self, verb: str, kind: Kind) -> Callable[..., Any]:
        """The official client's method for `verb` on `kind`, with the namespace (and group) bound."""
        if kind.group:
            custom = {"read": "get", "list": "list", "patch": "patch", "delete": "delete"}[verb]
            if not kind.namespaced:
                return functools.partial(getattr(self.custom, f"{custom}_cluster_custom_object"), group=kind.group,
                                         version=kind.version, plural=kind.plural)
            method = getattr(self.custom, f"{custom}_namespaced_custom_object")
            return functools.partial(method, group=kind.group, version=kind.version, namespace=self.namespace,
                                     plural=kind.plural)
        if kind.namespaced:
            return functools.partial(getattr(self.core, f"{verb}_namespaced_{kind.snake}"), namespace=self.namespace)
        return getattr(self.core, f"{verb}_{kind.snake}")

    def _where(self, kind: Kind, name: str) -> str:
        return f"{kind.kind}: {self.namespace}/{name}" if kind.namespaced else f"{kind.kind}: {name}"

    def read(self, kind: Kind, name: str) -> dict[str, Any] | None:
        """The object, or None if it does not exist."""
        try:
            return self.call(f"Failed to read {self._where(kind, name)}", self._method("read", kind), name=name)
        except KubeRequestError as exc:
            if exc.status == 404:
                return None
            raise

    def list(self, kind: Kind, label_selector: str | None = None,
             field_selector: str | None = None) -> tuple[list[dict[str, Any]], str]:
        """Matching objects and the list's resourceVersion (to start a watch from)."""
        where = f" in namespace {self.namespace}" if kind.namespaced else ""
        answer = self.call(f"Failed to list {kind.plural}{where}", self._method("list", kind),
                           label_selector=label_selector, field_selector=field_selector)
        return answer.get("items") or [], answer.get("metadata", {}).get("resourceVersion", "")

    def list_any_version(self, kinds: tuple[Kind, ...], label_selector: str | None = None
                         ) -> tuple[Kind, list[dict[str, Any]]] | None:
        """List the first of `kinds` (one resource in preferred versions) the cluster serves; None if none."""
        for kind in kinds:
            try:
                return kind, self.list(kind, label_selector)[0]
            except KubeRequestError as exc:
                if exc.status != 404:
                    raise
        return None

    def apply(self, obj: dict[str, Any], dry_run: bool = False) -> dict[str, Any]:
        """Server-side apply as field manager `dlaunch`, forcing ownership of dlaunch's own fields."""
        kind, name = kind_of(obj), obj["metadata"]["name"]
        return self.call(f"Failed to create {self._where(kind, name)}", self._method("patch", kind), name=name,
                         body=obj, field_manager=FIELD_MANAGER, force=True, dry_run="All" if dry_run else None,
                         _content_type=APPLY_CONTENT_TYPE)

    def delete(self, kind: Kind, name: str, dry_run: bool = False) -> bool:
        """Delete with foreground propagation (dependents first); False if it was already gone."""
        try:
            self.call(f"Failed to delete {self._where(kind, name)}", self._method("delete", kind), name=name,
                      propagation_policy=FOREGROUND, dry_run="All" if dry_run else None)
        except KubeRequestError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def access_allowed(self, verb: str, kind: Kind, subresource: str = "") -> bool:
        """A SelfSubjectAccessReview: may the current user do `verb` on `kind` in this namespace?"""
        body = {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                "spec": {"resourceAttributes": {"namespace": self.namespace, "verb": verb, "group": kind.group,
                                                "resource": kind.plural, "subresource": subresource}}}
        answer = self.call("Failed to check permissions (SelfSubjectAccessReview)",
                           self.authz.create_self_subject_access_review, body=body)
        return bool(answer.get("status", {}).get("allowed"))

    def whoami(self) -> str:
        """The user the cluster knows us as (SelfSubjectReview), else this machine's login name."""
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
        try:
            answer = self.call("Failed to ask who you are (SelfSubjectReview)", self.authn.create_self_subject_review,
                               body=body)
        except KubeRequestError as exc:
            if exc.status in (403, 404):
                return getpass.getuser()
            raise
        return answer.get("status", {}).get("userInfo", {}).get("username") or getpass.getuser()

    def api_resources(self, group: str, version: str) -> set[str] | None:
        """The resource names a group/version serves, or None if the cluster does not have it."""
        try:
            answer = self.call(f"Failed to discover {group}/{version}", self.custom.get_api_resources, group=group,
                               version=version)
        except KubeRequestError as exc:
            if exc.status == 404:
                return None
            raise
        return {resource["name"] for resource in answer.get("resources", [])}

    def watch(self, kind: Kind, resource_version: str, *, label_selector: str | None = None,
              field_selector: str | None = None, known: list[dict[str, Any]] | None = None,
              deadline: float | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
        """(event type, object) after `resource_version`, until `deadline` (or forever).

        Reconnects from the last resourceVersion seen. On 410 Gone it relists: objects that
        vanished meanwhile come as DELETED, the rest as SYNC, and watching resumes from the list.
        """
        seen = {obj["metadata"]["name"]: obj for obj in known or []}
        failures, version = 0, resource_version
        what = f"Failed to watch {kind.plural} in namespace {self.namespace}"
        while deadline is None or time.monotonic() < deadline:
            try:
                for event_type, obj in self._watch_window(kind, version, label_selector, field_selector, deadline):
                    failures, version = 0, obj["metadata"].get("resourceVersion") or version
                    self._remember(seen, event_type, obj)
                    yield event_type, obj
            except (ApiException, urllib3.exceptions.HTTPError) as exc:
                if isinstance(exc, ApiException) and exc.status == 410:
                    items, version = self.list(kind, label_selector, field_selector)
                    yield from self._resync(seen, items)
                    continue
                failures += 1
                if not is_transient(exc) or failures >= self.retry.attempts:
                    raise KubeRequestError(what, *failure_detail(exc)) from exc
                time.sleep(self.retry.delay(failures - 1, retry_after_of(exc)))

    def _watch_window(self, kind: Kind, version: str, label_selector: str | None, field_selector: str | None,
                      deadline: float | None) -> Iterator[tuple[str, dict[str, Any]]]:
        """One watch request, ended by the server after at most WATCH_WINDOW_S (or the deadline)."""
        window = WATCH_WINDOW_S if deadline is None else max(1, min(WATCH_WINDOW_S, int(deadline - time.monotonic())))
        stream = k8s_watch.Watch(return_type="object").stream(
            self._method("list", kind), resource_version=version, label_selector=label_selector,
            field_selector=field_selector, timeout_seconds=window, allow_watch_bookmarks=True,
            _request_timeout=(REQUEST_TIMEOUT_S[0], window + 30))
        for event in stream:
            if event is not None and event["type"] != "BOOKMARK":  # None: a line that was not JSON
                yield event["type"], event["raw_object"]

    @staticmethod
    def _remember(seen: dict[str, dict[str, Any]], event_type: str, obj: dict[str, Any]) -> None:
        if event_type == "DELETED":
            seen.pop(obj["metadata"]["name"], None)
        else:
            seen[obj["metadata"]["name"]] = obj

    @staticmethod
    def _resync(seen: dict[str, dict[str, Any]], items: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
        current = {item["metadata"]["name"]: item for item in items}
        for name in sorted(set(seen) - set(current)):
            yield "DELETED", seen.pop(name)
        for name, item in current.items():
            seen[name] = item
            yield "SYNC", item

    def pod_log(self, pod: str, *, follow: bool, previous: bool = False, timestamps: bool = True) -> Iterator[str]:
        """Lines of a pod's container log (its previous run's with `previous`).

        Following, the lines come until the container ends; `LogStreamDropped` if the stream breaks first.
        """
        what = f"Failed to read logs of Pod: {self.namespace}/{pod}"
        read = functools.partial(self.core.read_namespaced_pod_log, name=pod, namespace=self.namespace,
                                 previous=previous or None, timestamps=timestamps)
        if not follow:
            yield from self.call(what, read, text=True).splitlines()
            return
        try:
            yield from k8s_watch.Watch().stream(read, follow=True, _request_timeout=(REQUEST_TIMEOUT_S[0],
                                                                                     LOG_READ_TIMEOUT_S))
        except ApiException as exc:
            raise KubeRequestError(what, *failure_detail(exc)) from exc
        except urllib3.exceptions.HTTPError as exc:
            raise LogStreamDropped(f"the log stream of Pod {self.namespace}/{pod} dropped") from exc


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


# ----- the entry point for `dlaunch submit` -----------------------------------------------------
def with_namespace(spec: JobSpec, namespace: str | None) -> JobSpec:
    """The spec with `--namespace` applied: render this one, since pod 0's DNS name contains the namespace.

    (`--context` only says where to connect: it changes neither the objects nor the spec hash.)
    """
    if not namespace or namespace == spec.kubernetes.namespace:
        return spec
    return spec.model_copy(update={"kubernetes": spec.kubernetes.model_copy(update={"namespace": namespace})})


def check_rendered_namespace(spec: JobSpec, objects: list[dict[str, Any]], namespace: str | None) -> str:
    """The namespace the objects were rendered for; --namespace must agree with it."""
    rendered = {obj["metadata"].get("namespace") for obj in objects} - {None}
    target = namespace or namespace_of(spec)
    if rendered != {target}:
        raise ClusterError(f"the objects were rendered for namespace {', '.join(sorted(rendered))}, not {target}: set "
                           f"kubernetes.namespace: {target} in the spec instead of passing --namespace (pod 0's "
                           "rendezvous address contains the namespace)")
    return target


def submit_to_cluster(spec: JobSpec, objects: list[dict[str, Any]], *, context: str | None, namespace: str | None,
                      dry_run_server: bool, wait: bool, follow: bool, replace: bool) -> int:
    """Submit rendered objects; with `wait`/`follow`, stay until the end. Returns 0 succeeded, 1 failed.

    Without `wait` or `follow` it returns 0 as soon as the objects are applied (or found unchanged).
    """
    target = check_rendered_namespace(spec, objects, namespace)
    backend = KubernetesBackend.connect(context or spec.kubernetes.context, target)
    if dry_run_server:
        result = backend.dry_run(spec, objects, replace=replace)
        for line in result.messages + [f"{name} serverside-applied (server dry run)" for name in result.applied]:
            click.echo(line, err=line.startswith("note:"))
        return 0
    result = backend.submit(spec, objects, replace=replace, wait=wait, follow=follow)
    report_submitted(backend, spec, result)
    if not (wait or follow):
        return 0
    return follow_to_outcome(backend, spec, follow)


def report_submitted(backend: KubernetesBackend, spec: JobSpec, result: SubmitResult) -> None:
    """What was applied, where the checkpoints are (a resubmitted job resumes from them), what next."""
    for line in result.messages:
        click.echo(line, err=line.startswith("note:"))
    context = backend.client.cluster.context
    if result.applied:
        click.echo(f"job {spec.name} submitted to namespace {backend.namespace}"
                   f"{f' (context {context})' if context else ''}: applied {', '.join(result.applied)}")
        settings = spec.training.checkpoint
        checkpoint = job_status.checkpoint_info_for(settings.uri, spec.name, settings.endpoint_url)
        resume = "; the job resumes from it" if checkpoint.step is not None else ""
        click.echo(f"checkpoints: {checkpoint.summary()}{resume}")
    ref = f"--name {spec.name} -n {backend.namespace}"
    click.echo(f"next: dlaunch status {ref}  |  dlaunch logs {ref} --follow  |  dlaunch cancel {ref}")


def follow_logs_quietly(backend: KubernetesBackend, name: str, stop: threading.Event) -> None:
    """The job's main log for `submit --follow` (pod 0's, or Ray's driver), in a thread: a failure to
    read logs must not end the wait."""
    try:
        backend.get_job_logs(name, follow=True, write=click.echo, stop=stop)
    except SubmitError as exc:
        click.echo(f"note: stopped showing logs: {exc}", err=True)


def follow_to_outcome(backend: KubernetesBackend, spec: JobSpec, follow: bool) -> int:
    """Wait (streaming the job's main log if `follow`) until the job ends; print and return its outcome."""
    stop = threading.Event()
    follower = None
    if follow:
        follower = threading.Thread(target=follow_logs_quietly, args=(backend, spec.name, stop), name="dlaunch-logs",
                                    daemon=True)
        follower.start()
    try:
        state = backend.wait_for_job_status(spec.name, main_kind(spec.backend),
                                            on_change=lambda s: click.echo(f"job {spec.name}: {s.describe()}",
                                                                           err=True))
    except KeyboardInterrupt:
        click.echo(f"stopped following; job {spec.name} keeps running (dlaunch cancel --name {spec.name} "
                   f"-n {backend.namespace} stops it)", err=True)
        raise
    finally:
        stop.set()
    if follower is not None:
        follower.join(timeout=30)
    if state.phase == "Succeeded":
        click.echo(f"job {spec.name} succeeded")
        return 0
    ref = f"--name {spec.name} -n {backend.namespace}"
    click.echo(f"job {spec.name} failed: {state.reason or 'no reason given'}; see `dlaunch logs {ref} --all` and "
               f"`dlaunch status {ref}`", err=True)
    return 1
