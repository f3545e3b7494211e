"""The CLI's surface: help, version, init, validate, plan; and its start-up stays light."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from launcher.cli import COMMANDS
from tests.conftest import REPO, base_spec

HEAVY = ("torch", "deepspeed", "ray", "transformers", "kubernetes", "boto3", "wandb")


@pytest.mark.parametrize("args", [["--help"], ["validate", "examples/quickstart.yaml"],
                                  ["validate", "examples/kind-quickstart.yaml"]],
                         ids=["help", "validate", "validate-kubernetes"])
def test_startup_imports_nothing_heavy(args: list[str]) -> None:
    code = (
        "import sys; from launcher.cli import main; rc = main(%r); "
        "print(sorted(m for m in %r if m in sys.modules)); sys.exit(rc)" % (args, HEAVY)
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_version(run_cli) -> None:
    result = run_cli("--version")
    assert result.code == 0
    assert "dlaunch, version 0.1.0" in result.out


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_command_has_help(name: str, run_cli) -> None:
    result = run_cli(name, "--help")
    assert result.code == 0
    assert f"Usage: dlaunch {name}" in result.out


def test_unknown_command_is_a_usage_error(run_cli) -> None:
    result = run_cli("sumbit")
    assert result.code == 2
    assert "No such command 'sumbit'" in result.err


def test_init_writes_a_spec_that_validates(run_cli, tmp_path) -> None:
    path = tmp_path / "cluster.yaml"
    assert run_cli("init", str(path)).code == 0
    assert "# " in path.read_text()  # commented
    result = run_cli("validate", str(path))
    assert result.code == 0, result.err
    assert "valid" in result.out


def test_init_never_overwrites_without_force(run_cli, tmp_path) -> None:
    path = tmp_path / "cluster.yaml"
    path.write_text("mine\n")
    result = run_cli("init", str(path))
    assert result.code == 1
    assert "already exists; pass --force" in result.err
    assert path.read_text() == "mine\n"
    assert run_cli("init", str(path), "--force").code == 0


def test_reference_spec_is_accepted(run_cli) -> None:
    result = run_cli("validate", str(REPO / "docs" / "cluster.reference.yaml"))
    assert result.code == 0, result.err


def test_plan_json_layout_identity(run_cli, write_spec) -> None:
    result = run_cli("plan", str(write_spec(base_spec())), "-o", "json")
    assert result.code == 0, result.err
    chosen = json.loads(result.out)["chosen"]
    assert chosen["micro"] * chosen["grad_accum"] * chosen["data_parallel"] == 16


def test_submit_refuses_what_is_not_supported_yet(run_cli, write_spec) -> None:
    spec = base_spec()
    spec["training"]["compression"] = {"distill": {"teacher": "runs/teacher/checkpoints"}}
    result = run_cli("submit", str(write_spec(spec)))
    assert result.code == 2
    assert "distilling causal LMs is not supported yet" in result.err


def test_submit_reports_an_impossible_batch_layout(run_cli, write_spec) -> None:
    spec = base_spec()
    spec["training"]["batch"] = {"global": 15, "micro": 4}
    result = run_cli("submit", str(write_spec(spec)))
    assert result.code == 2
    assert "must be divisible by the data-parallel size 2" in result.err
