"""`render` of a spec whose pretrained model lives on S3, on a machine without S3 credentials.

A GitOps pipeline renders manifests and has no credentials. Before, `render` read the model's
config.json to count parameters even when the spec fixed the layout, and failed with a wrapped
botocore message. Now a fixed layout renders offline with a note that the memory check was
skipped, and a layout that needs the count names the missing credentials.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from launcher import plan as planner
from launcher.errors import PlanError
from launcher.spec import JobSpec
from training.config import BatchLayout

SPEC: dict[str, Any] = {
    "name": "s3-model",
    "target": "kubernetes",
    "image": "registry.example.com/ml/dlaunch:1",
    "resources": {"nodes": 2, "gpus_per_node": 8, "gpu_type": "H100-80GB", "cpu": 96, "memory": "1000Gi"},
    "training": {
        "model": {"pretrained": "s3://models-bucket/llama-8b"},
        "data": {"train": "s3://data-bucket/train/", "seq_len": 2048},
        "batch": {"global": 256, "micro": 4},
        "max_steps": 10,
        "zero": {"stage": 3},
        "checkpoint": {"uri": "s3://ckpt-bucket/runs"},
    },
}
CREDENTIAL_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                        "AWS_DEFAULT_PROFILE", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN",
                        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI")


@pytest.fixture
def no_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No S3 credentials anywhere boto3 looks, and nothing it could reach (metadata service off)."""
    for name in CREDENTIAL_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # discard port: nothing answers
    return monkeypatch


def spec_data(**batch: Any) -> dict[str, Any]:
    data = copy.deepcopy(SPEC)
    data["training"]["batch"] = {"global": 256, **batch}
    return data


def test_a_fixed_layout_renders_offline_and_says_the_memory_check_was_skipped(no_credentials, run_cli,
                                                                             write_spec) -> None:
    def must_not_read(uri: str) -> dict[str, Any]:
        raise AssertionError(f"render read {uri}")

    no_credentials.setattr(planner.introspect, "read_pretrained_config", must_not_read)
    result = run_cli("render", str(write_spec(spec_data(micro=4))))
    assert result.code == 0, result.err
    assert "kind: Job" in result.out
    assert '"micro": 4' in result.out and '"grad_accum": 4' in result.out
    assert "note: memory check skipped" in result.err
    assert "s3://models-bucket/llama-8b/config.json was not read" in result.err


def test_a_layout_left_to_the_planner_names_the_missing_credentials(no_credentials, run_cli, write_spec) -> None:
    result = run_cli("render", str(write_spec(spec_data())))
    assert result.code == 2
    assert "Traceback" not in result.err
    assert "needs S3 credentials: none were found" in result.err, result.err
    assert "AWS_ACCESS_KEY_ID" in result.err and "AWS_SECRET_ACCESS_KEY" in result.err
    assert "set training.batch.micro" in result.err


def test_partial_credentials_say_which_part_is_missing(no_credentials, run_cli, write_spec) -> None:
    no_credentials.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLEEXAMPLE00")
    result = run_cli("render", str(write_spec(spec_data())))
    assert result.code == 2
    assert "only some were found" in result.err and "AWS_SECRET_ACCESS_KEY" in result.err


def test_the_fixed_layout_is_the_one_the_planner_would_choose() -> None:
    """Same layout with or without the model: for a preset the planner can count offline."""
    for batch, stage, gpu in [({"micro": 4}, 3, "H100-80GB"), ({}, "auto", None), ({"micro": 2}, "auto", None)]:
        data = spec_data(**batch)
        data["training"]["model"] = {"preset": "llama-125m"}
        data["training"]["zero"] = {"stage": stage}
        data["resources"].pop("gpu_type")
        if gpu:
            data["resources"]["gpu_type"] = gpu
        spec = JobSpec.model_validate(data)
        assert planner.fixed_layout(spec) == planner.plan_job(spec).layout


def test_no_fixed_layout_when_the_planner_chooses_by_memory() -> None:
    spec = JobSpec.model_validate(spec_data())
    assert planner.fixed_layout(spec) is None
    assert planner.skipped_memory_check(spec) is None


def test_plan_batch_reads_nothing_when_the_layout_is_fixed(monkeypatch: pytest.MonkeyPatch) -> None:
    def unreachable(uri: str) -> dict[str, Any]:
        raise PlanError(f"unreachable {uri}")

    monkeypatch.setattr(planner.introspect, "read_pretrained_config", unreachable)
    spec = JobSpec.model_validate(spec_data(micro=4))
    assert planner.plan_batch(spec) == BatchLayout(micro=4, grad_accum=4, data_parallel=16, zero_stage=3)
    with pytest.raises(PlanError, match="unreachable"):
        planner.plan_job(spec)  # `dlaunch plan` and `submit` still check memory
