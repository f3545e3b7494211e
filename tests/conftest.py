"""Shared fixtures: run the CLI in-process and write specs to temporary files."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import os

import pytest
import yaml
from hypothesis import settings

# Property tests draw the same examples on every run, so CI never fails on a case nobody has seen
# locally. HYPOTHESIS_PROFILE=explore draws fresh random ones on each run to hunt for bugs.
settings.register_profile("repeatable", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))

from launcher.cli import main

if TYPE_CHECKING:
    from training.config import ResolvedJob

REPO = Path(__file__).resolve().parent.parent
CORPUS_GLOB = "/usr/share/doc/python3.11/html/_sources/tutorial/*.rst.txt"

BASE_SPEC: dict[str, Any] = {
    "name": "unit-job",
    "backend": "deepspeed",
    "target": "local",
    "resources": {"nodes": 1, "gpus_per_node": 2},
    "training": {
        "seed": 1,
        "model": {"type": "causal-lm", "preset": "llama-tiny"},
        "data": {"train": CORPUS_GLOB, "seq_len": 64},
        "batch": {"global": 16, "micro": 4},
        "max_steps": 10,
        # fp32, not the spec's default bf16: on a CPU without bf16 kernels (AVX2 only, as on some CI
        # machines) a bf16 step takes over 10 times as long (launcher/hardware.py). Tests of bf16 itself
        # (exact and world-size resume, ZeRO-3 export, distillation) ask for it explicitly.
        "precision": "fp32",
        "zero": {"stage": 2},
    },
}


# The tests of bf16 itself (bit-identical and world-size resume, Ray = DeepSpeed, ZeRO-3 export and
# offload) check numerics and state paths, not the network's size. On a CPU without bf16 kernels a
# llama-tiny bf16 step takes over 10 times an fp32 one, so they train a narrower llama-tiny: 8 steps
# of micro 4 x 32 tokens on 2 ranks took 12.7 s of training as llama-tiny and 2.0 s as this, measured
# on such a CPU (AMD EPYC, AVX2 only).
BF16_TEST_MODEL: dict[str, Any] = {
    "preset": "llama-tiny",
    "overrides": {"hidden_size": 64, "intermediate_size": 172, "num_hidden_layers": 2,
                  "num_attention_heads": 2, "num_key_value_heads": 2},
}


def base_spec() -> dict[str, Any]:
    """A fresh deep copy of a small valid local spec."""
    return copy.deepcopy(BASE_SPEC)


def resolved(tmp_path: Path, **training: Any) -> "ResolvedJob":
    """The small local spec with `training` keys replaced, resolved as `submit` resolves it."""
    from launcher.plan import plan_batch
    from launcher.resolve import resolve_job
    from launcher.spec import JobSpec

    data = base_spec()
    data["training"].update(training)
    spec = JobSpec.model_validate(data)
    return resolve_job(spec, plan_batch(spec), str(tmp_path / "run"))


class CliResult:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., CliResult]:
    """Run `dlaunch ARGS` in this process; returns exit code, stdout and stderr."""

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        code = main(list(args))
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


@pytest.fixture
def write_spec(tmp_path: Path) -> Callable[[Any], Path]:
    """Write a dict (as YAML) or raw text to a spec file and return its path."""
    counter = iter(range(10**6))

    def write(content: Any) -> Path:
        path = tmp_path / f"spec-{next(counter)}.yaml"
        text = content if isinstance(content, str) else yaml.safe_dump(content, sort_keys=False)
        path.write_text(text, encoding="utf-8")
        return path

    return write


# --- leaving the test process ------------------------------------------------------------------
# After every test has passed and pytest has printed its summary, the interpreter's own shutdown
# sometimes dies with SIGABRT (exit 134, no Python frame: a native library's static destructors
# racing a thread another library left running; seen about one run in three once torch, pyarrow
# and the kubernetes client's thread pool are all loaded in one process). That would turn a green
# run red. pytest's exit status is final once the session finishes, so the process leaves with it
# directly; files are flushed first. DLAUNCH_TEST_CLEAN_EXIT=1 keeps the normal shutdown (to hunt
# the crash).
_SESSION_STATUS: list[int] = []


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _SESSION_STATUS.append(int(exitstatus))


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    if _SESSION_STATUS and os.environ.get("DLAUNCH_TEST_CLEAN_EXIT") != "1":
        import sys

        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_SESSION_STATUS[-1])


# --- threads a test leaves behind -----------------------------------------------------------------
# dlaunch's log followers run in daemon threads; one that outlives its test keeps working against a
# server that is gone (one took about 75% of a core for the rest of a session, one of the two
# cores of a CI machine). Every test must leave none running.
LEAK_GRACE_S = 5.0


@pytest.fixture(autouse=True)
def no_log_follower_left_running():  # type: ignore[no-untyped-def]
    import threading
    import time

    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + LEAK_GRACE_S
    while True:
        left = [t for t in threading.enumerate()
                if t not in before and t.is_alive() and t.name.startswith("dlaunch-logs")]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert not left, f"the test left log-follower threads running: {[t.name for t in left]}"
