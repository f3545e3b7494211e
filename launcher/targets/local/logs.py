"""A local job's logs: one rank's `logs/rank-<r>.log`, or every rank's with `[rank N] ` prefixes;
following them until the job is no longer running."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

from launcher.errors import SubmitError
from launcher.targets.local.paths import RunPaths

POLL_S = 0.5


class FileFollower:
    """The complete lines appended to a file since the last read (the file may not exist yet)."""

    def __init__(self, path: Path, prefix: str = "") -> None:
        self.path, self.prefix, self.offset, self.partial = path, prefix, 0, ""

    def read(self, final: bool = False) -> list[str]:
        if not self.path.exists():
            return []
        with self.path.open("r", encoding="utf-8", errors="replace") as handle:
            handle.seek(self.offset)
            chunk = handle.read()
            self.offset = handle.tell()
        lines = (self.partial + chunk).split("\n")
        self.partial = lines.pop()
        if final and self.partial:
            lines, self.partial = lines + [self.partial], ""
        return [self.prefix + line for line in lines]


def check_rank(paths: RunPaths, world_size: int, rank: int) -> None:
    if not 0 <= rank < world_size:
        raise SubmitError(f"job {paths.name} has ranks 0 to {world_size - 1}, not {rank}: pass --rank between them")


def sources(paths: RunPaths, world_size: int, rank: int | None, every: bool) -> list[FileFollower]:
    """The files to show: every rank's (prefixed) or one rank's (rank 0 by default)."""
    if every:
        return [FileFollower(paths.rank_log(r), f"[rank {r}] ") for r in range(world_size)]
    rank = 0 if rank is None else rank
    check_rank(paths, world_size, rank)
    return [FileFollower(paths.rank_log(rank))]


def read_logs(paths: RunPaths, world_size: int, *, rank: int | None, every: bool, follow: bool,
              running: Callable[[], bool]) -> Iterator[str]:
    """The lines of the chosen logs; following, new lines as they come until `running()` is False."""
    followers = sources(paths, world_size, rank, every)
    if not follow:
        missing = [f.path.name for f in followers if not f.path.exists()]
        if len(missing) == len(followers):
            raise SubmitError(f"job {paths.name} has no {' or '.join(missing)} yet: its workers have not started; "
                              "`dlaunch logs --follow` waits for them")
        for follower in followers:
            yield from follower.read(final=True)
        return
    while True:
        still_running = running()  # read before the files, so no line written before the end is missed
        for follower in followers:
            yield from follower.read(final=not still_running)
        if not still_running:
            return
        time.sleep(POLL_S)
