"""Every path a job writes, derived in one place (like Ray Train's `StorageContext`).

`<training.checkpoint.uri>/<job name>/` is the job root: checkpoints, the tokenizer, model.json
and exported artifacts live under it, locally or on S3. `run_dir` is node-local: the metrics
log, rank logs, checkpoint staging. Nothing here touches storage; it only names things.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from training.checkpoint.storage import join_uri
from training.config import ResolvedJob

CHECKPOINTS_DIR = "checkpoints"
ARTIFACTS_DIR = "artifacts"


@dataclass(frozen=True)
class JobPaths:
    """The URIs and local directories of one job."""

    root: str
    run_dir: Path

    @classmethod
    def for_job(cls, job: ResolvedJob) -> "JobPaths":
        return cls(root=join_uri(job.training.checkpoint.uri, job.name), run_dir=Path(job.run_dir))

    @property
    def checkpoints(self) -> str:
        """Where the commit protocol writes `step-<N>/` and `latest`."""
        return join_uri(self.root, CHECKPOINTS_DIR)

    def artifacts(self, step: int) -> str:
        """Where post-training exports of the checkpoint of `step` are uploaded."""
        return join_uri(self.root, ARTIFACTS_DIR, f"step-{step}")

    @property
    def staging(self) -> Path:
        """Node-local space where each rank stages a checkpoint before its upload."""
        return self.run_dir / "checkpoint-staging"


def job_root(job: ResolvedJob) -> str:
    """`<checkpoint uri>/<job name>`: where this job's checkpoints, tokenizer and model.json live."""
    return JobPaths.for_job(job).root
