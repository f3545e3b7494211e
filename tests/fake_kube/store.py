"""The fake API server's state: objects, a resourceVersion counter, the watch event log and pod logs.

One lock (a `threading.Condition`) guards everything; watch and log streams wait on it and are
woken by every change. Objects are stored as plain dicts keyed by (group, version, plural,
namespace, name) and handed out as deep copies, so callers can never alias the stored state.
"""

from __future__ import annotations

import bisect
import copy
import datetime as dt
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

Obj = dict[str, Any]


@dataclass(frozen=True)
class ResourceType:
    """One REST resource the fake serves (`jobs` in `batch/v1`)."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def group_version(self) -> str:
        return self.api_version


BUILTIN_TYPES = (
    ResourceType("", "v1", "namespaces", "Namespace", namespaced=False),
    ResourceType("", "v1", "nodes", "Node", namespaced=False),
    ResourceType("", "v1", "pods", "Pod"),
    ResourceType("", "v1", "configmaps", "ConfigMap"),
    ResourceType("", "v1", "services", "Service"),
    ResourceType("", "v1", "secrets", "Secret"),
    ResourceType("", "v1", "events", "Event"),
    ResourceType("", "v1", "serviceaccounts", "ServiceAccount"),
    ResourceType("", "v1", "resourcequotas", "ResourceQuota"),
    ResourceType("scheduling.k8s.io", "v1", "priorityclasses", "PriorityClass", namespaced=False),
    ResourceType("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy"),
    ResourceType("batch", "v1", "jobs", "Job"),
    ResourceType("authorization.k8s.io", "v1", "selfsubjectaccessreviews", "SelfSubjectAccessReview",
                 namespaced=False),
    ResourceType("authentication.k8s.io", "v1", "selfsubjectreviews", "SelfSubjectReview", namespaced=False),
)
# API groups a cluster may or may not have: the fake starts with all installed. Kueue serves
# v1beta2 and the deprecated v1beta1 (older releases only v1beta1: uninstall v1beta2); the fake
# keeps an object in the version it was written in, without conversion between them.
OPTIONAL_TYPES = (
    ResourceType("ray.io", "v1", "rayjobs", "RayJob"),
    ResourceType("ray.io", "v1", "rayclusters", "RayCluster"),
    *(ResourceType("kueue.x-k8s.io", version, plural, kind) for version in ("v1beta2", "v1beta1")
      for plural, kind in (("localqueues", "LocalQueue"), ("workloads", "Workload"))),
)

Key = tuple[str, str, str, str, str]


def now_rfc3339() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def key_of(rtype: ResourceType, namespace: str | None, name: str) -> Key:
    return (rtype.group, rtype.version, rtype.plural, namespace or "", name)


@dataclass
class WatchEvent:
    rv: int
    type: str
    key: Key
    obj: Obj


@dataclass
class LogLine:
    timestamp: str
    text: str


@dataclass
class Store:
    """Objects, their history for watches, and container logs."""

    cond: threading.Condition = field(default_factory=threading.Condition)
    rv: int = 0
    objects: dict[Key, Obj] = field(default_factory=dict)
    events: list[WatchEvent] = field(default_factory=list)
    compacted_rv: int = 0
    logs: dict[tuple[str, str, str, int], list[LogLine]] = field(default_factory=dict)
    log_clock: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc))
    watch_epoch: int = 0
    stopping: bool = False

    def _record(self, kind: str, key: Key, obj: Obj) -> None:
        """Append a watch event for `obj` (which already carries its new resourceVersion)."""
        self.events.append(WatchEvent(self.rv, kind, key, copy.deepcopy(obj)))
        self.cond.notify_all()

    def _bump(self, obj: Obj) -> None:
        self.rv += 1
        obj.setdefault("metadata", {})["resourceVersion"] = str(self.rv)

    def get(self, key: Key) -> Obj | None:
        with self.cond:
            found = self.objects.get(key)
            return copy.deepcopy(found) if found is not None else None

    def create(self, key: Key, obj: Obj) -> Obj:
        """Store a new object, filling in what the API server sets (uid, timestamps, generation)."""
        with self.cond:
            meta = obj.setdefault("metadata", {})
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("creationTimestamp", now_rfc3339())
            meta["generation"] = 1
            self._bump(obj)
            self.objects[key] = copy.deepcopy(obj)
            self._record("ADDED", key, obj)
            return copy.deepcopy(obj)

    def replace(self, key: Key, obj: Obj) -> Obj:
        """Store a new version of an existing object (a MODIFIED event)."""
        with self.cond:
            old = self.objects[key]
            meta = obj.setdefault("metadata", {})
            for server_field in ("uid", "creationTimestamp"):
                meta[server_field] = old["metadata"][server_field]
            generation = old["metadata"].get("generation", 1)
            meta["generation"] = generation + (old.get("spec") != obj.get("spec"))
            self._bump(obj)
            self.objects[key] = copy.deepcopy(obj)
            self._record("MODIFIED", key, obj)
            return copy.deepcopy(obj)

    def remove(self, key: Key) -> Obj | None:
        """Delete an object now (a DELETED event); dependents are the caller's business."""
        with self.cond:
            obj = self.objects.pop(key, None)
            if obj is None:
                return None
            self._bump(obj)
            self._record("DELETED", key, obj)
            return copy.deepcopy(obj)

    def select(self, match: Callable[[Key, Obj], bool]) -> list[tuple[Key, Obj]]:
        """Copies of every stored object for which `match(key, obj)` holds, in key order."""
        with self.cond:
            return [(k, copy.deepcopy(o)) for k, o in sorted(self.objects.items()) if match(k, o)]

    def first_event_after(self, rv: int) -> int:
        """Index in the event log of the first event newer than resourceVersion `rv`."""
        with self.cond:
            return bisect.bisect_right(self.events, rv, key=lambda event: event.rv)

    def events_from(self, index: int) -> list[WatchEvent]:
        with self.cond:
            return self.events[index:]

    def next_log_timestamp(self) -> str:
        """Strictly increasing RFC 3339 timestamps with nanosecond digits, like the kubelet's."""
        with self.cond:
            now = dt.datetime.now(dt.timezone.utc)
            self.log_clock = max(now, self.log_clock + dt.timedelta(microseconds=1))
            return self.log_clock.strftime("%Y-%m-%dT%H:%M:%S.%f000Z")

    def append_log(self, log_key: tuple[str, str, str, int], lines: list[str]) -> None:
        with self.cond:
            entries = self.logs.setdefault(log_key, [])
            entries.extend(LogLine(self.next_log_timestamp(), line) for line in lines)
            self.cond.notify_all()

    def log_lines(self, log_key: tuple[str, str, str, int], start: int = 0) -> list[LogLine]:
        with self.cond:
            return list(self.logs.get(log_key, [])[start:])
