"""`dlaunch logs`: one rank's log, or every rank's interleaved with rank prefixes, optionally followed.

A rank's log outlives its pods: when the container restarts or the Job controller replaces a
failed pod, a follower moves on to the new run; when a stream drops, it reconnects and skips
the lines it has already shown (it reads logs with timestamps and remembers the last one).
"""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from launcher.errors import SubmitError
from launcher.targets.kubernetes import cluster
from launcher.targets.kubernetes import status as job_status
from launcher.targets.kubernetes.pods import JOB_LABEL

# How often a follower looks for the next run of a rank while none is streaming.
POLL_S = 1.0

Obj = dict[str, Any]
Write = Callable[[str], None]


class LogsNotReadyError(SubmitError):
    """The rank has no container that has started yet."""


@dataclass(frozen=True)
class Run:
    """One run of a rank's container: a pod, and how many times it had restarted."""

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
    """The run to show for a rank: the newest of its pods whose container has started."""
    started = [pod for pod in pods if _started(pod)]
    if not started:
        return None
    pod = started[-1]
    status = next(s for s in job_status.container_statuses(pod)
                  if {"running", "terminated"} & set(s.get("state") or {}))
    return Run(pod["metadata"]["name"], pod["metadata"].get("uid", ""), int(status.get("restartCount") or 0),
               "running" in status["state"])


def rank_pods(client: cluster.KubeClient, job: str, rank: int) -> list[Obj]:
    """The rank's pods, oldest first."""
    pods, _ = client.list(cluster.POD, f"{JOB_LABEL}={job}")
    return job_status.pods_by_rank(pods).get(rank, [])


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


class RankFollower:
    """Streams one rank's log, run after run, until `done()` says the job is over."""

    def __init__(self, client: cluster.KubeClient, job: str, rank: int, write: Write, done: Callable[[], bool],
                 prefix: str = "") -> None:
        self.client, self.job, self.rank, self.write, self.done, self.prefix = client, job, rank, write, done, prefix
        self.finished: set[tuple[str, int]] = set()
        self.last_seen: dict[tuple[str, int], str] = {}
        self.error: SubmitError | None = None

    def run_catching(self) -> None:
        """`run` for a thread: keeps a dlaunch error for the caller instead of a thread traceback."""
        try:
            self.run()
        except SubmitError as exc:
            self.error = exc

    def run(self) -> None:
        while True:
            run = current_run(rank_pods(self.client, self.job, self.rank))
            if run is None or run.key in self.finished:
                if self.done():
                    return
                time.sleep(POLL_S)
                continue
            complete = self.stream(run)
            after = current_run(rank_pods(self.client, self.job, self.rank))
            if after is not None and after.key == run.key and after.running:
                continue  # the stream dropped while the run goes on: reconnect
            if not complete:
                self.catch_up(run, previous=after is not None and after.pod == run.pod)
            self.finished.add(run.key)

    def show(self, run: Run, line: str) -> None:
        """Write a timestamped line unless it was shown already (streams are re-read after a drop)."""
        stamp, text = split_timestamp(line)
        if stamp > self.last_seen.get(run.key, ""):
            self.last_seen[run.key] = stamp
            self.write(self.prefix + text)

    def stream(self, run: Run) -> bool:
        """Show one run's new lines until it ends (True) or the stream drops (False)."""
        try:
            for line in self.client.pod_log(run.pod, follow=True):
                self.show(run, line)
        except cluster.LogStreamDropped:
            return False
        except cluster.KubeRequestError as exc:
            if exc.status not in (400, 404):  # the container or pod went away between list and read
                raise
        return True

    def catch_up(self, run: Run, previous: bool) -> None:
        """The lines of an ended run that a dropped stream missed (from its pod's previous container
        if the pod has restarted it since)."""
        try:
            for line in self.client.pod_log(run.pod, follow=False, previous=previous):
                self.show(run, line)
        except cluster.KubeRequestError as exc:
            if exc.status not in (400, 404):  # its pod is gone, and its log with it
                raise


def print_rank(client: cluster.KubeClient, job: str, rank: int, write: Write, prefix: str = "") -> None:
    """The current run's log of one rank, once."""
    pods = rank_pods(client, job, rank)
    run = current_run(pods)
    if run is None:
        raise LogsNotReadyError(f"rank {rank} of job {job} has no logs yet: {not_ready_reason(pods)}; "
                                f"`dlaunch logs --follow` waits for it")
    for line in client.pod_log(run.pod, follow=False, timestamps=False):
        write(prefix + line)


def print_interleaved(client: cluster.KubeClient, job: str, ranks: list[int], write: Write) -> None:
    """Every rank's current run, merged in time order, each line prefixed with its rank."""
    pods, _ = client.list(cluster.POD, f"{JOB_LABEL}={job}")
    grouped = job_status.pods_by_rank(pods)
    streams, missing = [], []
    for rank in ranks:
        run = current_run(grouped.get(rank, []))
        if run is None:
            missing.append(f"[rank {rank}] (no logs yet: {not_ready_reason(grouped.get(rank, []))})")
            continue
        lines = client.pod_log(run.pod, follow=False)
        streams.append([(*split_timestamp(line), rank) for line in lines])
    if not streams:
        raise LogsNotReadyError(f"no rank of job {job} has logs yet; `dlaunch logs --follow` waits for them")
    for _, text, rank in heapq.merge(*streams):
        write(f"[rank {rank}] {text}")
    for line in missing:
        write(line)


def show_logs(client: cluster.KubeClient, job: str, ranks: list[int], *, follow: bool, write: Write,
              done: Callable[[], bool], prefix: bool) -> None:
    """One rank (no prefix) or several (prefixed `[rank N] `); following runs one thread per rank."""
    if not follow:
        if prefix:
            print_interleaved(client, job, ranks, write)
        else:
            print_rank(client, job, ranks[0], write)
        return
    lock = threading.Lock()

    def locked_write(text: str) -> None:
        with lock:
            write(text)
    followers = [RankFollower(client, job, rank, locked_write, done, f"[rank {rank}] " if prefix else "")
                 for rank in ranks]
    if len(followers) == 1:
        followers[0].run()
        return
    threads = [threading.Thread(target=f.run_catching, name=f"dlaunch-logs-rank-{f.rank}", daemon=True)
               for f in followers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    errors = [f.error for f in followers if f.error is not None]
    if errors:
        raise errors[0]
