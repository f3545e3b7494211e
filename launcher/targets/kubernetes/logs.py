"""`dlaunch logs`: one source's log, or several interleaved with prefixes, optionally followed.

A source is a pod index (DeepSpeed nodes; Ray head 0, workers 1..) or, for Ray, the driver:
the pods of KubeRay's submitter Job, which run `ray job submit` and then `ray job logs
--follow`, so the training output is there. A source's log outlives its pods: when the
container restarts or a controller replaces a failed pod, a follower moves on to the new run;
when a stream drops, it reconnects and skips the lines it has already shown (it reads logs with
timestamps and remembers the last one).
"""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from launcher.errors import SubmitError
from launcher.targets.kubernetes import client as kube
from launcher.targets.kubernetes import status as job_status
from launcher.targets.kubernetes.pods import JOB_LABEL

# How often a follower looks for the next run of a source while none is streaming.
POLL_S = 1.0

Obj = dict[str, Any]
Write = Callable[[str], None]
# A pod index, or `job_status.DRIVER`.
Source = int | str


class LogsNotReadyError(SubmitError):
    """The source has no container that has started yet."""


def label(source: Source) -> str:
    """How messages and prefixes name a source: `pod 1`, `driver`."""
    return f"pod {source}" if isinstance(source, int) else str(source)


@dataclass(frozen=True)
class Run:
    """One run of a source's container: a pod, and how many times it had restarted."""

    pod: str
    uid: str
    restarts: int
    running: bool

    @property
    def key(self) -> tuple[str, int]:
        return self.uid, self.restarts


def _started(pod: Obj) -> bool:
    return any({"running", "terminated"} & set((s.get("state") or {}).keys())
               for s in job_status.container_statuses(pod))


def current_run(pods: list[Obj]) -> Run | None:
    """The run to show for a source: the newest of its pods whose container has started."""
    started = [pod for pod in pods if _started(pod)]
    if not started:
        return None
    pod = started[-1]
    status = next(s for s in job_status.container_statuses(pod)
                  if {"running", "terminated"} & set(s.get("state") or {}))
    return Run(pod["metadata"]["name"], pod["metadata"].get("uid", ""), int(status.get("restartCount") or 0),
               "running" in status["state"])


def source_pods(client: kube.KubeClient, job: str, source: Source) -> list[Obj]:
    """The source's pods, oldest first."""
    pods, _ = client.list(kube.POD, f"{JOB_LABEL}={job}")
    return job_status.pods_by_index(pods).get(source, [])


def not_ready_reason(pods: list[Obj]) -> str:
    if not pods:
        return "it has no pod yet"
    newest = pods[-1]
    reason = job_status.pod_reason(newest, [])
    return f"pod {newest['metadata']['name']} is {job_status.pod_phase(newest)}" + (f": {reason}" if reason else "")


def split_timestamp(line: str) -> tuple[str, str]:
    """`2024-05-01T10:00:00.123456789Z text` -> (timestamp, text)."""
    stamp, _, text = line.partition(" ")
    return stamp, text


class SourceFollower:
    """Streams one source's log, run after run, until `done()` says the job is over."""

    def __init__(self, client: kube.KubeClient, job: str, source: Source, write: Write, done: Callable[[], bool],
                 prefix: str = "") -> None:
        self.client, self.job, self.source, self.write, self.done = client, job, source, write, done
        self.prefix = prefix
        self.finished: set[tuple[str, int]] = set()
        self.last_seen: dict[tuple[str, int], str] = {}
        self.shown = 0  # lines written so far
        self.error: SubmitError | None = None

    def run_catching(self) -> None:
        """`run` for a thread: keeps a dlaunch error for the caller instead of a thread traceback."""
        try:
            self.run()
        except SubmitError as exc:
            self.error = exc

    def run(self) -> None:
        while True:
            run = current_run(source_pods(self.client, self.job, self.source))
            if run is None or run.key in self.finished:
                if self.done():
                    return
                time.sleep(POLL_S)
                continue
            shown = self.shown
            complete = self.stream(run)
            after = current_run(source_pods(self.client, self.job, self.source))
            if after is not None and after.key == run.key and after.running:
                # The stream ended while the run goes on (dropped, or an API server going away):
                # reconnect, unless following is over; after a stream that brought nothing, not at once.
                if self.done():
                    return
                if self.shown == shown:
                    time.sleep(POLL_S)
                continue
            if not complete:
                self.catch_up(run, previous=after is not None and after.pod == run.pod)
            self.finished.add(run.key)

    def show(self, run: Run, line: str) -> None:
        """Write a timestamped line unless it was shown already (streams are re-read after a drop)."""
        stamp, text = split_timestamp(line)
        if stamp > self.last_seen.get(run.key, ""):
            self.last_seen[run.key] = stamp
            self.shown += 1
            self.write(self.prefix + text)

    def stream(self, run: Run) -> bool:
        """Show one run's new lines until it ends (True) or the stream drops (False)."""
        try:
            for line in self.client.pod_log(run.pod, follow=True):
                self.show(run, line)
        except kube.LogStreamDropped:
            return False
        except kube.KubeRequestError as exc:
            if exc.status not in (400, 404):  # the container or pod went away between list and read
                raise
        return True

    def catch_up(self, run: Run, previous: bool) -> None:
        """The lines of an ended run that a dropped stream missed (from its pod's previous container
        if the pod has restarted it since)."""
        try:
            for line in self.client.pod_log(run.pod, follow=False, previous=previous):
                self.show(run, line)
        except kube.KubeRequestError as exc:
            if exc.status not in (400, 404):  # its pod is gone, and its log with it
                raise


def print_source(client: kube.KubeClient, job: str, source: Source, write: Write) -> None:
    """The current run's log of one source, once."""
    pods = source_pods(client, job, source)
    run = current_run(pods)
    if run is None:
        raise LogsNotReadyError(f"{label(source)} of job {job} has no logs yet: {not_ready_reason(pods)}; "
                                f"`dlaunch logs --follow` waits for it")
    for line in client.pod_log(run.pod, follow=False, timestamps=False):
        write(line)


def print_interleaved(client: kube.KubeClient, job: str, sources: list[Source], write: Write) -> None:
    """Every source's current run, merged in time order, each line prefixed with its source."""
    pods, _ = client.list(kube.POD, f"{JOB_LABEL}={job}")
    grouped = job_status.pods_by_index(pods)
    streams, missing = [], []
    for source in sources:
        run = current_run(grouped.get(source, []))
        if run is None:
            missing.append(f"[{label(source)}] (no logs yet: {not_ready_reason(grouped.get(source, []))})")
            continue
        lines = client.pod_log(run.pod, follow=False)
        streams.append([(*split_timestamp(line), label(source)) for line in lines])
    if not streams:
        raise LogsNotReadyError(f"no pod of job {job} has logs yet; `dlaunch logs --follow` waits for them")
    for _, text, name in heapq.merge(*streams):
        write(f"[{name}] {text}")
    for line in missing:
        write(line)


def show_logs(client: kube.KubeClient, job: str, sources: list[Source], *, follow: bool, write: Write,
              done: Callable[[], bool], prefix: bool) -> None:
    """One source (no prefix) or several (prefixed `[pod N] `, `[driver] `); following runs one thread each."""
    if not follow:
        if prefix:
            print_interleaved(client, job, sources, write)
        else:
            print_source(client, job, sources[0], write)
        return
    lock = threading.Lock()

    def locked_write(text: str) -> None:
        with lock:
            write(text)
    followers = [SourceFollower(client, job, source, locked_write, done, f"[{label(source)}] " if prefix else "")
                 for source in sources]
    if len(followers) == 1:
        followers[0].run()
        return
    threads = [threading.Thread(target=f.run_catching, name=f"dlaunch-logs-{label(f.source)}", daemon=True)
               for f in followers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    errors = [f.error for f in followers if f.error is not None]
    if errors:
        raise errors[0]
