"""Pre-flight checks: what `dlaunch submit` verifies before it creates anything on the cluster.

Every failure is one line, a cause and a fix: the cluster cannot be reached or the credentials
have expired; the namespace is missing; RBAC forbids a verb dlaunch needs (asked with
SelfSubjectAccessReview); KubeRay is missing for a Ray job; the Kueue queue is missing; a
referenced Secret is missing or lacks a key; no node can ever hold a pod of the job (allocatable
GPUs, taints and tolerations, node selector). Checks that the user may not perform (reading
Secrets or Nodes is often forbidden) become notes instead of failures.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from launcher.errors import SubmitError
from launcher.quantity import parse_quantity
from launcher.spec import JobSpec, Toleration
from launcher.targets.kubernetes import cluster
from launcher.targets.kubernetes.pods import GPU_RESOURCE, S3_SECRET_KEYS, WANDB_SECRET_KEYS

SETUP_DOC = "k8s/README.md"
RBAC_FIX = f"ask a cluster admin to bind the dlaunch user role to you in this namespace (see {SETUP_DOC})"
BLOCKING_TAINT_EFFECTS = ("NoSchedule", "NoExecute")

Obj = dict[str, Any]


@dataclass(frozen=True)
class Problem:
    """Why the job cannot run, and what to do about it."""

    cause: str
    fix: str

    def __str__(self) -> str:
        return f"{self.cause}: {self.fix}"


class PreflightError(SubmitError):
    """Pre-flight found problems; nothing was created. Exit code 2: the job never started."""

    exit_code = 2

    def __init__(self, job: str, namespace: str, problems: list[Problem]) -> None:
        self.problems = problems
        head = f"pre-flight checks failed for job {job} in namespace {namespace}; nothing was created:"
        super().__init__("\n".join([head, *(f"  - {problem}" for problem in problems)]))


@dataclass
class Findings:
    """What the checks found: problems (fatal) and notes (checks that could not be made)."""

    user: str = ""
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def run_preflight(client: cluster.KubeClient, spec: JobSpec, objects: list[Obj], *, wait: bool = False,
                  follow: bool = False, replace: bool = False) -> Findings:
    """Run every check; raise `PreflightError` listing all problems, else return the user and notes."""
    findings = Findings()
    namespace_problem = check_namespace(client, spec)
    findings.user = client.whoami()
    if namespace_problem is not None:
        findings.problems.append(namespace_problem)
    else:
        check_access(client, needed_access(spec, objects, wait, follow, replace), findings)
    check_kuberay(client, spec, findings)
    if namespace_problem is None:
        check_queue(client, spec, findings)
        check_secrets(client, spec, findings)
    check_node_fit(client, spec, findings)
    if findings.problems:
        raise PreflightError(spec.name, client.namespace, findings.problems)
    return findings


def check_namespace(client: cluster.KubeClient, spec: JobSpec) -> Problem | None:
    """The first request: the cluster answers, accepts our credentials, and has the namespace."""
    namespace = client.namespace
    try:
        found = client.read(cluster.NAMESPACE, namespace)
    except cluster.KubeRequestError as exc:
        if exc.status is None:
            raise PreflightError(spec.name, namespace, [unreachable(client, exc)]) from exc
        if exc.status == 401:
            raise PreflightError(spec.name, namespace, [credentials_rejected(client)]) from exc
        if exc.status == 403:
            return None  # may not read Namespace objects: creating the job will tell
        raise
    if found is None:
        return Problem(f"namespace '{namespace}' does not exist",
                       f"create it (kubectl create namespace {namespace}) or set kubernetes.namespace in the spec")
    return None


def unreachable(client: cluster.KubeClient, exc: cluster.KubeRequestError) -> Problem:
    context = client.cluster.context
    source = f"kubeconfig context '{context}'" if context else "the in-cluster configuration"
    return Problem(f"cannot reach the Kubernetes API server at {client.server} ({exc.detail})",
                   f"check that the cluster is running and that {source} points at it (kubectl cluster-info)")


def credentials_rejected(client: cluster.KubeClient) -> Problem:
    return Problem(f"the API server at {client.server} rejected your credentials (401 Unauthorized)",
                   "they have probably expired: log in again to refresh them (e.g. aws eks update-kubeconfig, "
                   "gcloud container clusters get-credentials, kind export kubeconfig)")


# ----- RBAC -----------------------------------------------------------------------------------------
def needed_access(spec: JobSpec, objects: list[Obj], wait: bool, follow: bool,
                  replace: bool) -> list[tuple[str, cluster.Kind, str]]:
    """(verb, kind, subresource) that this submission will use."""
    main = cluster.main_kind(spec.backend)
    kinds = list(dict.fromkeys(cluster.kind_of(obj) for obj in objects))
    needs = [("get", main, "")] + [(verb, kind, "") for kind in kinds for verb in ("create", "patch")]
    if replace:
        needs.append(("delete", main, ""))
    if wait or follow:
        needs.append(("watch", main, ""))
    if follow:
        needs += [("list", cluster.POD, ""), ("get", cluster.POD, "log")]
    return needs


def resource_name(kind: cluster.Kind, subresource: str) -> str:
    """`jobs.batch`, `pods/log` (how RBAC rules name resources)."""
    return (f"{kind.plural}.{kind.group}" if kind.group else kind.plural) + (f"/{subresource}" if subresource else "")


def check_access(client: cluster.KubeClient, needs: list[tuple[str, cluster.Kind, str]], findings: Findings) -> None:
    """One SelfSubjectAccessReview per (verb, resource); one problem per resource with refused verbs."""
    refused: dict[str, list[str]] = {}
    for verb, kind, subresource in needs:
        if not client.access_allowed(verb, kind, subresource):
            refused.setdefault(resource_name(kind, subresource), []).append(verb)
    for resource, verbs in refused.items():
        findings.problems.append(Problem(
            f"RBAC: {findings.user} may not {', '.join(verbs)} {resource} in namespace '{client.namespace}'", RBAC_FIX))


# ----- operators ------------------------------------------------------------------------------------
def check_kuberay(client: cluster.KubeClient, spec: JobSpec, findings: Findings) -> None:
    """A Ray job needs the RayJob API of KubeRay."""
    if spec.backend != "ray":
        return
    resources = client.api_resources(cluster.RAY_JOB.group, cluster.RAY_JOB.version)
    if resources is None or cluster.RAY_JOB.plural not in resources:
        findings.problems.append(Problem("KubeRay is not installed", f"see {SETUP_DOC}"))


def check_queue(client: cluster.KubeClient, spec: JobSpec, findings: Findings) -> None:
    """The Kueue LocalQueue named by kubernetes.queue exists in the namespace."""
    queue = spec.kubernetes.queue
    if queue is None:
        return
    try:
        queues, _ = client.list(cluster.LOCAL_QUEUE)
    except cluster.KubeRequestError as exc:
        if exc.status == 404:
            findings.problems.append(Problem(f"Kueue is not installed, but kubernetes.queue names '{queue}'",
                                             f"install Kueue (see {SETUP_DOC}) or remove kubernetes.queue"))
        elif exc.status == 403:
            findings.notes.append(f"cannot check that Kueue queue '{queue}' exists: you may not list localqueues")
        else:
            raise
        return
    names = sorted(q["metadata"]["name"] for q in queues)
    if queue not in names:
        others = f", or use one of: {', '.join(names)}" if names else ""
        findings.problems.append(Problem(f"Kueue queue '{queue}' does not exist in namespace '{client.namespace}'",
                                         f"create a LocalQueue named {queue} there (see {SETUP_DOC}){others}"))


# ----- secrets --------------------------------------------------------------------------------------
def secret_refs(spec: JobSpec) -> list[tuple[str, str, list[str]]]:
    """(Secret name, spec field, keys the pods read from it) for every Secret the job references."""
    k8s, refs = spec.kubernetes, []
    for field_name, keys in (("s3", S3_SECRET_KEYS), ("wandb", WANDB_SECRET_KEYS)):
        name = getattr(k8s.secrets, field_name)
        if name is not None:
            required = [key for variable, key, optional in keys if not optional and variable not in k8s.env]
            refs.append((name, f"kubernetes.secrets.{field_name}", required))
    refs += [(name, "kubernetes.image_pull_secrets", []) for name in k8s.image_pull_secrets]
    return refs


def create_secret_fix(namespace: str, name: str, where: str, keys: list[str]) -> str:
    if where == "kubernetes.image_pull_secrets":
        return (f"create it: kubectl -n {namespace} create secret docker-registry {name} --docker-server=REGISTRY "
                "--docker-username=USER --docker-password=TOKEN")
    literals = " ".join(f"--from-literal={key}=..." for key in keys)
    return f"create it: kubectl -n {namespace} create secret generic {name} {literals}"


def check_secrets(client: cluster.KubeClient, spec: JobSpec, findings: Findings) -> None:
    """Each referenced Secret exists and has the keys the pods read (its values are never read here)."""
    namespace = client.namespace
    for name, where, keys in secret_refs(spec):
        try:
            secret = client.read(cluster.SECRET, name)
        except cluster.KubeRequestError as exc:
            if exc.status != 403:
                raise
            findings.notes.append(f"cannot check Secret '{name}' ({where}): you may not read Secrets here")
            continue
        if secret is None:
            findings.problems.append(Problem(f"Secret '{name}' ({where}) does not exist in namespace '{namespace}'",
                                             create_secret_fix(namespace, name, where, keys)))
            continue
        present = {*(secret.get("data") or {}), *(secret.get("stringData") or {})}
        missing = [key for key in keys if key not in present]
        if missing:
            literals = " ".join(f"--from-literal={key}=..." for key in keys)
            findings.problems.append(Problem(
                f"Secret '{name}' ({where}) has no key {', '.join(missing)}",
                f"recreate it with every key: kubectl -n {namespace} create secret generic {name} {literals} "
                "--dry-run=client -o yaml | kubectl apply -f -"))


# ----- nodes ----------------------------------------------------------------------------------------
def tolerates(toleration: Toleration, taint: Obj) -> bool:
    """Kubernetes' toleration matching for one taint."""
    if toleration.effect is not None and toleration.effect != taint.get("effect"):
        return False
    if toleration.key is None:
        return toleration.operator == "Exists"
    if toleration.key != taint.get("key"):
        return False
    return toleration.operator == "Exists" or (toleration.value or "") == (taint.get("value") or "")


def format_taint(taint: Obj) -> str:
    value = f"={taint['value']}" if taint.get("value") else ""
    return f"{taint.get('key')}{value}:{taint.get('effect')}"


def node_misfit(node: Obj, spec: JobSpec) -> tuple[str, str] | None:
    """Why a pod of the job can never run on `node` (kind, words), or None if it can."""
    k8s, res = spec.kubernetes, spec.resources
    labels = node.get("metadata", {}).get("labels") or {}
    if any(labels.get(key) != value for key, value in k8s.node_selector.items()):
        return "selector", "labels that do not match kubernetes.node_selector"
    for taint in node.get("spec", {}).get("taints") or []:
        if taint.get("effect") in BLOCKING_TAINT_EFFECTS and not any(tolerates(t, taint) for t in k8s.tolerations):
            return "taint", f"the untolerated taint {format_taint(taint)}"
    allocatable = node.get("status", {}).get("allocatable") or {}
    if parse_quantity(allocatable.get(GPU_RESOURCE, "0")) < res.gpus_per_node:
        return "gpu", f"fewer than {res.gpus_per_node} allocatable {GPU_RESOURCE}"
    for key, wanted in (("cpu", res.cpu), ("memory", res.memory)):
        if wanted is not None and parse_quantity(allocatable.get(key, "0")) < parse_quantity(wanted):
            return key, f"less allocatable {key} than resources.{key} ({wanted})"
    return None


def fit_fixes(misfits: list[tuple[str, str]], most_gpus: int) -> str:
    """The remedies for the kinds of misfit found, in the order the nodes showed them."""
    kinds = list(dict.fromkeys(kind for kind, _ in misfits))
    fixes = {
        "taint": "tolerate the taint under kubernetes.tolerations",
        "selector": "fix kubernetes.node_selector",
        "cpu": "lower resources.cpu",
        "memory": "lower resources.memory",
    }
    if most_gpus:
        fixes["gpu"] = f"request at most {most_gpus} GPUs per node (resources.gpus_per_node)"
    elif kinds == ["gpu"]:
        fixes["gpu"] = f"add nodes that advertise {GPU_RESOURCE} (the NVIDIA device plugin does)"
    return ", or ".join(fixes[kind] for kind in kinds if kind in fixes)


def check_node_fit(client: cluster.KubeClient, spec: JobSpec, findings: Findings) -> None:
    """A GPU job needs at least one node that can ever hold one of its pods."""
    gpus = spec.resources.gpus_per_node
    if gpus == 0:
        return
    try:
        nodes, _ = client.list(cluster.NODE)
    except cluster.KubeRequestError as exc:
        if exc.status != 403:
            raise
        findings.notes.append("cannot check that a node can hold this job's pods: you may not list nodes")
        return
    misfits = [node_misfit(node, spec) for node in nodes]
    if not nodes or any(m is None for m in misfits):
        return
    found = [m for m in misfits if m is not None]
    most_gpus = max((int(parse_quantity((n.get("status", {}).get("allocatable") or {}).get(GPU_RESOURCE, "0")))
                     for n, m in zip(nodes, misfits) if m and m[0] == "gpu"), default=0)
    counts = Counter(words for _, words in found)
    parts = [f"{count} {'has' if count == 1 else 'have'} {words}" for words, count in counts.items()]
    findings.problems.append(Problem(
        f"no node can ever run a pod of this job ({gpus} {GPU_RESOURCE} each): of {len(nodes)} nodes, "
        f"{', '.join(parts)}", fit_fixes(found, most_gpus)))
