"""Every kind of bad spec gets exit code 2 and a message naming the field, its line and the fix."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from tests.conftest import base_spec

DELETE = object()


def with_change(path: str, value: Any) -> dict[str, Any]:
    """The base spec with the dotted `path` set to `value` (or removed, for DELETE)."""
    spec = base_spec()
    *parents, last = path.split(".")
    node = spec
    for key in parents:
        node = node.setdefault(key, {})
    if value is DELETE:
        del node[last]
    else:
        node[last] = value
    return spec


@dataclass(frozen=True)
class Case:
    id: str
    content: Any  # dict or raw YAML text
    path: str  # field path the message must name
    message: str  # text the message must contain
    line: int | None = None  # YAML line the message must point to, when the case fixes it


VALID_HEAD = "name: ok-job\ntraining:\n  model: {preset: llama-tiny}\n"

CASES = [
    Case("empty-file", "", "(file)", "the file is empty"),
    Case("only-comments", "# nothing here\n", "(file)", "the file is empty"),
    Case("yaml-syntax", "name: a\ntraining: [unclosed\n", "(file)", "YAML syntax error"),
    Case("yaml-bad-indent", "name: a\n  training: 1\n", "(file)", "YAML syntax error", line=2),
    Case("duplicate-top-key", "name: a\nname: b\n", "name", "duplicate key (first defined on line 1)", line=2),
    Case("duplicate-nested-key", VALID_HEAD + "  max_steps: 1\n  max_steps: 2\n", "training.max_steps",
         "duplicate key", line=5),
    Case("top-level-list", "- a\n- b\n", "(top level)", "must be a mapping"),
    Case("top-level-scalar", "just text\n", "(top level)", "must be a mapping"),
    Case("missing-name", with_change("name", DELETE), "name", "required key is missing"),
    Case("missing-training", with_change("training", DELETE), "training", "required key is missing"),
    Case("missing-max-steps", with_change("training.max_steps", DELETE), "training.max_steps", "required"),
    Case("missing-batch", with_change("training.batch", DELETE), "training.batch", "required"),
    Case("missing-data-train", with_change("training.data.train", DELETE), "training.data.train", "required"),
    Case("typo-top-key", {**base_spec(), "backnd": "ray"}, "backnd", "did you mean 'backend'"),
    Case("typo-nested-key", with_change("training.optimzer", {"lr": 1}), "training.optimzer",
         "did you mean 'optimizer'"),
    Case("typo-resources-key", with_change("resources.gpus_per_nod", 2), "resources.gpus_per_nod",
         "did you mean 'gpus_per_node'"),
    Case("unknown-key-lists-valid", with_change("training.zero.colour", "red"), "training.zero.colour",
         "valid keys here"),
    Case("name-uppercase", with_change("name", "MyJob"), "name", "DNS-1035"),
    Case("name-underscore", with_change("name", "my_job"), "name", "DNS-1035"),
    Case("name-too-long", with_change("name", "a" * 41), "name", "at most 40 characters"),
    Case("name-trailing-dash", with_change("name", "job-"), "name", "DNS-1035"),
    Case("backend-unknown", with_change("backend", "horovod"), "backend", "'deepspeed' or 'ray'"),
    Case("target-unknown", with_change("target", "slurm"), "target", "'local' or 'kubernetes'"),
    Case("kubernetes-without-image", with_change("target", "kubernetes"), "(top level)", "needs `image:`"),
    Case("image-bad-form", {**with_change("target", "kubernetes"), "image": "Not An Image"}, "image",
         "not a valid image reference"),
    Case("nodes-zero", with_change("resources.nodes", 0), "resources.nodes", "greater than or equal to 1"),
    Case("nodes-absurd", with_change("resources.nodes", 10**9), "resources.nodes", "less than or equal to"),
    Case("nodes-string", with_change("resources.nodes", "four"), "resources.nodes", "valid integer"),
    Case("nodes-float", with_change("resources.nodes", 2.5), "resources.nodes", "integer"),
    Case("gpus-negative", with_change("resources.gpus_per_node", -1), "resources.gpus_per_node",
         "greater than or equal to 0"),
    Case("gpu-type-unknown", with_change("resources.gpu_type", "H100-80G"), "resources.gpu_type",
         "did you mean 'H100-80GB'"),
    Case("memory-not-quantity", with_change("resources.memory", "lots"), "resources.memory",
         "Kubernetes quantity"),
    Case("shm-absurd", with_change("resources.shm", "900Pi"), "resources.shm", "out of range"),
    Case("cpu-negative", with_change("resources.cpu", -4), "resources.cpu", "out of range"),
    Case("preset-unknown", with_change("training.model.preset", "llama-9000"), "training.model.preset",
         "unknown preset"),
    Case("model-two-sources", with_change("training.model.pretrained", "/models/x"), "training.model",
         "exactly one of preset, pretrained or factory"),
    Case("model-no-source", with_change("training.model", {"type": "causal-lm"}), "training.model",
         "exactly one of"),
    Case("classifier-without-labels", with_change("training.model.type", "sequence-classification"),
         "training.model", "needs num_labels"),
    Case("factory-bad-form", with_change("training.model", {"factory": "not a ref"}), "training.model.factory",
         "package.module:function"),
    Case("seq-len-tiny", with_change("training.data.seq_len", 2), "training.data.seq_len",
         "greater than or equal to 8"),
    Case("data-path-missing", with_change("training.data.train", "/no/such/corpus.txt"), "training.data.train",
         "no such file"),
    Case("data-glob-no-match", with_change("training.data.train", "/tmp/nothing-*.zzz"), "training.data.train",
         "no such file, directory or glob match"),
    Case("data-bad-scheme", with_change("training.data.train", "gs://bucket/x"), "training.data.train",
         "local path, file:// or s3://"),
    Case("s3-bad-bucket", with_change("training.checkpoint", {"uri": "s3://Bad_Bucket/x"}),
         "training.checkpoint.uri", "not a valid S3 URI"),
    Case("batch-zero", with_change("training.batch", {"global": 0}), "training.batch.global",
         "greater than or equal to 1"),
    Case("micro-above-global", with_change("training.batch", {"global": 4, "micro": 8}), "training.batch",
         "cannot exceed global"),
    Case("max-steps-text", with_change("training.max_steps", "ten"), "training.max_steps", "valid integer"),
    Case("lr-negative", with_change("training.optimizer", {"lr": -0.1}), "training.optimizer.lr",
         "greater than 0"),
    Case("betas-out-of-range", with_change("training.optimizer", {"betas": [0.9, 1.5]}),
         "training.optimizer.betas", "in [0, 1)"),
    Case("betas-wrong-length", with_change("training.optimizer", {"betas": [0.9]}), "training.optimizer.betas",
         "too few items"),
    Case("optimizer-unknown", with_change("training.optimizer", {"name": "sgd"}), "training.optimizer.name",
         "'adamw'"),
    Case("precision-unknown", with_change("training.precision", "fp8"), "training.precision", "'bf16'"),
    Case("zero-stage-five", with_change("training.zero", {"stage": 5}), "training.zero.stage",
         "0, 1, 2, 3 or auto"),
    Case("zero-stage-word", with_change("training.zero", {"stage": "three"}), "training.zero.stage",
         "0, 1, 2, 3 or auto"),
    Case("offload-params-stage2", with_change("training.zero", {"stage": 2, "offload_params": True}),
         "training.zero", "offload_params needs stage 3"),
    Case("offload-optimizer-stage0", with_change("training.zero", {"stage": 0, "offload_optimizer": True}),
         "training.zero", "needs stage 1, 2 or 3"),
    Case("warmup-beyond-run", with_change("training.schedule", {"warmup_steps": 100}), "training",
         "exceeds max_steps"),
    Case("decay-unknown", with_change("training.schedule", {"decay": "exponential"}), "training.schedule.decay",
         "'cosine'"),
    Case("early-stopping-mode", with_change("training.eval", {"early_stopping": {"mode": "lowest"}}),
         "training.eval.early_stopping.mode", "'min' or 'max'"),
    Case("keep-last-zero", with_change("training.checkpoint", {"keep_last": 0}), "training.checkpoint.keep_last",
         "greater than or equal to 1"),
    Case("wandb-mode-unknown", with_change("training.tracking", {"wandb": {"mode": "sometimes"}}),
         "training.tracking.wandb.mode", "'auto'"),
    Case("export-unknown", with_change("training.compression", {"export": ["tflite"]}),
         "training.compression.export.0", "'onnx', 'torchscript' or 'hf'"),
    Case("keep-float-negative", with_change("training.compression", {"quantize": {"keep_float_layers": -1}}),
         "training.compression.quantize.keep_float_layers", "greater than or equal to 0"),
    Case("secret-in-env", with_change("kubernetes", {"env": {"AWS_SECRET_ACCESS_KEY": "abc"}}),
         "kubernetes.env", "kubernetes.secrets"),
    Case("namespace-invalid", with_change("kubernetes", {"namespace": "ML_Team"}), "kubernetes.namespace",
         "DNS-1123"),
    Case("toleration-bad-operator", with_change("kubernetes", {"tolerations": [{"operator": "Maybe"}]}),
         "kubernetes.tolerations.0.operator", "'Exists' or 'Equal'"),
    Case("label-value-too-long", with_change("kubernetes", {"labels": {"team": "x" * 70}}), "kubernetes.labels",
         "not a valid label value"),
    Case("training-is-list", with_change("training", [1, 2]), "training", "valid dictionary"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_spec_reports_field_and_exits_2(case: Case, run_cli, write_spec) -> None:
    path = write_spec(case.content)
    result = run_cli("validate", str(path))
    assert result.code == 2, result.err
    assert "Traceback" not in result.err
    assert f": {case.path}: " in result.err, result.err
    assert case.message in result.err, result.err
    if case.line is not None:
        assert f"{path}:{case.line}: {case.path}" in result.err


def test_there_are_at_least_forty_cases() -> None:
    assert len({c.id for c in CASES}) == len(CASES) >= 40


def test_every_problem_is_reported_at_once_with_lines(run_cli, write_spec) -> None:
    text = (
        "name: Bad_Name\n"
        "backnd: deepspeed\n"
        "resources:\n"
        "  nodes: 0\n"
        "training:\n"
        "  model: {preset: llama-tiny}\n"
        "  data: {train: /no/such/file.txt}\n"
        "  batch: {global: 8}\n"
        "  max_steps: -1\n"
    )
    path = write_spec(text)
    result = run_cli("validate", str(path))
    assert result.code == 2
    for line, field in [(1, "name"), (2, "backnd"), (4, "resources.nodes"), (7, "training.data.train"),
                        (9, "training.max_steps")]:
        assert f"{path}:{line}: {field}:" in result.err, result.err
    assert "has 5 problems" in result.err


@pytest.mark.parametrize("problem", ["missing", "directory", "unreadable"])
def test_unreadable_spec_file_is_a_clean_error(problem: str, run_cli, tmp_path) -> None:
    path = tmp_path / "spec.yaml"
    if problem == "directory":
        path.mkdir()
    elif problem == "unreadable":
        path.write_bytes(b"\xff\xfe\x00bad")
    result = run_cli("validate", str(path))
    assert result.code == 2
    assert "Traceback" not in result.err
    assert str(path) in result.err
