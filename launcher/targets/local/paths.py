"""Every path a local job writes, derived in one place (like Ray Train's StorageContext).

`runs/<name>/` holds `job.json` (what every worker reads), `request.json` (what was launched),
`state.json` (the supervisor's record of its agents: pids and exit codes), `metrics.jsonl`
(rank 0's events) and `logs/`: `rank-<r>.log` per worker, `agent-<n>.log` per torchrun agent
(`driver.log` for Ray), `supervisor.log`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunPaths:
    """The files of one local job under `<runs_dir>/<name>/`."""

    run_dir: Path

    @classmethod
    def of(cls, runs_dir: str | Path, name: str) -> "RunPaths":
        return cls(Path(runs_dir).resolve() / name)

    @property
    def name(self) -> str:
        return self.run_dir.name

    @property
    def job_file(self) -> Path:
        return self.run_dir / "job.json"

    @property
    def request_file(self) -> Path:
        return self.run_dir / "request.json"

    @property
    def state_file(self) -> Path:
        return self.run_dir / "state.json"

    @property
    def metrics_file(self) -> Path:
        return self.run_dir / "metrics.jsonl"

    @property
    def log_dir(self) -> Path:
        return self.run_dir / "logs"

    @property
    def supervisor_log(self) -> Path:
        return self.log_dir / "supervisor.log"

    def rank_log(self, rank: int) -> Path:
        return self.log_dir / f"rank-{rank}.log"

    def rank_logs(self) -> dict[int, Path]:
        """The rank logs that exist, by rank."""
        found = {}
        for path in self.log_dir.glob("rank-*.log"):
            suffix = path.stem.removeprefix("rank-")
            if suffix.isdigit():
                found[int(suffix)] = path
        return dict(sorted(found.items()))


def write_atomically(path: Path, text: str) -> None:
    """Replace `path` with `text` in one rename, so a reader never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
