"""The HTTP client for one namespace of one cluster, through the official `kubernetes` package.

`KubeClient` sends every request dlaunch makes: plain dicts in and out, bounded retries with
backoff on 429, 5xx and dropped connections (a server's Retry-After wins), watches that
reconnect from the last resourceVersion and relist on 410 Gone, and server-side apply with
field manager `dlaunch`. Client errors become `KubeRequestError`s that name the object and the
next step. Also the resource kinds dlaunch touches (`Kind`) and how a failure is explained.

The `kubernetes` package is imported by this module, `kubeconfig` and `backend` only, and only
when a command needs a cluster: the CLI never loads them at start-up.
"""

from __future__ import annotations

import functools
import getpass
import json
import random
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import urllib3
from kubernetes import client as k8s
from kubernetes import watch as k8s_watch
from kubernetes.client.exceptions import ApiException

from launcher.errors import SubmitError
from launcher.targets.kubernetes.pods import JOB_LABEL

if TYPE_CHECKING:
    from launcher.targets.kubernetes.kubeconfig import ClusterConfig

FIELD_MANAGER = "dlaunch"
APPLY_CONTENT_TYPE = "application/apply-patch+yaml"
FOREGROUND = "Foreground"
TRANSIENT_STATUS = frozenset({429, 500, 502, 503, 504})
REQUEST_TIMEOUT_S = (10, 60)
WATCH_WINDOW_S = 240
LOG_READ_TIMEOUT_S = 600
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

