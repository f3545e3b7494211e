"""What `dlaunch render` and `dlaunch submit --dry-run` print: the job's objects as text.

Formats: `yaml` (multi-document, in apply order), `json` (a `v1` `List`, kubectl-applicable)
and `helm-values` (values for `helm/dlaunch`). Output is deterministic: same spec, same bytes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from launcher.errors import SpecError
from launcher.spec import JobSpec, load_spec
from launcher.targets.kubernetes.checks import check_renderable
from launcher.targets.kubernetes.helm_values import helm_values
from launcher.targets.kubernetes.render import plan_for_render, render

FORMATS = ("yaml", "json", "helm-values")
FILE_SUFFIXES = {"yaml": ".yaml", "json": ".json", "helm-values": ".values.yaml"}


class _BlockDumper(yaml.SafeDumper):
    """Multi-line strings (job JSON, scripts) as literal blocks; no anchors for repeated dicts."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _represent_str)


def dump_yaml(data: Any) -> str:
    """One YAML document, keys in construction order (apiVersion, kind, metadata, spec)."""
    return yaml.dump(data, Dumper=_BlockDumper, sort_keys=False, default_flow_style=False, width=120,
                     allow_unicode=True)


def objects_to_yaml(objects: list[dict[str, Any]]) -> str:
    return "".join("---\n" + dump_yaml(obj) for obj in objects)


def objects_to_json(objects: list[dict[str, Any]]) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}, indent=2, sort_keys=True) + "\n"


def values_to_yaml(spec: JobSpec, values: dict[str, Any]) -> str:
    header = (f"# Helm values for job {spec.name}, written by `dlaunch render --format helm-values`.\n"
              f"# helm template {spec.name} helm/dlaunch -f THIS-FILE  renders what `dlaunch render` prints.\n")
    return header + dump_yaml(values)


def render_spec_documents(spec: JobSpec, fmt: str = "yaml", source: str = "") -> str:
    """The text for a loaded spec; `source` names the spec file in errors."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    try:
        check_renderable(spec)  # before planning, which may read a pretrained model's config
        plan = plan_for_render(spec)
        if fmt == "helm-values":
            return values_to_yaml(spec, helm_values(spec, plan))
        objects = render(spec, plan)
    except SpecError as exc:
        raise SpecError(exc.problems, exc.source or source) from None
    return objects_to_yaml(objects) if fmt == "yaml" else objects_to_json(objects)


def render_documents(spec_file_or_spec: str | Path | JobSpec, fmt: str = "yaml") -> str:
    """The exact text `render` prints (and `submit --dry-run` shows) for a spec file or spec."""
    if isinstance(spec_file_or_spec, JobSpec):
        return render_spec_documents(spec_file_or_spec, fmt)
    return render_spec_documents(load_spec(spec_file_or_spec).spec, fmt, str(spec_file_or_spec))
