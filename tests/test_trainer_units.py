"""Unit tests of `Trainer` with a fake engine, task, checkpoint manager and collectives (no process
group, no DeepSpeed): eval and checkpoint cadence, early stopping, the preemption vote, resume,
one collective per step, and the failure policy. All of them together run in well under 5 s."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
import torch

from training.checkpoint.manager import CommittedCheckpoint, SaveOutcome
from training.collectives import SingleProcess
from training.config import BatchLayout, ResolvedJob
from training.distributed import WorkerInfo
from training.errors import ConfigError
from training.failure import FailureDecision, decision_for_workers, exit_code, make_decision
from training.loop import Trainer

WORKER = WorkerInfo(rank=0, world=1, local_rank=0, device="cpu")


def make_job(max_steps: int = 6, eval_every: int = 2, ckpt_every: int = 3, stopping: dict | None = None) -> ResolvedJob:
    training = {"model": {"preset": "llama-tiny"}, "data": {"train": "unused"}, "batch": {"global": 4, "micro": 2},
                "max_steps": max_steps, "eval": {"every_steps": eval_every, "early_stopping": stopping},
                "checkpoint": {"uri": "/unused", "every_steps": ckpt_every}}
    return ResolvedJob.model_validate({
        "name": "unit", "backend": "deepspeed", "run_dir": "/unused", "nodes": 1, "procs_per_node": 1,
        "spec_hash": "abc", "training": training,
        "layout": BatchLayout(micro=2, grad_accum=2, data_parallel=1, zero_stage=0).model_dump()})


class FakeEngine:
    """An 'engine' whose loss is a number the test controls; records calls."""

    device = "cpu"

    def __init__(self) -> None:
        self.steps = 0

    def __call__(self, input_ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return input_ids.float().mean() / 100.0

    def backward(self, loss: torch.Tensor) -> None:
        pass

    def step(self) -> None:
        self.steps += 1

    def get_lr(self) -> list[float]:
        return [0.1]

    def train(self) -> None:
        pass

    def eval(self) -> None:
        pass


@dataclass
class FakeTask:
    """Samples are their own index; evaluation returns the next scripted eval_loss."""

    eval_losses: list[float] = field(default_factory=lambda: [1.0] * 100)
    evaluated: int = 0
    train_size: int = 40

    def train_batch(self, indices: list[int], step: int) -> dict[str, torch.Tensor]:
        ids = torch.tensor(indices).repeat(3, 1).T  # 3 tokens per sample
        return {"input_ids": ids, "labels": ids}

    def loss(self, engine: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return engine(**batch)

    def evaluate(self, engine: Any) -> dict[str, float]:
        self.evaluated += 1
        return {"eval_loss": self.eval_losses[self.evaluated - 1]}


class FakeCheckpoints:
    """Records saves (with the components' states) and serves them back to `latest`/`load`."""

    def __init__(self) -> None:
        self.saved: dict[int, tuple[dict[str, Any], dict[str, Any]]] = {}
        self.last_outcome: SaveOutcome | None = None

    def save(self, engine: Any, step: int, states: dict[str, Any], extra: dict[str, Any]) -> str:
        self.saved[step] = ({k: dict(v.state_dict()) for k, v in states.items()}, dict(extra))
        self.last_outcome = SaveOutcome(step, committed=True)
        return f"mem://step-{step}"

    def latest(self) -> CommittedCheckpoint | None:
        if not self.saved:
            return None
        step = max(self.saved)
        states, extra = self.saved[step]
        return CommittedCheckpoint(step, f"mem://step-{step}", {**extra, **states, "world_size": 1})

    def load(self, engine: Any, checkpoint: CommittedCheckpoint, states: dict[str, Any]) -> dict[str, Any]:
        saved = self.saved[checkpoint.step][0]
        for name, component in states.items():
            component.load_state_dict(saved[name])
        return saved


class RecordingTracker:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def log(self, event: str, **fields: Any) -> None:
        self.events.append((event, fields))

    def steps(self, event: str) -> list[int]:
        return [fields["step"] for name, fields in self.events if name == event]


class VotingPeers(SingleProcess):
    """Another rank's contribution to each step's sum: its preemption vote arrives at `vote_at`."""

    def __init__(self, vote_at: int | None = None) -> None:
        self.calls = 0
        self.vote_at = vote_at

    def all_reduce_sum(self, values: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls == self.vote_at:
            values[2] += 1.0
        return values


def trainer(job: ResolvedJob, task: FakeTask | None = None, checkpoints: FakeCheckpoints | None = None,
            collectives: SingleProcess | None = None) -> tuple[Trainer, RecordingTracker]:
    tracker = RecordingTracker()
    made = Trainer(job, WORKER, FakeEngine(), task or FakeTask(), checkpoints or FakeCheckpoints(),  # type: ignore[arg-type]
                   tracker, collectives=collectives or SingleProcess())  # type: ignore[arg-type]
    return made, tracker


def test_eval_and_checkpoint_cadence_with_a_final_eval_and_save() -> None:
    loop, tracker = trainer(make_job(max_steps=7, eval_every=2, ckpt_every=3))
    state = loop.run()
    assert state.step == 7 and state.stop_reason is None
    assert tracker.steps("eval") == [0, 2, 4, 6, 7]
    assert tracker.steps("checkpoint") == [3, 6, 7]
    assert tracker.steps("checkpoint_committed") == [3, 6, 7]
    assert tracker.steps("train") == list(range(1, 8))


def test_one_collective_per_step_carries_loss_tokens_and_vote() -> None:
    peers = VotingPeers()
    loop, tracker = trainer(make_job(max_steps=4), collectives=peers)
    loop.run()
    assert peers.calls == 4
    first = next(fields for name, fields in tracker.events if name == "train")
    assert first["tokens_per_s"] > 0 and first["step_s"] > 0
    assert loop.engine.steps == 4 * 2  # two micro-batches per step
    # the fake loss of a micro-batch is its mean sample index / 100; step 1 takes the first 4 samples
    assert first["loss"] == pytest.approx(sum(loop.sampler._permutation(0)[:4].tolist()) / 4 / 100.0)


def test_loss_and_tokens_of_a_step_match_a_host_side_computation() -> None:
    loop, _ = trainer(make_job())
    expected_indices = [loop.sampler._permutation(0)[i:i + 2].tolist() for i in (0, 2)]
    result = loop.train_step()
    host = [(torch.tensor(ix).float().mean() / 100.0).item() for ix in expected_indices]  # the old loss.item()
    assert result.loss == (0.0 + host[0] + host[1]) / 2  # what the old host-side sum gave, bit for bit
    assert result.tokens == 4 * 3 and result.preempt_votes == 0


def test_early_stopping_stops_after_patience_and_saves() -> None:
    task = FakeTask(eval_losses=[1.0, 0.9, 0.95, 0.96, 0.97, 0.5])
    job = make_job(max_steps=20, eval_every=1, ckpt_every=100, stopping={"patience": 3})
    loop, tracker = trainer(job, task=task)
    state = loop.run()
    assert state.stop_reason == "early_stopping" and state.step == 4
    assert tracker.steps("checkpoint") == [4]
    assert loop.best_summary()["best_step"] == 1


def test_a_peer_vote_stops_every_rank_with_a_checkpoint_at_the_same_step() -> None:
    checkpoints = FakeCheckpoints()
    loop, tracker = trainer(make_job(max_steps=10, ckpt_every=100), checkpoints=checkpoints,
                            collectives=VotingPeers(vote_at=3))
    state = loop.run()
    assert state.stop_reason == "preempted" and state.step == 3
    assert list(checkpoints.saved) == [3]


def test_own_sigterm_flag_is_voted() -> None:
    loop, _ = trainer(make_job(max_steps=10, ckpt_every=100))
    loop.state.preempted = True
    assert loop.train_step().preempt_votes == 1.0


def test_resume_restores_step_sampler_and_early_stopping() -> None:
    job = make_job(max_steps=4, eval_every=1, ckpt_every=2, stopping={"patience": 5})
    checkpoints = FakeCheckpoints()
    first, _ = trainer(job, task=FakeTask(eval_losses=[1.0, 0.8, 0.9, 0.95, 0.99]), checkpoints=checkpoints)
    first.run()
    states, extra = checkpoints.saved[4]
    assert states["sampler"]["consumed"] == 4 * 4 and states["early_stopping"] == {"best": 0.8, "bad_evals": 3}
    assert extra["spec_hash"] == "abc" and extra["metric"] == 0.99
    resumed, tracker = trainer(make_job(max_steps=6, eval_every=1, ckpt_every=2, stopping={"patience": 5}),
                               checkpoints=checkpoints)
    resumed.resume()
    assert resumed.state.step == 4 and tracker.steps("resume") == [4]
    assert resumed.sampler.state.consumed == 16 and resumed.early is not None
    assert (resumed.early.best, resumed.early.bad_evals) == (0.8, 3)


def test_unknown_early_stopping_metric_is_a_config_error() -> None:
    loop, _ = trainer(make_job(stopping={"metric": "eval_accuracy", "mode": "max"}))
    with pytest.raises(ConfigError, match="early_stopping.metric 'eval_accuracy'"):
        loop.run()


@pytest.mark.parametrize("error,decision", [
    (ConfigError("bad spec"), FailureDecision.RAISE),
    (ValueError("a library's bad value"), FailureDecision.RETRY),
    (RuntimeError("NCCL timeout"), FailureDecision.RETRY),
], ids=["config-error", "plain-value-error", "runtime-error"])
def test_failure_policy_decides_on_the_type(error: Exception, decision: FailureDecision) -> None:
    assert make_decision(error) is decision


def test_failure_policy_follows_the_cause_and_any_worker() -> None:
    try:
        try:
            raise ConfigError("data")
        except ConfigError as inner:
            raise RuntimeError("wrapped") from inner
    except RuntimeError as wrapped:
        assert make_decision(wrapped) is FailureDecision.RAISE
    assert decision_for_workers([RuntimeError("peer"), ConfigError("x")]) is FailureDecision.RAISE
    assert exit_code(FailureDecision.RAISE) == 78 and exit_code(FailureDecision.RETRY) == 1


def test_deepspeed_and_checkpoint_config_errors_are_config_errors() -> None:
    from training.checkpoint.errors import IncompatibleCheckpointError, InvalidUriError
    from training.engine.deepspeed import DeepSpeedConfigError

    for error_type in (DeepSpeedConfigError, IncompatibleCheckpointError, InvalidUriError):
        assert make_decision(error_type("x")) is FailureDecision.RAISE
