"""A stateful fake Kubernetes API server (a test double) and helpers to play the cluster's controllers."""

from tests.fake_kube.server import FakeKubeApi

__all__ = ["FakeKubeApi"]
