"""`validate` knows everything `render` and `submit` would refuse without the network or a model file.

Each case below was called valid by `dlaunch validate` and refused only later (by `render`,
`submit`, or a worker after the pods had started). Now the one check they share
(`launcher.spec.spec_problems`) reports it at `validate`, with its field and YAML line, and
`render` refuses it with the same words.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import pytest

from launcher.errors import SpecError
from launcher.spec import MAX_NAME, JobSpec, load_spec_text, spec_problems
from launcher.targets.kubernetes.checks import check_renderable, derived_name_problems, derived_names
from tests.conftest import REPO

K8S: dict[str, Any] = {
    "name": "consistent",
    "target": "kubernetes",
    "image": "registry.example.com/ml/dlaunch:1",
    "resources": {"nodes": 2, "gpus_per_node": 4, "cpu": 32, "memory": "256Gi", "shm": "16Gi"},
    "kubernetes": {"namespace": "unit", "secrets": {"s3": "s3-credentials"}},
    "training": {
        "model": {"preset": "llama-tiny"},
        "data": {"train": "s3://unit-bucket/train/", "seq_len": 128},
        "batch": {"global": 64, "micro": 2},
        "max_steps": 10,
        "zero": {"stage": 2},
        "checkpoint": {"uri": "s3://unit-bucket/runs"},
    },
}


def changed(*changes: tuple[str, Any]) -> dict[str, Any]:
    """The Kubernetes spec above with each dotted path set to a value (None deletes it)."""
    data = copy.deepcopy(K8S)
    for path, value in changes:
        *parents, last = path.split(".")
        node = data
        for key in parents:
            node = node.setdefault(key, {})
        if value is None:
            node.pop(last, None)
        else:
            node[last] = value
    return data


@dataclass(frozen=True)
class Case:
    id: str
    content: dict[str, Any]
    path: str
    message: str


CASES = [
    Case("global-not-divisible", changed(("training.batch", {"global": 60})), "training.batch.global",
         "must be divisible by the data-parallel size 8"),
    Case("micro-does-not-divide", changed(("training.batch", {"global": 64, "micro": 3})), "training.batch.micro",
         "must divide global / data-parallel = 64 / 8 = 8"),
    Case("shm-not-below-memory", changed(("resources.shm", "300Gi")), "resources.shm",
         "must be smaller than resources.memory"),
    Case("kubernetes-without-cpu", changed(("resources.cpu", None)), "resources.cpu",
         "required to render Kubernetes objects"),
    Case("kubernetes-without-memory", changed(("resources.memory", None)), "resources.memory",
         "required to render Kubernetes objects"),
    Case("deepspeed-train-batch-size", changed(("training.deepspeed", {"train_batch_size": 32})),
         "training.deepspeed.train_batch_size", "contradicts the 64 dlaunch derives from training.batch"),
    Case("deepspeed-micro", changed(("training.deepspeed", {"train_micro_batch_size_per_gpu": 4})),
         "training.deepspeed.train_micro_batch_size_per_gpu", "contradicts the 2"),
    Case("deepspeed-accumulation", changed(("training.deepspeed", {"gradient_accumulation_steps": 2})),
         "training.deepspeed.gradient_accumulation_steps", "contradicts the 4"),
    Case("deepspeed-micro-chosen-by-planner",
         changed(("training.batch", {"global": 64}), ("training.deepspeed", {"train_micro_batch_size_per_gpu": 4})),
         "training.deepspeed.train_micro_batch_size_per_gpu", "set training.batch.micro instead"),
    Case("deepspeed-zero-stage", changed(("training.deepspeed", {"zero_optimization": {"stage": 3}})),
         "training.deepspeed.zero_optimization.stage", "contradicts training.zero.stage (2)"),
    Case("deepspeed-offload", changed(("training.deepspeed", {"zero_optimization": {
        "offload_optimizer": {"device": "cpu"}}})), "training.deepspeed.zero_optimization.offload_optimizer",
         "set training.zero.offload_optimizer instead"),
    Case("deepspeed-bucket-not-a-number", changed(("training.deepspeed", {"zero_optimization": {
        "reduce_bucket_size": "big"}})), "training.deepspeed.zero_optimization.reduce_bucket_size",
         "must be a positive number of elements"),
    Case("deepspeed-precision", changed(("training.deepspeed", {"fp16": {"enabled": True}})),
         "training.deepspeed.fp16.enabled", "contradicts training.precision (bf16)"),
    Case("deepspeed-clipping", changed(("training.deepspeed", {"gradient_clipping": 0.5})),
         "training.deepspeed.gradient_clipping", "set training.optimizer.grad_clip instead"),
    Case("deepspeed-optimizer-ignored", changed(("training.deepspeed", {"optimizer": {"type": "Adam"}})),
         "training.deepspeed.optimizer", "has no effect"),
    Case("s3-single-colon", changed(("training.checkpoint", {"uri": "s3:unit-bucket/runs"})),
         "training.checkpoint.uri", "malformed s3 URI"),
    Case("s3-single-slash", changed(("training.data", {"train": "s3:/unit-bucket/train"})),
         "training.data.train", "malformed s3 URI"),
    Case("s3-uppercase-scheme", changed(("training.model", {"pretrained": "S3://models/llama"})),
         "training.model.pretrained", "malformed s3 URI"),
    Case("s3-double-dot-bucket", changed(("training.checkpoint", {"uri": "s3://unit..bucket/runs"})),
         "training.checkpoint.uri", "not a valid S3 URI"),
    Case("s3-dot-dot-key", changed(("training.checkpoint", {"uri": "s3://unit-bucket/a/../b"})),
         "training.checkpoint.uri", "'..' segment"),
    Case("file-uri-relative", changed(("training.checkpoint", {"uri": "file://runs"})),
         "training.checkpoint.uri", "file:///absolute/path"),
    Case("name-starts-with-digit", changed(("name", "7b-sft")), "name", "must start with a letter"),
    Case("multi-node-local-checkpoint", changed(("training.checkpoint", {"uri": "/scratch/checkpoints"})),
         "training.checkpoint.uri", "a 2-node job on Kubernetes needs checkpoint storage all pods share"),
    Case("multi-node-ray-local-checkpoint",
         changed(("backend", "ray"), ("training.checkpoint", {"uri": "file:///mnt/checkpoints"})),
         "training.checkpoint.uri", "needs checkpoint storage all pods share"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_validate_refuses_what_render_would(case: Case, run_cli, write_spec) -> None:
    path = write_spec(case.content)
    for command in (["validate"], ["render"], ["submit", "--dry-run"]):
        result = run_cli(*command, str(path))
        assert result.code == 2, f"{command}: {result.out}{result.err}"
        assert "Traceback" not in result.err
        assert f": {case.path}: " in result.err, result.err
        assert case.message in result.err, result.err


def test_the_base_case_is_valid_and_renders(run_cli, write_spec) -> None:
    path = write_spec(K8S)
    assert run_cli("validate", str(path)).code == 0
    for command in (["render"], ["submit", "--dry-run"]):
        result = run_cli(*command, str(path))
        assert result.code == 0, result.err
        assert "kind: Job" in result.out


def test_every_problem_is_reported_at_once_with_its_line(run_cli, write_spec) -> None:
    text = (
        "name: all-at-once\n"
        "target: kubernetes\n"
        "image: registry.example.com/ml/dlaunch:1\n"
        "resources: {nodes: 2, gpus_per_node: 4, memory: 8Gi, shm: 16Gi}\n"
        "training:\n"
        "  model: {preset: llama-tiny}\n"
        "  data: {train: 's3://unit-bucket/train/'}\n"
        "  batch: {global: 60}\n"
        "  max_steps: 10\n"
        "  deepspeed:\n"
        "    gradient_clipping: 3.0\n"
        "  checkpoint: {uri: /scratch/checkpoints}\n"
    )
    path = write_spec(text)
    result = run_cli("validate", str(path))
    assert result.code == 2
    for line, field in [(4, "resources.cpu"), (4, "resources.shm"), (8, "training.batch.global"),
                        (11, "training.deepspeed.gradient_clipping"), (12, "training.checkpoint.uri")]:
        assert f"{path}:{line}: {field}:" in result.err, result.err
    assert "has 5 problems" in result.err


def test_the_same_function_guards_render_for_specs_built_in_code() -> None:
    spec = JobSpec.model_validate(changed(("resources.cpu", None), ("training.deepspeed", {"train_batch_size": 8})))
    expected = {p.path for p in spec_problems(spec)}
    assert expected == {"resources.cpu", "training.deepspeed.train_batch_size"}
    with pytest.raises(SpecError) as refused:
        check_renderable(spec)
    assert {p.path for p in refused.value.problems} == expected


KUBERNETES_EXAMPLES = [p for p in sorted((REPO / "examples").glob("*.yaml")) if "target: kubernetes" in p.read_text()]


@pytest.mark.parametrize("example", KUBERNETES_EXAMPLES, ids=lambda p: p.stem)
def test_every_kubernetes_example_validates_and_renders(example, run_cli) -> None:
    """The converse: what `validate` calls valid, `render` renders (without the network)."""
    assert run_cli("validate", str(example)).code == 0
    result = run_cli("render", str(example))
    assert result.code == 0, result.err


# --- names ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["7b-sft", "0", "1-job"])
def test_names_starting_with_a_digit_are_refused_everywhere(name: str) -> None:
    """A Service or RayJob named `7b-sft` gets a 422 / ValidationFailed; refuse it before anything exists."""
    for target in ("local", "kubernetes"):
        with pytest.raises(SpecError, match="must start with a letter"):
            load_spec_text(_yaml(changed(("name", name), ("target", target))))


@pytest.mark.parametrize("backend", ["deepspeed", "ray"])
def test_the_longest_name_fits_every_derived_name_at_the_largest_size(backend: str) -> None:
    spec = JobSpec.model_validate(changed(("name", "a" * MAX_NAME), ("backend", backend),
                                          ("resources.nodes", 16_384), ("kubernetes.namespace", "n" * 63),
                                          ("training.batch", {"global": 16_384 * 4 * 2, "micro": 2})))
    assert derived_name_problems(spec) == []
    names = {what.split(" ")[0]: name for what, name, _, _ in derived_names(spec)}
    assert names["ConfigMap"] == "a" * MAX_NAME + "-config"
    if backend == "ray":
        assert len(names["RayJob"]) <= 47 and len(names["RayCluster"]) <= 53
    else:
        assert names["hostname"] == "a" * MAX_NAME + "-16383"


@pytest.mark.parametrize("backend,too_long", [("deepspeed", "hostname of pod 1"), ("ray", "RayJob")])
def test_derived_names_over_their_limit_are_reported(backend: str, too_long: str) -> None:
    """KubeRay caps RayJob names at 47 characters; a pod hostname `<job>-<index>` at 63."""
    spec = JobSpec.model_validate(changed(("backend", backend)))
    spec = spec.model_copy(update={"name": "j" * 62})  # past the spec's own limit, to exercise the check
    messages = [p.message for p in derived_name_problems(spec)]
    assert any(too_long in m for m in messages), messages


# --- checkpoints on Kubernetes ----------------------------------------------------------------

def test_a_single_node_job_may_keep_checkpoints_in_the_pod_with_a_note() -> None:
    loaded = load_spec_text(_yaml(changed(("resources.nodes", 1), ("training.batch", {"global": 8, "micro": 2}),
                                          ("training.checkpoint", {"uri": "/scratch/checkpoints"}))))
    assert any("lost with the pod" in note for note in loaded.notes)


def test_a_local_multi_node_job_shares_this_machines_disk() -> None:
    data = changed(("target", "local"), ("training.checkpoint", {"uri": "runs"}),
                   ("training.data", {"train": str(REPO / "README.md")}))
    assert load_spec_text(_yaml(data)).spec.resources.nodes == 2


def _yaml(data: dict[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False)
