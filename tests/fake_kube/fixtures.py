"""Pytest fixtures for tests that talk to the fake API server (import them into a test module)."""

from __future__ import annotations

import contextlib
import copy
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from launcher.spec import JobSpec, load_spec_text
from launcher.cli.submit import submit_to_cluster
from launcher.targets.kubernetes.render import plan_for_render, render
from tests.fake_kube.server import FakeKubeApi
from training.checkpoint import storage
from training.checkpoint.storage import LocalStorage, Storage

NAMESPACE = "dlaunch"
BUCKET = "dlaunch-test"
CHECKPOINT_URI = f"s3://{BUCKET}/runs"
K8S_SPEC: dict[str, Any] = {
    "name": "kjob",
    "backend": "deepspeed",
    "target": "kubernetes",
    "image": "dlaunch:dev",
    "resources": {"nodes": 2, "gpus_per_node": 0, "cpu": 2, "memory": "4Gi", "shm": "1Gi"},
    "kubernetes": {"namespace": NAMESPACE, "termination_grace": 30},
    "training": {
        "seed": 1,
        "model": {"type": "causal-lm", "preset": "llama-tiny"},
        "data": {"train": "/usr/share/doc/python3.11/html/_sources/tutorial/*.rst.txt", "seq_len": 64},
        "batch": {"global": 64, "micro": 4},
        "max_steps": 10,
        "zero": {"stage": 2},
        "checkpoint": {"uri": CHECKPOINT_URI, "every_steps": 5},
    },
}


def k8s_spec(**sections: Any) -> dict[str, Any]:
    """A fresh small Kubernetes spec; keyword arguments update its top-level sections (dicts merge)."""
    spec = copy.deepcopy(K8S_SPEC)
    for key, value in sections.items():
        spec[key] = {**spec[key], **value} if isinstance(value, dict) and isinstance(spec.get(key), dict) else value
    return spec


def rendered(spec: dict[str, Any]) -> tuple[JobSpec, list[dict[str, Any]]]:
    """The validated spec and the objects `render` makes of it."""
    job = load_spec_text(yaml.safe_dump(spec)).spec
    return job, render(job, plan_for_render(job))


def submit(spec: dict[str, Any], **options: Any) -> int:
    """`submit_to_cluster` for a spec dict, with every option off unless given."""
    job, objects = rendered(spec)
    settings = {"context": None, "namespace": None, "dry_run_server": False, "wait": False, "follow": False,
                "replace": False, **options}
    return submit_to_cluster(job, objects, **settings)


@contextlib.contextmanager
def in_background(action: Callable[[], Any], timeout: float = 20.0) -> Iterator[None]:
    """Run `action` in a thread during the block (playing the cluster while a command runs); its
    exceptions are raised when the block ends."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            action()
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread, not swallowed
            errors.append(exc)
    thread = threading.Thread(target=run, name="play-the-cluster", daemon=True)
    thread.start()
    yield
    thread.join(timeout)
    if errors:
        raise errors[0]
    assert not thread.is_alive(), "the background action did not finish"


class BucketsInDirectory(LocalStorage):
    """S3 buckets kept under a local directory (`s3://b/key` is `root/b/key`), read-only: what `status`
    and `submit` read of a job's checkpoints (`latest`), without an S3 server or the network."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def read_bytes(self, uri: str) -> bytes:
        return super().read_bytes(str(self.root / uri.removeprefix("s3://")))


@pytest.fixture
def buckets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where s3:// checkpoints live for the launcher in this test: tmp_path/s3/<bucket>/<key>; a spec
    that names an S3 `endpoint_url` (a test's S3 server) is read from there instead."""
    root = tmp_path / "s3"
    original = storage.storage_for

    def storage_for(uri: str, **options: Any) -> Storage:
        in_directory = uri.startswith("s3://") and not options.get("endpoint_url")
        return BucketsInDirectory(root) if in_directory else original(uri, **options)
    monkeypatch.setattr(storage, "storage_for", storage_for)
    return root


@pytest.fixture
def fake_kube() -> Iterator[FakeKubeApi]:
    """A running fake API server with namespaces `default` and `dlaunch`."""
    with FakeKubeApi(namespaces=("default", NAMESPACE)) as fake:
        yield fake


@pytest.fixture
def kubeconfig(fake_kube: FakeKubeApi, buckets: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """$KUBECONFIG -> a kubeconfig for the fake, contexts `fake` (current) and `team` (namespace dlaunch);
    s3:// checkpoints read from `buckets`."""
    path = fake_kube.write_kubeconfig(tmp_path / "kubeconfig", {"fake": None, "team": NAMESPACE})
    monkeypatch.setenv("KUBECONFIG", str(path))
    return path


@pytest.fixture
def spec_file(tmp_path: Path) -> Callable[..., Path]:
    """Write `k8s_spec(**sections)` to a file."""
    counter = iter(range(10**6))

    def write(**sections: Any) -> Path:
        spec = k8s_spec(**sections)
        path = tmp_path / f"cluster-{next(counter)}.yaml"
        path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
        return path

    return write
