"""Where a job's checkpoints are and the last committed step, on any target.

Read through `training.checkpoint.storage` (local paths and s3://): `<uri>/<job>/checkpoints/latest`
holds `step-<N>` and is rewritten only after step N committed (training/checkpoint/commit.py).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

LATEST_FILE = "latest"
LATEST_STEP = re.compile(r"^step-(\d+)$")
MESSAGE_LIMIT = 200


def one_line(text: str | None) -> str:
    """The first line of a message, cut to a readable length."""
    first = (text or "").strip().splitlines()[0] if (text or "").strip() else ""
    return first if len(first) <= MESSAGE_LIMIT else first[: MESSAGE_LIMIT - 3] + "..."


@dataclass(frozen=True)
class CheckpointInfo:
    """The last committed checkpoint step (None if none or unknown), where they live, and a word on it."""

    step: int | None
    location: str | None
    detail: str

    def summary(self) -> str:
        if self.step is not None:
            return f"last committed step {self.step} ({self.location})"
        return f"{self.detail} ({self.location})" if self.location else self.detail


def checkpoint_info(job_json: str, name: str, in_pods: bool = True) -> CheckpointInfo:
    """From a resolved job JSON (a job's ConfigMap, or `runs/<name>/job.json`)."""
    try:
        settings = json.loads(job_json)["training"]["checkpoint"]
        uri, endpoint_url = settings["uri"], settings.get("endpoint_url")
    except (ValueError, KeyError, TypeError):
        return CheckpointInfo(None, None, "unknown (the job's settings name no checkpoint URI)")
    return checkpoint_info_for(uri, name, endpoint_url, in_pods)


def checkpoint_info_for(uri: str, name: str, endpoint_url: str | None = None, in_pods: bool = True) -> CheckpointInfo:
    """Read `<uri>/<job>/checkpoints/latest` (S3 at `endpoint_url` if given); never raises, says why instead.
    `in_pods`: the job runs in pods, so a local path here may not be where they wrote."""
    try:
        from training.checkpoint.errors import CheckpointError, ObjectNotFoundError
        from training.checkpoint.storage import join_uri, storage_for
    except ImportError as exc:
        return CheckpointInfo(None, None, f"unknown (checkpoint storage is not available here: {exc})")
    try:
        root = join_uri(uri, name, "checkpoints")
        storage = storage_for(root, endpoint_url=endpoint_url)
        latest = storage.read_bytes(join_uri(root, LATEST_FILE)).decode("utf-8", "replace").strip()
    except ImportError as exc:  # boto3, for s3://
        return CheckpointInfo(None, uri, f"unknown: cannot read it from here ({exc})")
    except ObjectNotFoundError:
        local = in_pods and ("://" not in uri or uri.startswith("file://"))
        hint = ", or not visible from here: a local path is read on this machine, not in the pods" if local else ""
        return CheckpointInfo(None, join_uri(uri, name, "checkpoints"), f"no checkpoint yet{hint}")
    except (CheckpointError, OSError) as exc:
        return CheckpointInfo(None, uri, f"unknown: cannot read it from here ({one_line(str(exc))})")
    match = LATEST_STEP.match(latest)
    if match is None:
        return CheckpointInfo(None, root, f"unknown: '{LATEST_FILE}' names {latest!r}, not a step")
    step = int(match.group(1))
    return CheckpointInfo(step, root, f"step {step}")
