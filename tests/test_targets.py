"""One request for --dry-run and launch on the Kubernetes target: what `dlaunch submit --dry-run` prints
is what the API server receives. (The local target's twin is in test_local_jobs.py.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tests.fake_kube.fixtures import (  # noqa: F401 - fixtures
    NAMESPACE, buckets, fake_kube, kubeconfig, spec_file,
)
from tests.fake_kube.server import FakeKubeApi


def contains(expected: Any, actual: Any, path: str = "") -> list[str]:
    """Where `actual` differs from `expected`, ignoring what only `actual` has (what the server adds:
    uid, resourceVersion, status; and dlaunch's submitter label and owner references)."""
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return [f"{path}: not a mapping"]
        return [d for key, value in expected.items() for d in contains(value, actual.get(key), f"{path}.{key}")]
    if isinstance(expected, list):
        if not isinstance(actual, list) or len(actual) != len(expected):
            return [f"{path}: {actual!r} != {expected!r}"]
        return [d for i, (e, a) in enumerate(zip(expected, actual)) for d in contains(e, a, f"{path}[{i}]")]
    return [] if expected == actual else [f"{path}: {actual!r} != {expected!r}"]


def test_kubernetes_dry_run_is_what_the_api_server_receives(fake_kube: FakeKubeApi, kubeconfig: Path,
                                                            spec_file: Any, run_cli: Any) -> None:
    path = spec_file(name="drjob")
    printed = run_cli("submit", str(path), "--dry-run", "-n", NAMESPACE)
    assert printed.code == 0, printed.err
    documents = list(yaml.safe_load_all(printed.out))
    assert fake_kube.requests == []  # the dry run contacted nothing
    submitted = run_cli("submit", str(path), "-n", NAMESPACE)
    assert submitted.code == 0, submitted.err
    for document in documents:
        api_version, kind, meta = document["apiVersion"], document["kind"], document["metadata"]
        stored = fake_kube.get(api_version, kind, meta["name"], meta["namespace"])
        assert stored is not None, f"{kind} {meta['name']} was not applied"
        assert contains(document, stored) == [], kind
    applied = {r.path.rsplit("/", 1)[1] for r in fake_kube.requests if r.method == "PATCH"}
    assert applied == {d["metadata"]["name"] for d in documents}


def test_the_namespace_option_is_applied_once_to_the_rendered_objects(fake_kube: FakeKubeApi, kubeconfig: Path,
                                                                      spec_file: Any, run_cli: Any) -> None:
    printed = run_cli("submit", str(spec_file(name="nsjob")), "--dry-run", "-n", "default")
    namespaces = {d["metadata"]["namespace"] for d in yaml.safe_load_all(printed.out)}
    assert namespaces == {"default"}
    assert "nsjob-0.nsjob.default.svc" in printed.out  # pod 0's rendezvous address follows it
