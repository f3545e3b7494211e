"""Where metrics go: a JSON-lines file the launcher's progress display reads, stdout, and W&B.

Only rank 0 tracks. W&B runs online when it has a key (WANDB_API_KEY, or a netrc file named by
NETRC, which is how pods receive it from a mounted Secret), offline otherwise (mode `auto`), and
its run id is kept with the checkpoints so that a resumed job continues the same run.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from training.config import TrackingConfig, WandbConfig

METRICS_FILE = "metrics.jsonl"


def wandb_mode(config: WandbConfig) -> str:
    """`auto` is online when W&B can find a key: the variable, or the netrc file NETRC names.

    wandb reads NETRC itself (`wandb/sdk/lib/wbauth/wbnetrc.py`, `_get_netrc_file_path`).
    """
    if config.mode != "auto":
        return config.mode
    netrc = os.environ.get("NETRC")
    has_key = bool(os.environ.get("WANDB_API_KEY")) or bool(netrc and Path(netrc).is_file())
    return "online" if has_key else "offline"


class Tracker:
    """Log events to `<run_dir>/metrics.jsonl`, stdout and (optionally) Weights & Biases.

    Built from its own config slice (`training.tracking`) and the runtime facts it needs; only
    the main rank's tracker is enabled."""

    def __init__(self, run_dir: str | Path, enabled: bool, config: TrackingConfig | None = None) -> None:
        self.enabled = enabled
        self.config = config or TrackingConfig(wandb=None)
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / METRICS_FILE
        self._wandb: Any = None
        self._tensorboard: Any = None
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def start(self, name: str, run_id: str | None, job_config: dict[str, Any]) -> str | None:
        """Start (or resume, given `run_id`) the W&B run and TensorBoard as the config asks;
        returns the W&B run id to store with checkpoints."""
        if self.enabled and self.config.tensorboard:
            from tensorboardX import SummaryWriter

            self._tensorboard = SummaryWriter(logdir=str(self.run_dir / "tensorboard"))
        wandb_config = self.config.wandb
        if not self.enabled or wandb_config is None or wandb_mode(wandb_config) == "disabled":
            return None
        import wandb

        run = wandb.init(
            project=wandb_config.project, entity=wandb_config.entity, mode=wandb_mode(wandb_config),
            dir=str(self.run_dir), name=name, id=run_id, resume="allow", config=job_config,
            settings=wandb.Settings(console="off", silent=True, x_disable_stats=True),
        )
        self._wandb = run
        return run.id

    def log(self, event: str, **fields: Any) -> None:
        """Append one event; numeric fields of events with a step also go to W&B / TensorBoard."""
        if not self.enabled:
            return
        record = {"event": event, "time": round(time.time(), 3), **fields}
        line = json.dumps(record)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(line + "\n")
        print(f"[dlaunch] {line}", file=sys.stdout, flush=True)
        if "step" not in fields:
            return
        prefix = "train/" if event == "train" else f"{event}/"
        numeric = {f"{prefix}{k}": v for k, v in fields.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("step", "max_steps")}
        if self._wandb is not None and numeric:
            self._wandb.log(numeric, step=fields["step"])
        if self._tensorboard is not None:
            for key, value in numeric.items():
                self._tensorboard.add_scalar(key, value, fields["step"])

    def log_artifact(self, path: Path, name: str) -> None:
        """Attach a file (an exported model) to the W&B run as a model artifact."""
        if self._wandb is None:
            return
        import wandb

        artifact = wandb.Artifact(name, type="model")
        artifact.add_file(str(path))
        self._wandb.log_artifact(artifact)

    def summary(self, values: dict[str, Any]) -> None:
        if self._wandb is not None:
            for key, value in values.items():
                self._wandb.summary[key] = value

    def finish(self, exit_code: int = 0) -> None:
        if self._tensorboard is not None:
            self._tensorboard.close()
            self._tensorboard = None
        if self._wandb is not None:
            self._wandb.finish(exit_code=exit_code)
            self._wandb = None
