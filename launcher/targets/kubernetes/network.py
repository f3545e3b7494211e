"""The job's NetworkPolicy: only the job's own pods may connect to its pods.

Why: torch's c10d TCPStore (the rendezvous), NCCL/gloo and the Ray head accept any connection
that reaches them, without authentication. In a shared cluster any pod could read the store,
join the rendezvous or submit Ray jobs. The policy selects every pod of the job by dlaunch's job
label and admits ingress only from pods carrying the same label, on every port: NCCL, gloo and
Ray's workers listen on ephemeral ports, so a port list would break them, while the peer
restriction is what isolates the job.

Ray adds one peer from outside the job: the KubeRay operator polls the head's dashboard
(port 8265) for the job's state (KubeRay `ray-operator/controllers/ray/utils/dashboardclient/dashboard_httpclient.go`,
`GetJobInfo`), from its own namespace. Its pods carry the label `app.kubernetes.io/name:
kuberay-operator` (the chart's `kuberay-operator.labels` in `helm-chart/kuberay-operator/
templates/_helpers.tpl`), and the rule admits only them, only on that port.

Egress stays open by default (S3, W&B, the API server and DNS live at addresses dlaunch cannot
know). With `kubernetes.network_policy.egress` set to CIDRs, egress is limited to the job's own
pods, cluster DNS (port 53) and those CIDRs.

A NetworkPolicy is only enforced by a CNI that implements it (Calico, Cilium, Antrea, ...);
elsewhere the object is accepted and has no effect.
"""

from __future__ import annotations

from typing import Any

from launcher.spec import JobSpec
from launcher.targets.kubernetes.pods import JOB_LABEL, object_meta

RAY_DASHBOARD_PORT = 8265
KUBERAY_OPERATOR_LABELS = {"app.kubernetes.io/name": "kuberay-operator"}
# CoreDNS and kube-dns pods both carry this label in kubeadm, kind, EKS, GKE and AKS clusters.
CLUSTER_DNS_LABELS = {"k8s-app": "kube-dns"}


def job_pod_selector(spec: JobSpec) -> dict[str, Any]:
    """Every pod of this job, and only those: dlaunch's job label is set on each pod template."""
    return {"matchLabels": {JOB_LABEL: spec.name}}


def ingress_rules(spec: JobSpec) -> list[dict[str, Any]]:
    """Pods of the job on any port; for Ray, also the KubeRay operator on the dashboard port."""
    rules: list[dict[str, Any]] = [{"from": [{"podSelector": job_pod_selector(spec)}]}]
    if spec.backend == "ray":
        rules.append({
            "from": [{"namespaceSelector": {}, "podSelector": {"matchLabels": dict(KUBERAY_OPERATOR_LABELS)}}],
            "ports": [{"port": RAY_DASHBOARD_PORT, "protocol": "TCP"}],
        })
    return rules


def egress_rules(spec: JobSpec, cidrs: list[str]) -> list[dict[str, Any]]:
    """Restricted egress: the job's own pods, cluster DNS, then the allowed CIDRs."""
    dns_ports = [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]
    rules: list[dict[str, Any]] = [
        {"to": [{"podSelector": job_pod_selector(spec)}]},
        {"to": [{"namespaceSelector": {}, "podSelector": {"matchLabels": dict(CLUSTER_DNS_LABELS)}}],
         "ports": dns_ports},
    ]
    if cidrs:
        rules.append({"to": [{"ipBlock": {"cidr": cidr}} for cidr in cidrs]})
    return rules


def render_network_policy(spec: JobSpec) -> dict[str, Any]:
    """The job's NetworkPolicy (rendered unless `kubernetes.network_policy.enabled` is false)."""
    egress = spec.kubernetes.network_policy.egress
    policy: dict[str, Any] = {
        "podSelector": job_pod_selector(spec),
        "policyTypes": ["Ingress"] if egress is None else ["Ingress", "Egress"],
        "ingress": ingress_rules(spec),
    }
    if egress is not None:
        policy["egress"] = egress_rules(spec, egress)
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": object_meta(spec, spec.name), "spec": policy}
