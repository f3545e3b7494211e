"""Rendering cost against job size: `dlaunch render` vs `helm template` of the same job.

The job is examples/deepspeed-zero3.yaml at 2 and at 1,024 nodes of 8 GPUs (the global batch
scaled to keep 4 sequences per rank). Both are timed as the user runs them, as processes
(median wall time); `helm template` gets the values `dlaunch render --format helm-values`
writes. An Indexed Job keeps the object count independent of the node count, so both
should stay flat. The lines before the last also show the in-process render time, without the
interpreter's start-up. Helm comes from PATH or scripts/install_helm.sh.

Last line: {"nodes_2": {"dlaunch_s": ..., "helm_s": ...}, "nodes_1024": {...}}.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "deepspeed-zero3.yaml"
CHART = REPO / "helm" / "dlaunch"
NODE_COUNTS = (2, 1024)
RUNS = 7


def find_helm() -> str:
    """Helm v4 from PATH, else the one scripts/install_helm.sh provides."""
    on_path = shutil.which("helm")
    if on_path:
        version = subprocess.run([on_path, "version", "--short"], capture_output=True, text=True).stdout
        if version.startswith("v4."):
            return on_path
    script = REPO / "scripts" / "install_helm.sh"
    out = subprocess.run(["bash", str(script)], capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1]


def write_job(directory: Path, nodes: int) -> tuple[Path, Path]:
    """The example at `nodes` nodes, and its Helm values."""
    data = yaml.safe_load(EXAMPLE.read_text())
    data["resources"]["nodes"] = nodes
    batch = data["training"]["batch"]
    batch["global"] = nodes * data["resources"]["gpus_per_node"] * batch["micro"]
    spec = directory / f"job-{nodes}.yaml"
    spec.write_text(yaml.safe_dump(data, sort_keys=False))
    values = directory / f"job-{nodes}.values.yaml"
    with values.open("w") as out:
        subprocess.run([sys.executable, "-m", "launcher.cli", "render", str(spec), "--format", "helm-values"],
                       cwd=REPO, stdout=out, check=True)
    return spec, values


def median_wall_time(command: list[str]) -> tuple[float, str]:
    """Median seconds over RUNS (after one warm-up run) and the command's output."""
    output = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=True).stdout
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        subprocess.run(command, cwd=REPO, capture_output=True, check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times), output


def in_process_render_time(spec_file: Path) -> float:
    """Median seconds of load + plan + render + serialise inside this process."""
    from launcher.spec import load_spec
    from launcher.targets.kubernetes.documents import render_spec_documents

    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        render_spec_documents(load_spec(spec_file).spec)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def count_objects(text: str) -> int:
    return sum(1 for doc in yaml.safe_load_all(text) if doc)


def main() -> None:
    helm = find_helm()
    figures: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for nodes in NODE_COUNTS:
            spec, values = write_job(Path(tmp), nodes)
            ours, our_text = median_wall_time([sys.executable, "-m", "launcher.cli", "render", str(spec)])
            helm_command = [helm, "template", "llama-350m-zero3", str(CHART), "-f", str(values)]
            theirs, helm_text = median_wall_time(helm_command)
            inside = in_process_render_time(spec)
            print(f"{nodes:5} nodes: dlaunch render {ours * 1000:7.1f} ms ({count_objects(our_text)} objects, "
                  f"{len(our_text)} bytes; in-process {inside * 1000:5.1f} ms)   helm template "
                  f"{theirs * 1000:7.1f} ms ({count_objects(helm_text)} objects)   median of {RUNS}")
            figures[f"nodes_{nodes}"] = {"dlaunch_s": round(ours, 4), "helm_s": round(theirs, 4)}
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
