"""The Helm chart: `helm lint --strict`, and `helm template` with the values `dlaunch render
--format helm-values` writes yields the objects `dlaunch render` prints, for every example."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from conftest_k8s import (
    CHART, EXAMPLES, INSTALL_HELM, KUBERNETES_EXAMPLES, UPDATE_GOLDEN, helm, helm_binary, load_example, object_key,
    validate_object,
)
from launcher.targets.kubernetes.documents import render_documents

EXAMPLE_IDS = [p.stem for p in KUBERNETES_EXAMPLES]
DEFAULT_JOB = EXAMPLES / "kind-quickstart.yaml"


@pytest.fixture(scope="session")
def helm_path() -> str:
    """Helm v4, installed into .tools/bin by scripts/install_helm.sh when not on PATH."""
    return helm_binary()


def values_file(example: Path, directory: Path) -> Path:
    path = directory / f"{example.stem}.values.yaml"
    path.write_text(render_documents(example, "helm-values"))
    return path


def by_key(objects: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    keyed = {object_key(obj): obj for obj in objects}
    assert len(keyed) == len(objects), "two objects share a kind and name"
    return keyed


@pytest.mark.slow
def test_lint_strict_with_the_default_values(helm_path: str) -> None:
    out = helm("lint", "--strict", str(CHART))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 chart(s) failed" in out.stdout


@pytest.mark.slow
@pytest.mark.parametrize("example", KUBERNETES_EXAMPLES, ids=EXAMPLE_IDS)
def test_lint_strict_with_each_example(helm_path: str, example: Path, tmp_path: Path) -> None:
    out = helm("lint", "--strict", str(CHART), "-f", str(values_file(example, tmp_path)))
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.slow
@pytest.mark.parametrize("example", KUBERNETES_EXAMPLES, ids=EXAMPLE_IDS)
def test_chart_renders_the_objects_dlaunch_renders(helm_path: str, example: Path, tmp_path: Path) -> None:
    spec = load_example(example)
    out = helm("template", spec.name, str(CHART), "-f", str(values_file(example, tmp_path)))
    assert out.returncode == 0, out.stderr
    from_helm = by_key([doc for doc in yaml.safe_load_all(out.stdout) if doc])
    from_dlaunch = by_key([doc for doc in yaml.safe_load_all(render_documents(example)) if doc])
    assert sorted(from_helm) == sorted(from_dlaunch)
    for key, obj in from_dlaunch.items():
        assert from_helm[key] == obj, f"{key[0]} {key[1]} differs between helm template and dlaunch render"
        validate_object(from_helm[key])


BAD_VALUES = {
    "zero-nodes": ({"nodes": 0}, "nodes"),
    "unknown-backend": ({"backend": "slurm"}, "backend"),
    "misspelt-key": ({"gpuPerNode": 8}, "gpuPerNode"),
    "secret-value-in-secrets": ({"secrets": {"s3": "AKIA/not-a-name"}}, "s3"),
}


@pytest.mark.slow
@pytest.mark.parametrize("values,field", BAD_VALUES.values(), ids=BAD_VALUES.keys())
def test_values_schema_is_enforced(helm_path: str, values: dict[str, Any], field: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(values))
    out = helm("template", "bad", str(CHART), "-f", str(bad))
    assert out.returncode != 0
    assert "schema" in out.stderr and field in out.stderr


@pytest.mark.slow
def test_install_script_is_idempotent(helm_path: str) -> None:
    runs = [subprocess.run(["bash", str(INSTALL_HELM)], capture_output=True, text=True, timeout=600, check=True)
            for _ in range(2)]
    paths = {run.stdout.strip() for run in runs}
    assert len(paths) == 1
    version = subprocess.run([paths.pop(), "version", "--short"], capture_output=True, text=True, check=True)
    assert version.stdout.startswith("v4.")


def refreshed_defaults(text: str, values: dict[str, Any]) -> str:
    """values.yaml with the spec hash and job JSON of the default job replaced, comments kept."""
    text = re.sub(r"(?m)^specHash: .*$", f"specHash: {values['specHash']}", text)
    head = text[:text.index("jobJson: |")]
    body = "".join(f"  {line}\n" if line else "\n" for line in values["jobJson"].splitlines())
    return f"{head}jobJson: |\n{body}"


def test_chart_defaults_are_the_kind_quickstart_job() -> None:
    """All but the Secret names: those stay empty (see test_chart_default_maps_are_empty)."""
    values_path = CHART / "values.yaml"
    expected = yaml.safe_load(render_documents(DEFAULT_JOB, "helm-values"))
    expected["secrets"] = {name: None for name in expected["secrets"]}
    if UPDATE_GOLDEN:
        values_path.write_text(refreshed_defaults(values_path.read_text(), expected))
    assert yaml.safe_load(values_path.read_text()) == expected, (
        "helm/dlaunch/values.yaml is not the helm-values of examples/kind-quickstart.yaml; "
        "rerun with DLAUNCH_UPDATE_GOLDEN=1 to refresh its specHash and jobJson")


def test_chart_default_maps_are_empty() -> None:
    """Helm merges -f maps into the defaults key by key: a default entry would reach every job."""
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    tuning = ("ray", "rendezvous")
    maps = {key: value for key, value in defaults.items() if isinstance(value, dict) and key not in tuning}
    assert maps == {"nodeSelector": {}, "labels": {}, "env": {}, "secrets": {"s3": None, "wandb": None},
                    "networkPolicy": {"enabled": True, "egress": None}}


def test_chart_default_values_satisfy_the_schema() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.Draft7Validator(schema).validate(yaml.safe_load((CHART / "values.yaml").read_text()))


VARIANTS = {
    "ray-without-ttl": ("ray", {}),
    "deepspeed-long-grace": ("deepspeed", {"termination_grace": 300, "ttl_after_finished": None}),
    "ray-zero-ttl": ("ray", {"ttl_after_finished": 0}),
    "deepspeed-restricted-egress": ("deepspeed", {"network_policy": {"egress": ["10.0.0.0/8", "52.216.0.0/15"]}}),
    "ray-restricted-egress-no-cidrs": ("ray", {"network_policy": {"egress": []}}),
    "deepspeed-no-network-policy": ("deepspeed", {"network_policy": False}),
}


@pytest.mark.slow
@pytest.mark.parametrize("backend,kubernetes", VARIANTS.values(), ids=VARIANTS.keys())
def test_chart_computes_defaults_as_dlaunch_does(helm_path: str, backend: str, kubernetes: dict[str, Any],
                                                 tmp_path: Path) -> None:
    """Values the chart derives (the Ray TTL when unset, torch elastic's shutdown window) match."""
    from conftest_k8s import small_spec_data, spec_of

    data = small_spec_data(backend)
    data["kubernetes"].update(kubernetes)
    data["training"]["checkpoint"] = {"uri": "s3://unit-bucket/checkpoints"}
    spec = spec_of(data)
    values = tmp_path / "values.yaml"
    values.write_text(render_documents(spec, "helm-values"))
    out = helm("template", spec.name, str(CHART), "-f", str(values))
    assert out.returncode == 0, out.stderr
    from_helm = by_key([doc for doc in yaml.safe_load_all(out.stdout) if doc])
    assert from_helm == by_key([doc for doc in yaml.safe_load_all(render_documents(spec)) if doc])
