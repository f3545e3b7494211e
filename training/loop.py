"""The shared train / evaluate loop around an engine, with early stopping and checkpoints.

The loop costs nothing beyond the engine's own work: a step's loss and token count stay on the
engine's device while its micro-batches run (no `.item()` per micro-batch), and one collective
per step sums them over ranks together with the preemption vote. That collective's result is
the step's only host synchronisation, and the loop needs it anyway to log the step.

Everything the loop touches from outside comes in through the constructor: the engine, task,
checkpoint manager, tracker, sampler and the collectives, so `tests/test_trainer_units.py` runs
it with fakes in a single process.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from training.checkpoint.manager import CheckpointManager, Stateful
from training.collectives import Collectives, ProcessGroup
from training.config import BatchLayout, EarlyStoppingConfig, ResolvedJob
from training.data.sampler import ResumableSampler
from training.distributed import WorkerInfo
from training.errors import ConfigError
from training.tasks import Task
from training.tracking import Tracker

if TYPE_CHECKING:
    import torch

SAMPLER_STATE = "sampler"
EARLY_STOPPING_STATE = "early_stopping"


def build_sampler(layout: BatchLayout, seed: int, n_samples: int, worker: WorkerInfo) -> ResumableSampler:
    """The resumable sampler from its config slice (the batch layout and seed) and this rank."""
    return ResumableSampler(n_samples, layout.global_batch, layout.micro, worker.rank, worker.world, seed)


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

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.bad_evals = state["best"], int(state["bad_evals"])


@dataclass
class LoopState:
    step: int = 0
    stop_reason: str | None = None
    preempted: bool = False
    history: dict[str, list[float]] = field(default_factory=dict)
    evals: list[tuple[int, dict[str, float]]] = field(default_factory=list)


@dataclass(frozen=True)
class StepResult:
    """One optimizer step, summed over ranks: mean loss, tokens, whether any rank was stopped, and a
    fingerprint of the global sample ids trained on (their sum and sum of squares: exact in float64,
    independent of how the ids were split over ranks and micro-batches)."""

    loss: float
    tokens: float
    preempt_votes: float
    sample_ids: tuple[int, int] = (0, 0)


class Trainer:
    """Runs `max_steps` optimizer steps of an engine over the task's training samples."""

    def __init__(self, job: ResolvedJob, worker: WorkerInfo, engine: Any, task: Task,
                 checkpoints: CheckpointManager, tracker: Tracker, *,
                 collectives: Collectives | None = None, sampler: ResumableSampler | None = None,
                 on_checkpoint: Callable[[int, dict[str, Any]], None] | None = None) -> None:
        self.job, self.worker, self.engine, self.task = job, worker, engine, task
        self.checkpoints, self.tracker = checkpoints, tracker
        self.collectives = collectives or ProcessGroup()
        self.sampler = sampler or build_sampler(job.layout, job.training.seed, task.train_size, worker)
        self.on_checkpoint = on_checkpoint
        self._pending: dict[int, dict[str, Any]] = {}  # saved, not yet known to be committed
        stopping = job.training.eval.early_stopping
        self.early = EarlyStopping(stopping) if stopping else None
        self.state = LoopState()
        self.extra: dict[str, Any] = {"spec_hash": job.spec_hash}

    @property
    def states(self) -> dict[str, Stateful]:
        """The components that save their own state in every checkpoint."""
        states: dict[str, Stateful] = {SAMPLER_STATE: self.sampler}
        if self.early is not None:
            states[EARLY_STOPPING_STATE] = self.early
        return states

    def _micro_batches(self) -> "torch.Tensor":
        """Forward and backward over this rank's micro-batches of the next step. Returns [mean loss,
        tokens, 0, sum of ids, sum of squared ids] on the device: nothing here waits for the device."""
        import torch

        sums = torch.zeros(5, dtype=torch.float64, device=self.engine.device)
        micro_batches = self.sampler.next_step()
        ids = [int(i) for indices in micro_batches for i in indices]
        sums[3], sums[4] = float(sum(ids)), float(sum(i * i for i in ids))  # host ints: fills, no sync
        for indices in micro_batches:
            batch = {k: v.to(self.engine.device) for k, v in self.task.train_batch(indices, self.state.step).items()}
            loss = self.task.loss(self.engine, batch)
            self.engine.backward(loss)
            self.engine.step()
            sums[0] += loss.detach().to(torch.float64)
            mask = batch.get("attention_mask")
            sums[1] += mask.sum() if mask is not None else batch["input_ids"].numel()
        sums[0] /= len(micro_batches)
        return sums

    def train_step(self) -> StepResult:
        """One optimizer step (grad_accum micro-batches), then the step's single collective: the
        loss, tokens and this rank's preemption vote summed over ranks in one tensor."""
        self.engine.train()
        packed = self._micro_batches()
        packed[2] = 1.0 if self.state.preempted else 0.0  # a fill on the device, no host copy
        loss_sum, tokens, votes, id_sum, id_squares = self.collectives.all_reduce_sum(packed).tolist()
        return StepResult(loss=loss_sum / self.worker.world, tokens=tokens, preempt_votes=votes,
                          sample_ids=(round(id_sum), round(id_squares)))

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
                raise ConfigError(f"training.eval.early_stopping.metric '{self.early.config.metric}' is not one "
                                  f"of the task's metrics {sorted(metrics)}; name one of those")
            if self.early.update(metric):
                self.state.stop_reason = "early_stopping"
        return metrics

    def save(self, metric: float | None) -> None:
        extra = {**self.extra, "metric": metric}
        path = self.checkpoints.save(self.engine, self.state.step, self.states, extra)
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
        """Continue from the newest verified checkpoint, if there is one; rank 0 chooses it. A checkpoint
        written by another number of ranks resumes too: the manager converts it (see
        `training.checkpoint.universal`), and the sampler refuses a changed global batch."""
        found = self.checkpoints.latest() if self.worker.is_main else None
        found = self.collectives.broadcast_object(found)
        if found is None:
            return
        self.checkpoints.load(self.engine, found, self.states)
        self.state.step = found.step
        self.tracker.log("resume", step=found.step, path=str(found.path),
                         from_world_size=found.manifest.get("world_size"), world_size=self.worker.world)

    def _install_sigterm(self) -> None:
        """SIGTERM (preemption) stops after the current step with a checkpoint. Only a process's
        main thread can take signals; Ray Train runs the loop in a worker thread and handles them itself."""
        def on_sigterm(signum: int, frame: Any) -> None:
            self.state.preempted = True

        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, on_sigterm)

    def _log_step(self, result: StepResult, elapsed: float) -> None:
        self.tracker.log("train", step=self.state.step, loss=result.loss, lr=max(self.engine.get_lr()),
                         tokens_per_s=result.tokens / elapsed, step_s=elapsed, max_steps=self.job.training.max_steps,
                         sample_ids=list(result.sample_ids))

    def run(self) -> LoopState:
        """Train to max_steps (or early stop / preemption); evaluate at start and end."""
        t = self.job.training
        self._install_sigterm()
        metrics = self._record_eval()
        while self.state.step < t.max_steps and self.state.stop_reason is None:
            started = time.perf_counter()
            result = self.train_step()
            self.state.step += 1
            self._log_step(result, time.perf_counter() - started)
            last = self.state.step == t.max_steps
            if self.state.step % t.eval.every_steps == 0 or last:
                metrics = self._record_eval()
            if result.preempt_votes > 0:
                self.state.stop_reason = "preempted"
            if self.state.step % t.checkpoint.every_steps == 0 or last or self.state.stop_reason:
                self.save(metrics.get(self.watched_metric[0]))
        return self.state
