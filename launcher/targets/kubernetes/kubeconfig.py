"""Where a cluster is and who we are there: the kubeconfig (a chosen or the current context), or a
pod's service account. Read when a command needs a cluster, never at import."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import client as k8s
from kubernetes import config as k8s_config

from launcher.targets.kubernetes.client import ClusterError

SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


@dataclass
class ClusterConfig:
    """A configured client for one cluster, the context it came from and that context's namespace."""

    api_client: Any
    context: str | None
    default_namespace: str | None
    server: str


def kubeconfig_path() -> str | None:
    """$KUBECONFIG (read now, not at import), else ~/.kube/config if it exists."""
    if os.environ.get("KUBECONFIG"):
        return os.environ["KUBECONFIG"]
    default = Path("~/.kube/config").expanduser()
    return str(default) if default.exists() else None


def load_cluster(context: str | None = None) -> ClusterConfig:
    """Client settings from the kubeconfig (a chosen or the current context), or in-cluster config."""
    path = kubeconfig_path()
    if path is not None:
        return _from_kubeconfig(path, context)
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        if context is not None:
            raise ClusterError(f"--context {context} needs a kubeconfig, but there is none here: this is a pod "
                               "using its service account; drop --context")
        return _in_cluster()
    raise ClusterError("no Kubernetes configuration: no kubeconfig at ~/.kube/config or $KUBECONFIG, and not running "
                       "in a pod: point KUBECONFIG at your cluster's kubeconfig (for kind: kind export kubeconfig)")


def _from_kubeconfig(path: str, context: str | None) -> ClusterConfig:
    try:
        contexts, current = k8s_config.list_kube_config_contexts(config_file=path)
    except (k8s_config.ConfigException, OSError, ValueError) as exc:
        raise ClusterError(f"cannot read kubeconfig {path}: {exc}: fix it or point KUBECONFIG at another") from exc
    names = [c["name"] for c in contexts]
    chosen = context or (current or {}).get("name")
    if chosen not in names:
        raise ClusterError(f"context '{chosen}' is not in kubeconfig {path} (it has: {', '.join(names)}): pass "
                           "--context with one of those, or set kubernetes.context in the spec")
    configuration = k8s.Configuration()
    try:
        k8s_config.load_kube_config(config_file=path, context=chosen, client_configuration=configuration,
                                    persist_config=False)
    except (k8s_config.ConfigException, OSError, ValueError) as exc:
        raise ClusterError(f"cannot use context '{chosen}' of kubeconfig {path}: {exc}") from exc
    namespace = next(c for c in contexts if c["name"] == chosen).get("context", {}).get("namespace")
    return _finish(configuration, chosen, namespace)


def _in_cluster() -> ClusterConfig:
    configuration = k8s.Configuration()
    try:
        k8s_config.load_incluster_config(client_configuration=configuration)
    except k8s_config.ConfigException as exc:
        raise ClusterError(f"cannot use this pod's service account: {exc}") from exc
    namespace = SERVICE_ACCOUNT_NAMESPACE.read_text().strip() if SERVICE_ACCOUNT_NAMESPACE.exists() else None
    return _finish(configuration, None, namespace)


def _finish(configuration: Any, context: str | None, namespace: str | None) -> ClusterConfig:
    # dlaunch retries itself (bounded, with backoff); urllib3's silent retries would hide failures.
    configuration.retries = False
    return ClusterConfig(k8s.ApiClient(configuration), context, namespace, configuration.host)
