"""Requests `dlaunch submit` sends to the API server for a 2-node and a 1,024-node GPU job.

Goal: constant in the number of nodes (an Indexed Job is one object whatever its size; pre-flight
lists nodes once). Counted by the fake API server of tests/fake_kube, which the official client
reaches over real HTTP. Last line: {"nodes_2": requests, "nodes_1024": requests}.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from launcher.spec import load_spec_text  # noqa: E402
from launcher.cli.submit import submit_to_cluster  # noqa: E402
from launcher.targets.kubernetes.render import plan_for_render, render  # noqa: E402
from tests.fake_kube.cluster_sim import node, secret  # noqa: E402
from tests.fake_kube.server import FakeKubeApi  # noqa: E402

NAMESPACE = "ml-team"
GPUS_PER_NODE = 8
MICRO_BATCH = 4


def gpu_job(nodes: int) -> str:
    """A DeepSpeed job of `nodes` x 8 GPUs, with the Secrets and scheduling a real one has."""
    spec: dict[str, Any] = {
        "name": f"llm-{nodes}", "backend": "deepspeed", "target": "kubernetes", "image": "dlaunch:dev",
        "resources": {"nodes": nodes, "gpus_per_node": GPUS_PER_NODE, "gpu_type": "H100-80GB", "cpu": 96,
                      "memory": "1500Gi", "shm": "64Gi"},
        "kubernetes": {"namespace": NAMESPACE, "secrets": {"s3": "s3-credentials", "wandb": "wandb-api-key"},
                       "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]},
        "training": {"model": {"type": "causal-lm", "preset": "llama-tiny"},
                     "data": {"train": "s3://corpora/train/", "seq_len": 128},
                     "checkpoint": {"uri": "s3://corpora/runs"},
                     "batch": {"global": nodes * GPUS_PER_NODE * MICRO_BATCH, "micro": MICRO_BATCH},
                     "max_steps": 10, "zero": {"stage": 2}},
    }
    return json.dumps(spec)


def prepare(fake: FakeKubeApi) -> None:
    """What the cluster has: GPU nodes and the job's Secrets."""
    for index in range(4):
        fake.add(node(f"gpu-{index}", gpus=GPUS_PER_NODE, cpu="192", memory="2000Gi",
                      taints=({"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"},)))
    fake.add(secret("s3-credentials", NAMESPACE, ("credentials",)))
    fake.add(secret("wandb-api-key", NAMESPACE, ("netrc",)))


def count_submit_requests(nodes: int) -> Counter[str]:
    """Submit a fresh job of `nodes` nodes; the requests it sent, by method."""
    spec = load_spec_text(gpu_job(nodes), f"<{nodes}-node job>").spec
    objects = render(spec, plan_for_render(spec))
    with FakeKubeApi(namespaces=(NAMESPACE,)) as fake, tempfile.TemporaryDirectory() as tmp:
        prepare(fake)
        os.environ["KUBECONFIG"] = str(fake.write_kubeconfig(Path(tmp) / "kubeconfig"))
        fake.reset_requests()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            code = submit_to_cluster(spec, objects, context=None, namespace=None, dry_run_server=False, wait=False,
                                     follow=False, replace=False)
        assert code == 0 and fake.get("batch/v1", "Job", spec.name, NAMESPACE) is not None
        return Counter(request.method for request in fake.requests)


def main() -> None:
    figures = {}
    for nodes in (2, 1024):
        by_method = count_submit_requests(nodes)
        figures[f"nodes_{nodes}"] = sum(by_method.values())
        detail = ", ".join(f"{method} {count}" for method, count in sorted(by_method.items()))
        print(f"{nodes:5} nodes: {sum(by_method.values())} requests ({detail})")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
