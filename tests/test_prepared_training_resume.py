"""Issue 13, "Must show": a run stopped at step k and resumed on another number of ranks consumes
exactly the sample ids of an uninterrupted run.

Real `dlaunch submit` jobs on prepared data, DeepSpeed on CPU, ZeRO stage 0 in fp32, global batch
12 throughout: 2 ranks (micro 2 x accum 3) run 6 steps uninterrupted; 2 ranks run 3 steps and
checkpoint; copies of that checkpoint resume to step 6 on 1 rank (micro 2 x accum 6) and on 3
ranks (micro 2 x accum 2). Every rank logs the global sample ids it trains on
(`DLAUNCH_SAMPLE_LOG`, `training.data.prepared.log_samples`); per step, the union over ranks
must be the same, compared by hash.

Why stage 0 in fp32 can resume at another world size: DeepSpeed then keeps the whole optimizer
state in `mp_rank_00_model_states.pt` (deepspeed/runtime/engine.py: `DeepSpeedEngine._save_checkpoint`
-> `_common_checkpoint_state` stores `optimizer.state_dict()` when `zero_optimization()` is off)
and `_load_checkpoint` loads it back from that same file (`optim_checkpoint = checkpoint`), with
nothing partitioned by data-parallel rank. The sampler's state is one global count of samples.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import base_spec
from training.data.prepare.config import PrepareSpec
from training.data.prepare.run import prepare
from training.data.prepared import SAMPLE_LOG_ENV

pytestmark = pytest.mark.slow

TUTORIAL = "/usr/share/doc/python3.11/html/_sources/tutorial"
NAME = "resume-ids"
STOP_AT, MAX_STEPS, GLOBAL = 3, 6, 12


def spec(tmp: Path, ranks: int, max_steps: int, dataset: Path) -> dict[str, Any]:
    job = base_spec()
    job["name"] = NAME
    job["resources"] = {"nodes": 1, "gpus_per_node": ranks}
    job["training"].update({
        "max_steps": max_steps, "precision": "fp32", "zero": {"stage": 0},
        "data": {"prepared": str(dataset), "seq_len": 32},
        "batch": {"global": GLOBAL, "micro": 2},
        "optimizer": {"lr": 3e-3}, "schedule": {"warmup_steps": 1},
        "eval": {"every_steps": 1000, "max_batches": 1},
        "checkpoint": {"uri": str(tmp / "ckpt"), "every_steps": STOP_AT},
        "tracking": {"wandb": {"mode": "disabled"}},
    })
    return job


def submit(tmp: Path, job: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> tuple[int, str]:
    """Run the job to its end; (exit code, the tail of its rank logs)."""
    from launcher.cli import main

    monkeypatch.setenv(SAMPLE_LOG_ENV, str(tmp / "samples"))
    spec_file = tmp / f"{job['resources']['gpus_per_node']}-{job['training']['max_steps']}.yaml"
    spec_file.write_text(yaml.safe_dump(job))
    code = main(["submit", str(spec_file), "--runs-dir", str(tmp / "runs")])
    logs = "\n".join(p.read_text()[-3000:] for p in sorted((tmp / "runs" / NAME / "logs").glob("*.log")))
    return code, logs


def ids_by_step(tmp: Path) -> dict[int, list[int]]:
    """Per step, the sorted global sample ids all ranks trained on."""
    steps: dict[int, list[int]] = {}
    for path in (tmp / "samples").glob("rank-*.jsonl"):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            steps.setdefault(record["step"], []).extend(record["ids"])
    return {step: sorted(ids) for step, ids in sorted(steps.items())}


def digest(steps: dict[int, list[int]]) -> str:
    return hashlib.sha256(json.dumps(sorted(steps.items())).encode()).hexdigest()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("data") / "prepared"
    prepare(PrepareSpec(inputs=[TUTORIAL], output=str(out), engine="inline",
                        tokenizer={"vocab_size": 600, "sample_mb": 1}), report=lambda line: None)
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, dataset: Path) -> dict[str, Path]:
    """The uninterrupted 2-rank run and the 2-rank run stopped (checkpointed) at STOP_AT."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        full, stopped = tmp_path_factory.mktemp("full"), tmp_path_factory.mktemp("stopped")
        for tmp, steps in ((full, MAX_STEPS), (stopped, STOP_AT)):
            code, logs = submit(tmp, spec(tmp, 2, steps, dataset), monkeypatch)
            assert code == 0, logs
    return {"full": full, "stopped": stopped}


def test_the_uninterrupted_run_consumes_one_global_batch_of_distinct_ids_per_step(runs: dict[str, Path]) -> None:
    steps = ids_by_step(runs["full"])
    assert sorted(steps) == list(range(MAX_STEPS))
    assert all(len(ids) == len(set(ids)) == GLOBAL for ids in steps.values())
    assert ids_by_step(runs["stopped"]) == {s: steps[s] for s in range(STOP_AT)}


@pytest.mark.parametrize("ranks", [1, 3])  # the same world size resumes through the same sampler state
def test_resume_on_other_world_sizes_consumes_the_same_sample_ids(ranks: int, runs: dict[str, Path], dataset: Path,
                                                                   tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copytree(runs["stopped"] / "ckpt", tmp_path / "ckpt")
    shutil.copytree(runs["stopped"] / "samples", tmp_path / "samples")
    code, logs = submit(tmp_path, spec(tmp_path, ranks, MAX_STEPS, dataset), monkeypatch)
    assert code == 0, logs
    resumed = ids_by_step(tmp_path)
    assert digest(resumed) == digest(ids_by_step(runs["full"])), (resumed, ids_by_step(runs["full"]))
