"""The shared train / evaluate loop around an engine, with early stopping and checkpoints."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from training.checkpoint.manager import CheckpointManager
from training.config import EarlyStoppingConfig, ResolvedJob
from training.data.sampler import ResumableSampler
from training.distributed import WorkerInfo, all_reduce_sum
from training.tasks import Task
from training.tracking import Tracker


@dataclass
class EarlyStopping:
    """Stop when `metric` has not improved by `min_delta` for `patience` evaluations."""

    config: EarlyStoppingConfig
    best: float | None = None
    bad_evals: int = 0

    def improved(self, value: float) -> bool:
        if self.best is None:
            return True
        delta = self.best - value if self.config.mode == "min" else value - self.best
        return delta > self.config.min_delta

    def update(self, value: float) -> bool:
        """Record an evaluation; True when training should stop."""
        if self.improved(value):
            self.best, self.bad_evals = value, 0
        else:
            self.bad_evals += 1
        return self.bad_evals >= self.config.patience

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "bad_evals": self.bad_evals}


@dataclass
class LoopState:
    step: int = 0
    stop_reason: str | None = None
    preempted: bool = False
    history: dict[str, list[float]] = field(default_factory=dict)
    evals: list[tuple[int, dict[str, float]]] = field(default_factory=list)


class Trainer:
    """Runs `max_steps` optimizer steps of a DeepSpeed engine over packed LM blocks."""

    def __init__(self, job: ResolvedJob, worker: WorkerInfo, engine: Any, task: Task,
                 checkpoints: CheckpointManager, tracker: Tracker,
                 on_checkpoint: Callable[[int, dict[str, Any]], None] | None = None) -> None:
        self.job, self.worker, self.engine, self.task = job, worker, engine, task
        self.on_checkpoint = on_checkpoint
        self._pending: dict[int, dict[str, Any]] = {}  # saved, not yet known to be committed
        self.checkpoints, self.tracker = checkpoints, tracker
        layout = job.layout
        self.sampler = ResumableSampler(task.train_size, layout.global_batch, layout.micro, worker.rank,
                                        worker.world, job.training.seed)
        stopping = job.training.eval.early_stopping
        self.early = EarlyStopping(stopping) if stopping else None
        self.state = LoopState()
        self.extra: dict[str, Any] = {"spec_hash": job.spec_hash}

    def train_step(self) -> tuple[float, float]:
        """One optimizer step (grad_accum micro-batches): mean loss and tokens, over all ranks."""
        self.engine.train()
        total, tokens = 0.0, 0.0
        micro_batches = self.sampler.next_step()
        for indices in micro_batches:
            batch = {k: v.to(self.engine.device) for k, v in self.task.train_batch(indices, self.state.step).items()}
            loss = self.task.loss(self.engine, batch)
            self.engine.backward(loss)
            self.engine.step()
            total += loss.item()
            mask = batch.get("attention_mask")
            tokens += float(mask.sum().item() if mask is not None else batch["input_ids"].numel())
        summed, all_tokens = all_reduce_sum([total / len(micro_batches), tokens])
        return summed / self.worker.world, all_tokens

    def evaluate(self) -> dict[str, float]:
        self.engine.eval()
        return self.task.evaluate(self.engine)

    @property
    def watched_metric(self) -> tuple[str, str]:
        """The metric that decides the best checkpoint: early stopping's, else eval_loss (min)."""
        if self.early is not None:
            return self.early.config.metric, self.early.config.mode
        return "eval_loss", "min"

    def best_summary(self) -> dict[str, Any]:
        name, mode = self.watched_metric
        scored = [(step, m) for step, m in self.state.evals if name in m]
        if not scored:
            return {}
        step, metrics = (min if mode == "min" else max)(scored, key=lambda item: item[1][name])
        return {"best_step": step, **{f"best_{k}": v for k, v in metrics.items()}}

    def _record_eval(self) -> dict[str, float]:
        metrics = self.evaluate()
        self.state.evals.append((self.state.step, metrics))
        self.tracker.log("eval", step=self.state.step, **metrics)
        self.state.history.setdefault("eval_loss", []).append(metrics["eval_loss"])
        if self.early is not None:
            metric = metrics.get(self.early.config.metric)
            if metric is None:
                raise ValueError(f"early_stopping.metric '{self.early.config.metric}' is not one of {sorted(metrics)}")
            if self.early.update(metric):
                self.state.stop_reason = "early_stopping"
        return metrics

    def save(self, metric: float | None) -> None:
        extra = {**self.extra, "metric": metric,
                 "early_stopping": self.early.state_dict() if self.early else None}
        path = self.checkpoints.save(self.engine, self.state.step, self.sampler.state_dict(), extra)
        self.tracker.log("checkpoint", step=self.state.step, path=str(path))
        self._pending[self.state.step] = {**extra, "path": str(path)}
        self.report_committed(self.checkpoints.last_outcome)

    def report_committed(self, outcome: Any) -> None:
        """Log a save once it has committed (or failed); only committed ones reach `on_checkpoint`."""
        if outcome is None or outcome.step not in self._pending:
            return
        extra = self._pending.pop(outcome.step)
        self.tracker.log("checkpoint_committed", step=outcome.step, committed=outcome.committed, error=outcome.error)
        if outcome.committed and self.on_checkpoint is not None:
            self.on_checkpoint(outcome.step, extra)

    def resume(self) -> None:
        """Continue from the newest verified checkpoint, if there is one."""
        from training.distributed import broadcast_object

        found = self.checkpoints.latest() if self.worker.is_main else None
        found = broadcast_object(found)
        if found is None:
            return
        if found.manifest.get("world_size") != self.worker.world:
            raise ValueError(f"checkpoint {found.path} was written by {found.manifest.get('world_size')} workers, "
                             f"this job has {self.worker.world}; resume with the same resources")
        self.sampler.load_state_dict(self.checkpoints.load(self.engine, found))
        self.state.step = found.step
        if self.early and found.manifest.get("early_stopping"):
            self.early.best = found.manifest["early_stopping"]["best"]
            self.early.bad_evals = found.manifest["early_stopping"]["bad_evals"]
        self.tracker.log("resume", step=found.step, path=str(found.path))

    def _install_sigterm(self) -> None:
        """SIGTERM (preemption) stops after the current step with a checkpoint. Only a process's
        main thread can take signals; Ray Train runs the loop in a worker thread and handles them itself."""
        def on_sigterm(signum: int, frame: Any) -> None:
            self.state.preempted = True

        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, on_sigterm)

    def _preemption_agreed(self) -> bool:
        (votes,) = all_reduce_sum([1.0 if self.state.preempted else 0.0])
        return votes > 0

    def run(self) -> LoopState:
        """Train to max_steps (or early stop / preemption); evaluate at start and end."""
        t = self.job.training
        self._install_sigterm()
        metrics = self._record_eval()
        while self.state.step < t.max_steps and self.state.stop_reason is None:
            started = time.perf_counter()
            loss, tokens = self.train_step()
            self.state.step += 1
            elapsed = time.perf_counter() - started
            self.tracker.log("train", step=self.state.step, loss=loss, lr=max(self.engine.get_lr()),
                             tokens_per_s=tokens / elapsed, step_s=elapsed, max_steps=t.max_steps)
            last = self.state.step == t.max_steps
            if self.state.step % t.eval.every_steps == 0 or last:
                metrics = self._record_eval()
            if self._preemption_agreed():
                self.state.stop_reason = "preempted"
            if (self.state.step % t.checkpoint.every_steps == 0 or last or self.state.stop_reason):
                self.save(metrics.get(self.watched_metric[0]))
        return self.state
