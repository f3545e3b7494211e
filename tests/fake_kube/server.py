"""A fake Kubernetes API server for dlaunch's tests. It is a TEST DOUBLE, not a Kubernetes.

The official `kubernetes` Python client, unmodified, talks to it over real HTTP (a
`ThreadingHTTPServer` on 127.0.0.1, random port, HTTP/1.1 with keep-alive and chunked streams).
It keeps state in memory, so a test can create objects with dlaunch and read them back, or
play the part of the controllers by writing Pods, Events and Job status into the store.

What it models (what dlaunch uses):
- objects keyed by (group/version, resource, namespace, name) with uid, creationTimestamp,
  generation and a cluster-wide resourceVersion counter; `GET /version`; discovery of a
  group/version (`GET /apis/ray.io/v1`), with API groups that tests can uninstall;
- get, list with label selectors (`=`, `==`, `!=`, `in`, `notin`, exists, `!`) and
  equality field selectors on any dotted path; create (409 when the name is taken);
- server-side apply: `PATCH` with `application/apply-patch+yaml`, `fieldManager` required,
  `force`, `dryRun=All`, create-on-apply, no-op applies that keep the resourceVersion, and
  the Job fields the real server refuses to change (422 "field is immutable");
- watch as a chunked stream of JSON lines from a resourceVersion (ADDED for every object
  when none is given), `timeoutSeconds`, and 410 Gone (as an ERROR event) for a
  resourceVersion older than the last `compact()`;
- pod logs per container run (`restartCount`): `follow`, `previous`, `timestamps`,
  `tailLines`, and the 400 answers for a container that has not started;
- delete with `propagationPolicy` Foreground (the object is marked with deletionTimestamp,
  dependents found by ownerReferences are deleted, then the object: all within the request,
  where the real garbage collector works asynchronously), Background and Orphan; and the
  garbage collector's rule for dependents (kubernetes pkg/controller/garbagecollector,
  `attemptToDeleteItem`): a dependent goes once none of its owners exists, so an object with a
  second, living owner stays. `FakeKubeApi.delete` does the same for the simulated controllers
  (the TTL-after-finished controller deletes a finished Job with Foreground propagation);
- bearer-token authentication (401), RBAC refusals (403) and SelfSubjectAccessReview answers
  from the same deny rules, SelfSubjectReview (who am I), and a log of every authorization
  decision (`authorizations`: requests, access reviews, admission checks), a Namespace being
  authorized in its own namespace as the real RequestInfoFactory does;
- a Job's defaults and validation on create and apply, dry runs included (`jobs.py`:
  SetDefaults_Job, e.g. `backoffLimit` 2147483647 under `backoffLimitPerIndex`, else 6; and
  validateJobSpec / validatePodFailurePolicy, refused with their 422 text);
- the OwnerReferencesPermissionEnforcement admission plugin, off unless a test turns it on
  (`enforce_owner_references`: OpenShift enables it): setting a blockOwnerDeletion owner
  reference needs `update` on the owner's `finalizers` subresource (plugin/pkg/admission/gc);
- fault injection: any status (403, 404, 409, 410, 422, 429 with Retry-After, 500, ...) or a
  dropped connection for the next N requests matching a method and path; dropping every open
  watch and log stream; and a log of every request, to count what a command sends.

What it does NOT model: controllers of any kind (no Job controller, scheduler, kubelet, KubeRay
or Kueue: tests write Pods, Events and status themselves, or play the Job controller (its pod
admission, pod failure policy and per-index backoff) and KubeRay with `cluster_sim.JobSim` and
`RaySim`); defaulting, admission and schema validation of other kinds (their JSON is stored as
sent, except the checks named above); field ownership and
apply conflicts between managers (labels and annotations are merged, every other field is
replaced by the applied configuration, and 409 Conflict only comes from fault injection);
strategic-merge, JSON and merge patches (415), PUT, deletecollection, subresources other than
`log` (status, scale, exec, attach, port-forward), `limit`/`continue` pagination, bookmarks,
`resourceVersionMatch`, the log options `sinceSeconds`, `sinceTime` and `limitBytes`, the
same object seen through several API versions, finalizers other than foreground deletion,
graceful deletion periods, namespaces being terminated, TLS, certificates, exec credential
plugins, impersonation, API priority and fairness, and quotas (pod admission, quotas included, is
cluster_sim.admit_pod's, run by the simulated controllers).
"""

from __future__ import annotations

import contextlib
import copy
import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import yaml

from tests.fake_kube.api import (
    AccessRule, ApiError, DropConnection, FakeApi, Request, Response, status_body, watch_line,
)
from tests.fake_kube.store import Obj, ResourceType, key_of

JSON_TYPES = (dict, list)


@dataclass
class Fault:
    """Answer the next `times` matching requests with `status` (or drop the connection)."""

    status: int | None
    method: str | None = None
    path: re.Pattern[str] | None = None
    times: int = 1
    retry_after: int | None = None
    message: str | None = None
    watch: bool | None = None
    drop: bool = False

    def matches(self, request: Request) -> bool:
        return ((self.method is None or self.method == request.method)
                and (self.path is None or bool(self.path.search(request.path)))
                and (self.watch is None or self.watch == request.watch))

    def response(self, request: Request) -> Response:
        message = self.message or f"injected fault: {self.status}"
        if self.status == 410 and request.watch:
            return Response(200, stream=iter([watch_line("ERROR", status_body(410, message))]))
        headers = {"Retry-After": str(self.retry_after)} if self.retry_after is not None else {}
        return ApiError(self.status or 500, message, headers).response()


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]

    @property
    def watch(self) -> bool:
        return self.query.get("watch") in ("true", "1")


@dataclass
class FaultPlan:
    """Injected faults, consumed in order, and the log of every request received."""

    faults: list[Fault] = field(default_factory=list)
    requests: list[RecordedRequest] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, request: Request) -> Fault | None:
        with self.lock:
            self.requests.append(RecordedRequest(request.method, request.path, dict(request.query)))
            for fault in self.faults:
                if fault.matches(request):
                    fault.times -= 1
                    if fault.times <= 0:
                        self.faults.remove(fault)
                    return fault
            return None


class _Handler(BaseHTTPRequestHandler):
    """Turns HTTP into `Request`s for the fake and writes its `Response`s back."""

    protocol_version = "HTTP/1.1"
    server: "_Server"

    def setup(self) -> None:
        """No Nagle delay: headers and body go out as separate writes, which would wait 40 ms for an ACK."""
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        """Quiet: tests read `FakeKubeApi.requests` instead."""

    def _request(self) -> Request:
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        return Request(self.command, url.path, dict(parse_qsl(url.query)), headers, body)

    def _serve(self) -> None:
        request = self._request()
        fake = self.server.fake
        if fake.api.store.stopping:
            # A stopped server answers nothing, also on a kept-alive connection it accepted before
            # `stop()` (ThreadingHTTPServer's handler threads would otherwise go on serving them).
            self._drop()
            return
        fault = fake.plan.take(request)
        if fault is not None and fault.drop:
            self._drop()
            return
        response = fault.response(request) if fault is not None else fake.api.handle(request)
        if response.stream is not None:
            self._write_stream(response)
        else:
            self._write_body(response)

    do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _serve

    def _drop(self) -> None:
        """Close the socket without an answer: the client sees a reset / aborted connection."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _write_body(self, response: Response) -> None:
        is_json = isinstance(response.body, JSON_TYPES)
        data = (json.dumps(response.body) if is_json else str(response.body or "")).encode()
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type if not is_json else "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _write_stream(self, response: Response) -> None:
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        assert response.stream is not None
        try:
            for chunk in response.stream:
                self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
        except DropConnection:
            self._drop()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: "FakeKubeApi"


class FakeKubeApi:
    """The fake API server: start it, point a client at `url`, inspect and steer it from tests."""

    def __init__(self, namespaces: tuple[str, ...] = ("default",)) -> None:
        self.api = FakeApi()
        self.plan = FaultPlan()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        for name in namespaces:
            self.add({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})

    # ----- lifecycle ---------------------------------------------------------------------------
    def start(self) -> "FakeKubeApi":
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.fake = self
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="fake-kube",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        with self.api.store.cond:
            self.api.store.stopping = True
            self.api.store.cond.notify_all()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the fake first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def write_kubeconfig(self, path: Path, contexts: dict[str, str | None] | None = None,
                         current: str | None = None, server: str | None = None) -> Path:
        """A kubeconfig with one context per entry of `contexts` (name -> namespace), all to this fake
        (or to `server`)."""
        contexts = contexts or {"fake": None}
        config = {
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": server or self.url}}],
            "users": [{"name": "fake-user", "user": {"token": self.api.token or "none"}}],
            "contexts": [{"name": name, "context": {"cluster": "fake", "user": "fake-user",
                                                    **({"namespace": ns} if ns else {})}}
                         for name, ns in contexts.items()],
            "current-context": current or next(iter(contexts)),
        }
        path.write_text(yaml.safe_dump(config), encoding="utf-8")
        return path

    # ----- state -------------------------------------------------------------------------------
    def _type(self, api_version: str, kind: str) -> ResourceType:
        return self.api.type_of(api_version, kind)

    def add(self, obj: Obj) -> Obj:
        """Create or replace an object, as a controller would (watchers see ADDED or MODIFIED)."""
        rtype = self._type(obj["apiVersion"], obj["kind"])
        meta = obj["metadata"]
        key = key_of(rtype, meta.get("namespace") if rtype.namespaced else None, meta["name"])
        if self.api.store.get(key) is None:
            return self.api.store.create(key, copy.deepcopy(obj))
        return self.api.store.replace(key, copy.deepcopy(obj))

    def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> Obj | None:
        return self.api.store.get(key_of(self._type(api_version, kind), namespace, name))

    def objects(self, api_version: str, kind: str, namespace: str | None = None) -> list[Obj]:
        """Every stored object of a kind (in a namespace), in name order."""
        rtype = self._type(api_version, kind)
        selected = self.api.store.select(
            lambda k, _: k[:3] == (rtype.group, rtype.version, rtype.plural) and namespace in (None, k[3]))
        return [obj for _, obj in selected]

    def remove(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> None:
        """Remove an object at once, leaving its dependents (no garbage collection)."""
        self.api.store.remove(key_of(self._type(api_version, kind), namespace, name))

    def delete(self, api_version: str, kind: str, name: str, namespace: str | None = None,
               policy: str = "Background") -> None:
        """Delete an object as a controller's DELETE request would, dependents going by garbage collection."""
        self.api.delete(key_of(self._type(api_version, kind), namespace, name), policy)

    def append_log(self, namespace: str, pod: str, *lines: str, container: str | None = None) -> None:
        """Lines written by the current run of a container (the pod's only one unless named)."""
        obj = self.get("v1", "Pod", pod, namespace)
        assert obj is not None, f"no pod {namespace}/{pod}"
        name = container or obj["spec"]["containers"][0]["name"]
        statuses = obj.get("status", {}).get("containerStatuses") or []
        restarts = next((s.get("restartCount", 0) for s in statuses if s["name"] == name), 0)
        self.api.store.append_log((namespace, pod, name, restarts), list(lines))

    def wait_for(self, predicate: Any, timeout: float = 10.0) -> Any:
        """Block until `predicate()` is truthy (re-checked on every change); returns its value."""
        deadline = time.monotonic() + timeout
        with self.api.store.cond:
            while not (value := predicate()):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("the fake API server never reached the expected state")
                self.api.store.cond.wait(min(remaining, 0.2))
            return value

    # ----- steering ----------------------------------------------------------------------------
    def fail(self, status: int, *, method: str | None = None, path: str | None = None, times: int = 1,
             retry_after: int | None = None, message: str | None = None, watch: bool | None = None) -> None:
        """Answer the next `times` requests matching `method` and the `path` regex with `status`."""
        self.plan.faults.append(Fault(status, method, re.compile(path) if path else None, times, retry_after,
                                      message, watch))

    def drop(self, *, method: str | None = None, path: str | None = None, times: int = 1) -> None:
        """Close the connection of the next `times` matching requests without answering."""
        self.plan.faults.append(Fault(None, method, re.compile(path) if path else None, times, drop=True))

    def drop_streams(self) -> None:
        """Cut every open watch and follow-logs stream mid-flight (a dropped connection)."""
        with self.api.store.cond:
            self.api.store.watch_epoch += 1
            self.api.store.cond.notify_all()

    @contextlib.contextmanager
    def streams_cut(self) -> Iterator[None]:
        """Drop every open stream and hold client reconnections until the block's changes are all made.

        Watchers then miss those changes' events: they must catch up by reconnecting (or relisting).
        """
        with self.api.store.cond:
            self.drop_streams()
            yield

    def compact(self) -> None:
        """Forget history: watches from any resourceVersion before now get 410 Gone."""
        with self.api.store.cond:
            self.api.store.compacted_rv = self.api.store.rv

    def deny(self, verb: str, resource: str, group: str = "", subresource: str = "",
             namespace: str | None = None) -> None:
        """RBAC: refuse `verb` on `resource` (403 on requests, allowed=false in access reviews)."""
        self.api.denied.append(AccessRule(verb, resource, group, subresource, namespace))

    def enforce_owner_references(self) -> None:
        """Turn on the OwnerReferencesPermissionEnforcement admission plugin (see `FakeApi.admit`)."""
        self.api.owner_references_enforced = True

    @property
    def authorizations(self) -> list[dict[str, Any]]:
        """Every authorization decision so far: dicts of verb, group, resource, subresource, namespace."""
        with self.api.store.cond:
            return [dict(attrs) for attrs in self.api.authorizations]

    def uninstall(self, group_version: str) -> None:
        """Remove an API group/version (e.g. `ray.io/v1`: KubeRay not installed)."""
        self.api.types = [t for t in self.api.types if t.api_version != group_version]

    def expire_credentials(self) -> None:
        """Make the server reject the token every kubeconfig written so far carries (401)."""
        self.api.token = "a-token-nobody-has"

    # ----- counting ----------------------------------------------------------------------------
    @property
    def requests(self) -> list[RecordedRequest]:
        with self.plan.lock:
            return list(self.plan.requests)

    def reset_requests(self) -> None:
        with self.plan.lock:
            self.plan.requests.clear()

    def count(self, method: str | None = None, path: str | None = None) -> int:
        """How many requests matched `method` and the `path` regex."""
        pattern = re.compile(path) if path else None
        return sum(1 for r in self.requests
                   if (method is None or r.method == method) and (pattern is None or pattern.search(r.path)))

    def __enter__(self) -> "FakeKubeApi":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
