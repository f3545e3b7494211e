"""Tasks: a causal LM task end to end on a small corpus, and spec mistakes refused with `ConfigError`.

`ConfigError` is the one type the worker maps to the configuration exit code; a plain
`ValueError` is a retriable failure (`training.failure.make_decision`), so a task that raised one
for a spec mistake would have its gang restarted instead of failing at once.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist

from tests.conftest import resolved
from training.config import ResolvedJob
from training.distributed import WorkerInfo
from training.errors import ConfigError
from training.failure import FailureDecision, make_decision
from training.tasks import CausalLMTask, Task, make_task

WORKER = WorkerInfo(rank=0, world=1, local_rank=0, device="cpu")
SMALL_CORPUS = "/usr/share/doc/python3.11/html/_sources/tutorial/appe*.rst.txt"
SMALL_LM = {"data": {"train": SMALL_CORPUS, "seq_len": 32, "tokenizer_vocab_size": 300, "validation_fraction": 0.2},
            "eval": {"every_steps": 1, "max_batches": 2}}


class ModuleTask(Task):
    """A task around a given module: only `build_model` matters to `prepare_model`."""

    def __init__(self, job: ResolvedJob, module: torch.nn.Module) -> None:
        super().__init__(job, WORKER, job_root="")
        self.module = module

    @property
    def train_size(self) -> int:
        return 0

    def build_model(self) -> torch.nn.Module:
        return self.module

    def train_batch(self, indices: list[int], step: int) -> dict[str, torch.Tensor]:
        return {}

    def evaluate(self, engine: Any) -> dict[str, float]:
        return {}

    def loss(self, engine: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.zeros(())


def test_activation_checkpointing_on_a_plain_module_is_a_config_error(tmp_path: Path) -> None:
    task = ModuleTask(resolved(tmp_path, activation_checkpointing=True), torch.nn.Linear(4, 4))
    with pytest.raises(ConfigError, match=r"training\.activation_checkpointing") as caught:
        task.prepare_model()
    assert make_decision(caught.value) is FailureDecision.RAISE


def test_activation_checkpointing_off_leaves_the_module_as_built(tmp_path: Path) -> None:
    module = torch.nn.Linear(4, 4)
    assert ModuleTask(resolved(tmp_path), module).prepare_model() is module


def test_classifier_without_a_pretrained_backbone_is_a_config_error(tmp_path: Path) -> None:
    job = resolved(tmp_path, model={"type": "sequence-classification", "factory": "examples.custom_model:build",
                                    "num_labels": 4})
    with pytest.raises(ConfigError, match=r"model\.pretrained") as caught:
        make_task(job, WORKER, str(tmp_path / "root"))
    assert make_decision(caught.value) is FailureDecision.RAISE


@pytest.fixture
def one_process_group(tmp_path: Path) -> Iterator[None]:
    """A gloo group of one: rank 0 broadcasts its tokenizer and sums metrics as in a real job."""
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'group'}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_causal_lm_task_trains_its_tokenizer_and_evaluates(tmp_path: Path, one_process_group: None) -> None:
    job = resolved(tmp_path, **SMALL_LM)
    task = make_task(job, WORKER, str(tmp_path / "root"))
    assert isinstance(task, CausalLMTask)
    assert (tmp_path / "root" / "tokenizer.json").is_file()  # kept for resume and export
    assert 0 < task.vocab_size <= 300 and task.train_size > 0
    model = task.prepare_model()
    batch = task.train_batch([0, 1], step=0)
    assert batch["input_ids"].shape == (2, 32) and torch.equal(batch["input_ids"], batch["labels"])
    assert math.isfinite(task.loss(model, batch).item())
    metrics = task.evaluate(model)
    assert set(metrics) == {"eval_loss", "perplexity"}
    assert metrics["perplexity"] == pytest.approx(math.exp(metrics["eval_loss"]))


def test_distilling_a_causal_lm_is_a_config_error(tmp_path: Path, one_process_group: None) -> None:
    job = resolved(tmp_path, **SMALL_LM, compression={"distill": {"teacher": str(tmp_path / "teacher")}})
    task = make_task(job, WORKER, str(tmp_path / "root"))
    with pytest.raises(ConfigError, match="compression.distill"):
        task.build_model()
