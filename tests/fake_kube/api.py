"""Request handling of the fake API server: routing, verbs, RBAC, server-side apply, watch, logs.

Everything here is transport-free: `FakeApi.handle(Request) -> Response`. `server.py` puts it
behind a real HTTP server; see its docstring for what is and is not modelled.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Callable

import yaml

from tests.fake_kube.jobs import default_job, invalid_message, job_spec_errors
from tests.fake_kube.selectors import SelectorError, field_selector, label_selector
from tests.fake_kube.store import (
    BUILTIN_TYPES, OPTIONAL_TYPES, Key, LogLine, Obj, ResourceType, Store, key_of, now_rfc3339,
)

APPLY_PATCH = "application/apply-patch+yaml"
REASONS = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 405: "MethodNotAllowed",
           409: "AlreadyExists", 410: "Expired", 415: "UnsupportedMediaType", 422: "Invalid",
           429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable"}
VERBS = {"POST": "create", "PATCH": "patch", "PUT": "update", "DELETE": "delete"}
# Fields of a Job the real API server refuses to change after creation.
JOB_IMMUTABLE_FIELDS = ("template", "completionMode", "podFailurePolicy", "selector")
DEFAULT_WATCH_TIMEOUT_S = 1800.0


class DropConnection(Exception):
    """Raised to make the server close the connection without (finishing) a response."""


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes = b""

    @property
    def watch(self) -> bool:
        return self.query.get("watch") in ("true", "1")

    def json(self) -> Any:
        text = self.body.decode() or "{}"
        if self.headers.get("content-type", "").startswith(APPLY_PATCH):
            return yaml.safe_load(text)
        return json.loads(text)


@dataclass
class Response:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    stream: Iterator[bytes] | None = None
    content_type: str = "application/json"


@dataclass(frozen=True)
class Route:
    """What a URL names: a resource type, and maybe a namespace, an object name and a subresource."""

    rtype: ResourceType
    namespace: str | None = None
    name: str | None = None
    subresource: str | None = None


class ApiError(Exception):
    """An error answer: a `Status` object with the given HTTP code."""

    def __init__(self, code: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.headers = code, message, headers or {}

    def response(self) -> Response:
        return Response(self.code, status_body(self.code, self.message), self.headers)


def status_body(code: int, message: str) -> Obj:
    """A `v1 Status` failure, as the API server writes it."""
    reason = REASONS.get(code, "Unknown")
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "code": code}


def resource_label(rtype: ResourceType) -> str:
    """`jobs.batch`, `pods` (how RBAC messages name a resource)."""
    return f"{rtype.plural}.{rtype.group}" if rtype.group else rtype.plural


@dataclass
class AccessRule:
    verb: str
    resource: str
    group: str = ""
    subresource: str = ""
    namespace: str | None = None

    def matches(self, attrs: dict[str, Any]) -> bool:
        return (attrs.get("verb") == self.verb and attrs.get("resource") == self.resource
                and attrs.get("group", "") == self.group and attrs.get("subresource", "") == self.subresource
                and self.namespace in (None, attrs.get("namespace")))


@dataclass
class FakeApi:
    """The API's behaviour over a `Store`: the knobs (`token`, `denied`, `types`) are set by tests."""

    store: Store = field(default_factory=Store)
    token: str | None = "dlaunch-test-token"
    username: str = "alice@example.com"
    denied: list[AccessRule] = field(default_factory=list)
    types: list[ResourceType] = field(default_factory=lambda: [*BUILTIN_TYPES, *OPTIONAL_TYPES])
    git_version: str = "v1.31.0-fake"
    # Every authorization decision taken for the user (requests, access reviews, admission checks).
    authorizations: list[dict[str, Any]] = field(default_factory=list)
    # The OwnerReferencesPermissionEnforcement admission plugin (on in OpenShift, off by default elsewhere).
    owner_references_enforced: bool = False

    # ----- routing -------------------------------------------------------------------------
    def find_type(self, group: str, version: str, plural: str) -> ResourceType | None:
        return next((t for t in self.types if (t.group, t.version, t.plural) == (group, version, plural)), None)

    def type_of(self, api_version: str, kind: str) -> ResourceType:
        """The resource type of an object (raises if the fake has no such API installed)."""
        found = next((t for t in self.types if (t.api_version, t.kind) == (api_version, kind)), None)
        if found is None:
            raise ApiError(404, f"the server could not find the requested resource ({kind} {api_version})")
        return found

    def route(self, path: str) -> Route | str:
        """Parse a URL path into a `Route`, or one of the special endpoints ("version", "group:<g>/<v>")."""
        parts = [p for p in path.split("/") if p]
        if parts == ["version"]:
            return "version"
        if parts[:1] == ["api"] and len(parts) >= 2:
            group, version, rest = "", parts[1], parts[2:]
        elif parts[:1] == ["apis"] and len(parts) >= 3:
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise ApiError(404, "the server could not find the requested resource")
        if not rest:
            if not any((t.group, t.version) == (group, version) for t in self.types):
                raise ApiError(404, "the server could not find the requested resource")
            return f"group:{group}/{version}" if group else f"group:{version}"
        return self._route_rest(group, version, rest)

    def _route_rest(self, group: str, version: str, rest: list[str]) -> Route:
        namespace = None
        if rest[0] == "namespaces" and len(rest) >= 3:
            namespace, rest = rest[1], rest[2:]
        rtype = self.find_type(group, version, rest[0])
        if rtype is None or len(rest) > 3:
            raise ApiError(404, "the server could not find the requested resource")
        name = rest[1] if len(rest) >= 2 else None
        subresource = rest[2] if len(rest) == 3 else None
        return Route(rtype, namespace, name, subresource)

    # ----- authentication and authorization --------------------------------------------------
    def authenticate(self, request: Request) -> None:
        if self.token is not None and request.headers.get("authorization") != f"Bearer {self.token}":
            raise ApiError(401, "Unauthorized")

    def allowed(self, attrs: dict[str, Any]) -> bool:
        """Whether the user may do what `attrs` (verb, group, resource, subresource, namespace) says; logged."""
        with self.store.cond:
            self.authorizations.append(dict(attrs))
        return not any(rule.matches(attrs) for rule in self.denied)

    def authorize(self, request: Request, route: Route) -> None:
        """403 for a verb a test has denied, worded like the API server's RBAC refusals. A Namespace is
        authorized in its own namespace (apiserver's RequestInfoFactory reads `/namespaces/NAME` so), which
        is how a namespaced Role can grant `get` on it."""
        if route.rtype.plural in ("selfsubjectaccessreviews", "selfsubjectreviews"):
            return
        verb = VERBS.get(request.method) or ("get" if route.name else "watch" if request.watch else "list")
        namespace = route.name if route.rtype.plural == "namespaces" and route.name else route.namespace
        attrs = {"verb": verb, "resource": route.rtype.plural, "group": route.rtype.group,
                 "subresource": route.subresource or "", "namespace": namespace}
        if self.allowed(attrs):
            return
        sub = f"/{route.subresource}" if route.subresource else ""
        target = f'{resource_label(route.rtype)}{sub} "{route.name}"' if route.name else resource_label(route.rtype)
        where = f' in the namespace "{route.namespace}"' if route.namespace else " at the cluster scope"
        raise ApiError(403, f'{target} is forbidden: User "{self.username}" cannot {verb} resource '
                            f'"{route.rtype.plural}{sub}" in API group "{route.rtype.group}"{where}')

    # ----- dispatch --------------------------------------------------------------------------
    def handle(self, request: Request) -> Response:
        """Answer one request (faults are injected by the server before this is called)."""
        try:
            self.authenticate(request)
            route = self.route(request.path)
            if route == "version":
                return Response(200, {"major": "1", "minor": "31", "gitVersion": self.git_version})
            if isinstance(route, str):
                return Response(200, self.group_resources(route.removeprefix("group:")))
            self.authorize(request, route)
            return self.dispatch(request, route)
        except ApiError as exc:
            return exc.response()
        except SelectorError as exc:
            return ApiError(400, str(exc)).response()

    def dispatch(self, request: Request, route: Route) -> Response:
        handlers: dict[tuple[str, bool], Callable[[Request, Route], Response]] = {
            ("GET", True): self.get_object, ("GET", False): self.list_or_watch,
            ("POST", False): self.create_object, ("PATCH", True): self.patch_object,
            ("DELETE", True): self.delete_object,
        }
        if route.subresource == "log" and request.method == "GET":
            return self.pod_log(request, route)
        if route.subresource is not None:
            raise ApiError(404, "the server could not find the requested resource")
        handler = handlers.get((request.method, route.name is not None))
        if handler is None:
            raise ApiError(405, f"{request.method} is not supported here by the fake API server")
        return handler(request, route)

    def group_resources(self, group_version: str) -> Obj:
        """An `APIResourceList` (discovery of one group/version)."""
        resources = [{"name": t.plural, "singularName": t.kind.lower(), "kind": t.kind, "namespaced": t.namespaced,
                      "verbs": ["create", "delete", "get", "list", "patch", "watch"]}
                     for t in self.types if t.api_version == group_version]
        return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources}

    # ----- reads -----------------------------------------------------------------------------
    def get_object(self, request: Request, route: Route) -> Response:
        obj = self.store.get(key_of(route.rtype, route.namespace, route.name or ""))
        if obj is None:
            raise self.not_found(route)
        return Response(200, obj)

    def not_found(self, route: Route) -> ApiError:
        return ApiError(404, f'{resource_label(route.rtype)} "{route.name}" not found')

    def matcher(self, route: Route, query: dict[str, str]) -> Callable[[Key, Obj], bool]:
        """Which stored objects a list or watch of `route` with these selectors covers."""
        rtype, labels, fields = route.rtype, label_selector(query.get("labelSelector")), \
            field_selector(query.get("fieldSelector"))

        def match(key: Key, obj: Obj) -> bool:
            same_type = key[:3] == (rtype.group, rtype.version, rtype.plural)
            in_namespace = route.namespace is None or key[3] == route.namespace
            return same_type and in_namespace and labels(obj) and fields(obj)
        return match

    def list_or_watch(self, request: Request, route: Route) -> Response:
        if request.watch:
            return self.watch(request, route)
        match = self.matcher(route, request.query)
        with self.store.cond:
            items = [obj for _, obj in self.store.select(match)]
            rv = self.store.rv
        return Response(200, {"kind": f"{route.rtype.kind}List", "apiVersion": route.rtype.api_version,
                              "metadata": {"resourceVersion": str(rv)}, "items": items})

    # ----- watch -----------------------------------------------------------------------------
    def watch(self, request: Request, route: Route) -> Response:
        """A chunked stream of JSON watch events, starting after `resourceVersion`."""
        match = self.matcher(route, request.query)
        since = request.query.get("resourceVersion") or "0"
        timeout = float(request.query.get("timeoutSeconds") or DEFAULT_WATCH_TIMEOUT_S)
        with self.store.cond:
            if since != "0" and int(since) < self.store.compacted_rv:
                message = f"too old resource version: {since} ({self.store.compacted_rv})"
                return Response(200, stream=iter([watch_line("ERROR", status_body(410, message))]))
            initial = [watch_line("ADDED", obj) for _, obj in self.store.select(match)] if since == "0" else []
            start = len(self.store.events) if since == "0" else self.store.first_event_after(int(since))
            epoch = self.store.watch_epoch
        return Response(200, stream=self._watch_stream(initial, start, epoch, match, time.monotonic() + timeout))

    def _watch_stream(self, initial: list[bytes], index: int, epoch: int, match: Callable[[Key, Obj], bool],
                      deadline: float) -> Iterator[bytes]:
        yield from initial
        while True:
            with self.store.cond:
                while (index >= len(self.store.events) and not self.store.stopping
                       and self.store.watch_epoch == epoch and time.monotonic() < deadline):
                    self.store.cond.wait(max(0.0, min(1.0, deadline - time.monotonic())))
                if self.store.watch_epoch != epoch:
                    raise DropConnection()
                if self.store.stopping or index >= len(self.store.events):
                    return
                batch = self.store.events[index:]
                index = len(self.store.events)
            for event in batch:
                if match(event.key, event.obj):
                    yield watch_line(event.type, event.obj)

    # ----- writes ----------------------------------------------------------------------------
    def require_namespace(self, route: Route) -> None:
        if route.rtype.namespaced and route.namespace is not None:
            ns_type = self.find_type("", "v1", "namespaces")
            assert ns_type is not None
            if self.store.get(key_of(ns_type, None, route.namespace)) is None:
                raise ApiError(404, f'namespaces "{route.namespace}" not found')

    def create_object(self, request: Request, route: Route) -> Response:
        body = request.json()
        if route.rtype.plural == "selfsubjectaccessreviews":
            return Response(201, self.access_review(body))
        if route.rtype.plural == "selfsubjectreviews":
            return Response(201, {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview",
                                  "status": {"userInfo": {"username": self.username,
                                                          "groups": ["system:authenticated"]}}})
        self.require_namespace(route)
        name = body.get("metadata", {}).get("name")
        if not name:
            raise ApiError(422, f"{route.rtype.kind} is invalid: metadata.name: Required value: name is required")
        key = key_of(route.rtype, route.namespace, name)
        if self.store.get(key) is not None:
            raise ApiError(409, f'{resource_label(route.rtype)} "{name}" already exists')
        body.setdefault("metadata", {})["namespace"] = route.namespace
        self.admit(route, body, None)
        if request.query.get("dryRun") == "All":
            return Response(201, body)
        return Response(201, self.store.create(key, body))

    def admit(self, route: Route, obj: Obj, old: Obj | None) -> None:
        """What the API server does to an object before storing it, as far as the fake models it: the
        OwnerReferencesPermissionEnforcement plugin (when on), then a Job's defaults and validation."""
        if self.owner_references_enforced:
            self.check_owner_references(route, obj, old)
        if (route.rtype.group, route.rtype.kind) == ("batch", "Job"):
            default_job(obj)
            errors = job_spec_errors(obj.get("spec") or {})
            if errors:
                raise ApiError(422, invalid_message("Job.batch", obj["metadata"].get("name", ""), errors))

    def check_owner_references(self, route: Route, obj: Obj, old: Obj | None) -> None:
        """kubernetes plugin/pkg/admission/gc/gc_admission.go `Admit`: changing ownerReferences needs
        `delete` on the object; a new blockOwnerDeletion reference needs `update` on the owner's
        `finalizers` subresource. Refusals are 403s in the plugin's words."""
        refs = obj.get("metadata", {}).get("ownerReferences") or []
        old_refs = {ref.get("uid"): ref for ref in ((old or {}).get("metadata", {}).get("ownerReferences") or [])}
        if refs == list(old_refs.values()):
            return
        target = f'{resource_label(route.rtype)} "{obj["metadata"].get("name")}" is forbidden'
        attrs = {"verb": "delete", "resource": route.rtype.plural, "group": route.rtype.group, "subresource": "",
                 "namespace": route.namespace}
        if not self.allowed(attrs):
            raise ApiError(403, f"{target}: cannot set an ownerRef on a resource you can't delete: , <nil>")
        for ref in refs:
            if not ref.get("blockOwnerDeletion") or (old_refs.get(ref.get("uid")) or {}).get("blockOwnerDeletion"):
                continue
            owner = self.type_of(ref["apiVersion"], ref["kind"])
            attrs = {"verb": "update", "resource": owner.plural, "group": owner.group, "subresource": "finalizers",
                     "namespace": route.namespace}
            if not self.allowed(attrs):
                raise ApiError(403, f"{target}: cannot set blockOwnerDeletion if an ownerReference refers to a "
                                    "resource you can't set finalizers on: , <nil>")

    def access_review(self, body: Obj) -> Obj:
        """Answer a SelfSubjectAccessReview from the denied rules."""
        attrs = body.get("spec", {}).get("resourceAttributes", {})
        allowed = self.allowed(attrs)
        body["status"] = {"allowed": allowed}
        if not allowed:
            body["status"]["reason"] = "denied by the fake API server's test rules"
        return body

    def patch_object(self, request: Request, route: Route) -> Response:
        """Server-side apply (`application/apply-patch+yaml`); other patch types are refused."""
        content_type = request.headers.get("content-type", "")
        if not content_type.startswith(APPLY_PATCH):
            raise ApiError(415, f"the fake API server only supports server-side apply, got {content_type!r}")
        manager = request.query.get("fieldManager")
        if not manager:
            raise ApiError(400, "PATCH requires fieldManager to be set for apply requests")
        applied = request.json()
        self.check_applied(applied, route)
        self.require_namespace(route)
        key = key_of(route.rtype, route.namespace, route.name or "")
        existing = self.store.get(key)
        dry_run = request.query.get("dryRun") == "All"
        applied.setdefault("metadata", {})["managedFields"] = [
            {"manager": manager, "operation": "Apply", "apiVersion": route.rtype.api_version, "time": now_rfc3339()}]
        if existing is None:
            self.admit(route, applied, None)
            return Response(201, applied if dry_run else self.store.create(key, applied))
        merged = merge_applied(existing, applied)
        self.admit(route, merged, existing)
        if route.rtype.kind == "Job":
            check_job_immutable(existing, merged, route.name or "")
        if dry_run or same_object(existing, merged):
            return Response(200, merged if dry_run else existing)
        return Response(200, self.store.replace(key, merged))

    def check_applied(self, applied: Any, route: Route) -> None:
        if not isinstance(applied, dict):
            raise ApiError(400, "the apply patch must be an object")
        meta = applied.get("metadata") or {}
        if (applied.get("apiVersion"), applied.get("kind")) != (route.rtype.api_version, route.rtype.kind):
            raise ApiError(400, f"apiVersion/kind {applied.get('apiVersion')}/{applied.get('kind')} does not "
                                f"match the URL ({route.rtype.api_version}/{route.rtype.kind})")
        if meta.get("name") != route.name:
            raise ApiError(400, f"the name of the object ({meta.get('name')}) does not match the name on the URL "
                                f"({route.name})")
        if route.rtype.namespaced and meta.get("namespace", route.namespace) != route.namespace:
            raise ApiError(400, "the namespace of the provided object does not match the namespace sent on "
                                "the request")
        meta["namespace"] = route.namespace

    def delete_object(self, request: Request, route: Route) -> Response:
        """Delete with `propagationPolicy` Foreground (dependents first), Background or Orphan."""
        key = key_of(route.rtype, route.namespace, route.name or "")
        obj = self.store.get(key)
        if obj is None:
            raise self.not_found(route)
        if request.query.get("dryRun") == "All":
            return Response(200, obj)
        return Response(200, self.delete(key, request.query.get("propagationPolicy") or "Background"))

    def delete(self, key: Key, policy: str) -> Obj:
        """Delete a stored object as the API server and the garbage collector do (within the call, where
        the real collector works asynchronously). Foreground: marked with deletionTimestamp and the
        foregroundDeletion finalizer, dependents deleted, then the object; Background: the object, then
        its dependents; Orphan: the object alone. Returns the object as the DELETE answers it."""
        obj = self.store.get(key)
        assert obj is not None
        if policy == "Foreground":
            obj["metadata"]["deletionTimestamp"] = now_rfc3339()
            obj["metadata"]["finalizers"] = ["foregroundDeletion"]
            marked = self.store.replace(key, obj)
            self.delete_dependents(obj["metadata"]["uid"])
            self.store.remove(key)
            return marked
        self.store.remove(key)
        if policy == "Background":
            self.delete_dependents(obj["metadata"]["uid"])
        return obj

    def delete_dependents(self, owner_uid: str) -> None:
        """What the garbage collector does once an owner is gone (kubernetes pkg/controller/garbagecollector,
        `attemptToDeleteItem`): a dependent of `owner_uid` whose owners are all gone (no stored object
        has the uid of any of its ownerReferences) is deleted, recursively; one with another owner that
        still exists only loses the dangling reference (kept here, as it harms nothing)."""
        def owned(_: Key, obj: Obj) -> bool:
            return any(ref.get("uid") == owner_uid for ref in obj["metadata"].get("ownerReferences", []))
        for key, obj in self.store.select(owned):
            others = [ref.get("uid", "") for ref in obj["metadata"]["ownerReferences"] if ref.get("uid") != owner_uid]
            if not any(self.uid_exists(uid) for uid in others):
                self.store.remove(key)
                self.delete_dependents(obj["metadata"]["uid"])

    def uid_exists(self, uid: str) -> bool:
        return bool(self.store.select(lambda _, obj: obj["metadata"].get("uid") == uid))

    # ----- pod logs --------------------------------------------------------------------------
    def pod_log(self, request: Request, route: Route) -> Response:
        """Container logs: whole, `tailLines`, `previous`, `timestamps`, or `follow` as a stream."""
        pod = self.store.get(key_of(route.rtype, route.namespace, route.name or ""))
        if pod is None:
            raise self.not_found(route)
        container = pick_container(pod, request.query.get("container"))
        instance = log_instance(pod, container, request.query.get("previous") == "true")
        log_key = (route.namespace or "", pod["metadata"]["name"], container, instance)
        lines = self.store.log_lines(log_key)
        tail = request.query.get("tailLines")
        if tail is not None:
            lines = lines[-int(tail):] if int(tail) else []
        stamps = request.query.get("timestamps") == "true"
        if request.query.get("follow") != "true":
            return Response(200, "".join(log_text(line, stamps) for line in lines), content_type="text/plain")
        start = len(self.store.log_lines(log_key))
        stream = self._follow_log(route, log_key, lines, start, stamps)
        return Response(200, stream=stream, content_type="text/plain")

    def _follow_log(self, route: Route, log_key: tuple[str, str, str, int], first: list[LogLine], index: int,
                    stamps: bool) -> Iterator[bytes]:
        """Stream lines until the container instance ends or the pod goes away."""
        yield from (log_text(line, stamps).encode() for line in first)
        pod_key = key_of(route.rtype, route.namespace, log_key[1])
        epoch = self.store.watch_epoch
        while True:
            with self.store.cond:
                fresh = self.store.log_lines(log_key, index)
                ended = self.store.stopping or instance_ended(self.store.objects.get(pod_key), log_key)
                if not fresh and not ended:
                    self.store.cond.wait(1.0)
                    if self.store.watch_epoch != epoch:
                        raise DropConnection()
                    continue
            index += len(fresh)
            yield from (log_text(line, stamps).encode() for line in fresh)
            if ended:
                return


def watch_line(kind: str, obj: Obj) -> bytes:
    return (json.dumps({"type": kind, "object": obj}) + "\n").encode()


def log_text(line: LogLine, stamps: bool) -> str:
    return f"{line.timestamp} {line.text}\n" if stamps else f"{line.text}\n"


def container_status(pod: Obj, container: str) -> Obj:
    statuses = pod.get("status", {}).get("containerStatuses") or []
    return next((s for s in statuses if s.get("name") == container), {})


def pick_container(pod: Obj, requested: str | None) -> str:
    names = [c["name"] for c in pod.get("spec", {}).get("containers", [])]
    if requested:
        if requested not in names:
            raise ApiError(400, f"container {requested} is not valid for pod {pod['metadata']['name']}")
        return requested
    if len(names) != 1:
        raise ApiError(400, f"a container name must be specified for pod {pod['metadata']['name']}, "
                            f"choose one of: {names}")
    return names[0]


def log_instance(pod: Obj, container: str, previous: bool) -> int:
    """Which run of the container (its restart count) a log request reads."""
    status = container_status(pod, container)
    name = pod["metadata"]["name"]
    restarts = int(status.get("restartCount", 0))
    if previous:
        if restarts == 0:
            raise ApiError(400, f'previous terminated container "{container}" in pod "{name}" not found')
        return restarts - 1
    waiting = status.get("state", {}).get("waiting")
    if not status or waiting is not None:
        reason = (waiting or {}).get("reason", "ContainerCreating")
        raise ApiError(400, f'container "{container}" in pod "{name}" is waiting to start: {reason}')
    return restarts


def instance_ended(pod: Obj | None, log_key: tuple[str, str, str, int]) -> bool:
    """The container run being followed has terminated, restarted, or its pod is gone."""
    if pod is None:
        return True
    status = container_status(pod, log_key[2])
    return int(status.get("restartCount", 0)) != log_key[3] or "terminated" in status.get("state", {})


def merge_applied(existing: Obj, applied: Obj) -> Obj:
    """The object after an apply by dlaunch's one field manager (see `server.py` for the limits)."""
    merged = copy.deepcopy(applied)
    meta, old_meta = merged["metadata"], existing["metadata"]
    for name in ("uid", "creationTimestamp", "generation", "resourceVersion", "ownerReferences", "finalizers",
                 "deletionTimestamp"):
        if name in old_meta and name not in meta:
            meta[name] = old_meta[name]
    for name in ("labels", "annotations"):
        combined = {**(old_meta.get(name) or {}), **(meta.get(name) or {})}
        if combined:
            meta[name] = combined
    if "status" in existing:
        merged["status"] = existing["status"]
    return merged


def same_object(a: Obj, b: Obj) -> bool:
    """Equal apart from the bookkeeping an apply rewrites (resourceVersion, managedFields)."""
    def strip(obj: Obj) -> Obj:
        copied = copy.deepcopy(obj)
        for name in ("resourceVersion", "managedFields"):
            copied["metadata"].pop(name, None)
        return copied
    return strip(a) == strip(b)


def check_job_immutable(existing: Obj, merged: Obj, name: str) -> None:
    for name_of_field in JOB_IMMUTABLE_FIELDS:
        if existing.get("spec", {}).get(name_of_field) != merged.get("spec", {}).get(name_of_field):
            raise ApiError(422, f'Job.batch "{name}" is invalid: spec.{name_of_field}: Invalid value: '
                                f'(the new value): field is immutable')
