"""The names `launcher.targets.kubernetes.cluster` offered before it was split, for callers outside
`launcher/` that still import them (tests/fake_kube/fixtures.py, bench/submit_requests.py,
tests/e2e/test_kind.py). New code imports from where each name lives:

- `client`: the HTTP client (`KubeClient`), resource kinds, errors, retries;
- `kubeconfig`: loading the kubeconfig or a pod's service account;
- `backend`: `KubernetesBackend` (submit, status, logs, wait, delete, list);
- `target`: the `Target` the CLI uses; `launcher.cli.submit.submit_to_cluster` submits
  already rendered objects and prints what happened.
"""

from launcher.cli.submit import submit_to_cluster
from launcher.targets.kubernetes.backend import KubernetesBackend, user_label_value
from launcher.targets.kubernetes.client import (
    JOB, POD, RAY_JOB, ClusterError, JobNotFoundError, KubeRequestError, RetryPolicy, main_kind,
)
from launcher.targets.kubernetes.kubeconfig import load_cluster
from launcher.targets.kubernetes.target import with_namespace

__all__ = ["JOB", "POD", "RAY_JOB", "ClusterError", "JobNotFoundError", "KubeRequestError", "KubernetesBackend",
           "RetryPolicy", "load_cluster", "main_kind", "submit_to_cluster", "user_label_value", "with_namespace"]
