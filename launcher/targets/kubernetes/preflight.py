"""Pre-flight checks: what `dlaunch submit` verifies before it creates anything on the cluster.

Every failure is one line, a cause and a fix: the cluster cannot be reached or the credentials
have expired; the namespace is missing; RBAC forbids a verb dlaunch needs (asked with
SelfSubjectAccessReview); KubeRay is missing for a Ray job; the Kueue queue is missing; a
referenced Secret is missing or lacks a key; no node can ever hold a pod of the job (allocatable
GPUs, taints and tolerations, node selector).

Then what would make the controllers fail to create the job's pods, each a `FailedCreate` event
nobody reads (the Job controller's RealPodControl.createPods, pkg/controller/controller_utils.go,
retried with backoff forever): the ServiceAccount (serviceaccount admission) or PriorityClass
(priority admission) does not exist; the namespace's Pod Security level (its
`pod-security.kubernetes.io/enforce` label) refuses the pods; a ResourceQuota can never hold
them all. With Kueue a missing PriorityClass is worse: no Workload is ever created, so the job
waits forever without an event. Checks that the user may not perform (reading Secrets, Nodes,
PriorityClasses or quotas is often forbidden) become notes instead of failures.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from launcher.errors import SubmitError
from launcher.quantity import parse_quantity
from launcher.spec import JobSpec, Toleration
from launcher.targets.kubernetes import client as kube
from launcher.targets.kubernetes.pods import GPU_RESOURCE, SECRET_MOUNTS

SETUP_DOC = "k8s/README.md"
POD_SECURITY_LABEL = "pod-security.kubernetes.io/enforce"
# Volume types the restricted Pod Security profile allows (pod-security-admission, restrictedVolumes).
RESTRICTED_VOLUMES = frozenset({"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                                "projected", "secret"})
# Quota keys dlaunch can add up for its pods (resourcequota's pod evaluator names), and the
# request or limit each counts; `pods` counts pods.
QUOTA_KEYS = {"pods": None, "count/pods": None, "cpu": ("requests", "cpu"), "memory": ("requests", "memory"),
              "requests.cpu": ("requests", "cpu"), "requests.memory": ("requests", "memory"),
              "limits.cpu": ("limits", "cpu"), "limits.memory": ("limits", "memory"),
              f"requests.{GPU_RESOURCE}": ("requests", GPU_RESOURCE)}
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


def run_preflight(client: kube.KubeClient, spec: JobSpec, objects: list[Obj], *, wait: bool = False,
                  follow: bool = False, replace: bool = False) -> Findings:
    """Run every check; raise `PreflightError` listing all problems, else return the user and notes."""
    findings = Findings()
    namespace_problem, namespace = check_namespace(client, spec)
    findings.user = client.whoami()
    if namespace_problem is not None:
        findings.problems.append(namespace_problem)
    else:
        check_access(client, needed_access(spec, objects, wait, follow, replace), findings)
    check_kuberay(client, spec, findings)
    if namespace_problem is None:
        check_queue(client, spec, findings)
        check_secrets(client, spec, findings)
        check_service_account(client, spec, findings)
        check_pod_security(namespace, objects, findings)
        check_quotas(client, objects, findings)
    check_priority_class(client, spec, findings)
    check_node_fit(client, spec, findings)
    if findings.problems:
        raise PreflightError(spec.name, client.namespace, findings.problems)
    return findings


def check_namespace(client: kube.KubeClient, spec: JobSpec) -> tuple[Problem | None, Obj | None]:
    """The first request: the cluster answers, accepts our credentials, and has the namespace (returned,
    None if it may not be read)."""
    namespace = client.namespace
    try:
        found = client.read(kube.NAMESPACE, namespace)
    except kube.KubeRequestError as exc:
        if exc.status is None:
            raise PreflightError(spec.name, namespace, [unreachable(client, exc)]) from exc
        if exc.status == 401:
            raise PreflightError(spec.name, namespace, [credentials_rejected(client)]) from exc
        if exc.status == 403:
            return None, None  # may not read Namespace objects: creating the job will tell
        raise
    if found is None:
        fix = f"create it (kubectl create namespace {namespace}) or set kubernetes.namespace in the spec"
        return Problem(f"namespace '{namespace}' does not exist", fix), None
    return None, found


def unreachable(client: kube.KubeClient, exc: kube.KubeRequestError) -> Problem:
    context = client.cluster.context
    source = f"kubeconfig context '{context}'" if context else "the in-cluster configuration"
    return Problem(f"cannot reach the Kubernetes API server at {client.server} ({exc.detail})",
                   f"check that the cluster is running and that {source} points at it (kubectl cluster-info)")


def credentials_rejected(client: kube.KubeClient) -> Problem:
    return Problem(f"the API server at {client.server} rejected your credentials (401 Unauthorized)",
                   "they have probably expired: log in again to refresh them (e.g. aws eks update-kubeconfig, "
                   "gcloud container clusters get-credentials, kind export kubeconfig)")


# ----- RBAC -----------------------------------------------------------------------------------------
def needed_access(spec: JobSpec, objects: list[Obj], wait: bool, follow: bool,
                  replace: bool) -> list[tuple[str, kube.Kind, str]]:
    """(verb, kind, subresource) that this submission will use."""
    main = kube.main_kind(spec.backend)
    kinds = list(dict.fromkeys(kube.kind_of(obj) for obj in objects))
    needs = [("get", main, "")] + [(verb, kind, "") for kind in kinds for verb in ("create", "patch")]
    if replace:
        needs.append(("delete", main, ""))
    if wait or follow:
        needs.append(("watch", main, ""))
    if follow:
        needs += [("list", kube.POD, ""), ("get", kube.POD, "log")]
    return needs


def resource_name(kind: kube.Kind, subresource: str) -> str:
    """`jobs.batch`, `pods/log` (how RBAC rules name resources)."""
    return (f"{kind.plural}.{kind.group}" if kind.group else kind.plural) + (f"/{subresource}" if subresource else "")


def check_access(client: kube.KubeClient, needs: list[tuple[str, kube.Kind, str]], findings: Findings) -> None:
    """One SelfSubjectAccessReview per (verb, resource); one problem per resource with refused verbs."""
    refused: dict[str, list[str]] = {}
    for verb, kind, subresource in needs:
        if not client.access_allowed(verb, kind, subresource):
            refused.setdefault(resource_name(kind, subresource), []).append(verb)
    for resource, verbs in refused.items():
        findings.problems.append(Problem(
            f"RBAC: {findings.user} may not {', '.join(verbs)} {resource} in namespace '{client.namespace}'", RBAC_FIX))


# ----- operators ------------------------------------------------------------------------------------
def check_kuberay(client: kube.KubeClient, spec: JobSpec, findings: Findings) -> None:
    """A Ray job needs the RayJob API of KubeRay."""
    if spec.backend != "ray":
        return
    resources = client.api_resources(kube.RAY_JOB.group, kube.RAY_JOB.version)
    if resources is None or kube.RAY_JOB.plural not in resources:
        findings.problems.append(Problem("KubeRay is not installed", f"see {SETUP_DOC}"))


def check_queue(client: kube.KubeClient, spec: JobSpec, findings: Findings) -> None:
    """The Kueue LocalQueue named by kubernetes.queue exists in the namespace (v1beta2, else v1beta1)."""
    queue = spec.kubernetes.queue
    if queue is None:
        return
    try:
        found = client.list_any_version(kube.LOCAL_QUEUES)
    except kube.KubeRequestError as exc:
        if exc.status != 403:
            raise
        findings.notes.append(f"cannot check that Kueue queue '{queue}' exists: you may not list localqueues")
        return
    if found is None:
        findings.problems.append(Problem(f"Kueue is not installed, but kubernetes.queue names '{queue}'",
                                         f"install Kueue (see {SETUP_DOC}) or remove kubernetes.queue"))
        return
    names = sorted(q["metadata"]["name"] for q in found[1])
    if queue not in names:
        others = f", or use one of: {', '.join(names)}" if names else ""
        findings.problems.append(Problem(f"Kueue queue '{queue}' does not exist in namespace '{client.namespace}'",
                                         f"create a LocalQueue named {queue} there (see {SETUP_DOC}){others}"))


# ----- secrets --------------------------------------------------------------------------------------
# Where a user usually has each credential file that a Secret key holds.
CREDENTIAL_FILE_EXAMPLES = {"credentials": "$HOME/.aws/credentials", "config": "$HOME/.aws/config",
                            "netrc": "$HOME/.netrc"}


def secret_refs(spec: JobSpec) -> list[tuple[str, str, list[str]]]:
    """(Secret name, spec field, keys the pods read from it) for every Secret the job references."""
    k8s, refs = spec.kubernetes, []
    for mount in SECRET_MOUNTS:
        name = getattr(k8s.secrets, mount.field)
        if name is not None:
            required = [key for variable, key, needed in mount.files if needed and variable not in k8s.env]
            refs.append((name, f"kubernetes.secrets.{mount.field}", required))
    refs += [(name, "kubernetes.image_pull_secrets", []) for name in k8s.image_pull_secrets]
    return refs


def secret_files(keys: list[str]) -> str:
    """`--from-file` options for a Secret's keys, from where a user usually has each file."""
    return " ".join(f"--from-file={key}={CREDENTIAL_FILE_EXAMPLES.get(key, 'FILE')}" for key in keys)


def create_secret_fix(namespace: str, name: str, where: str, keys: list[str]) -> str:
    if where == "kubernetes.image_pull_secrets":
        return (f"create it: kubectl -n {namespace} create secret docker-registry {name} --docker-server=REGISTRY "
                "--docker-username=USER --docker-password=TOKEN")
    return f"create it: kubectl -n {namespace} create secret generic {name} {secret_files(keys)}"


def check_secrets(client: kube.KubeClient, spec: JobSpec, findings: Findings) -> None:
    """Each referenced Secret exists and has the keys the pods read (its values are never read here)."""
    namespace = client.namespace
    for name, where, keys in secret_refs(spec):
        try:
            secret = client.read(kube.SECRET, name)
        except kube.KubeRequestError as exc:
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
            findings.problems.append(Problem(
                f"Secret '{name}' ({where}) has no key {', '.join(missing)}",
                f"recreate it with every key: kubectl -n {namespace} create secret generic {name} "
                f"{secret_files(keys)} --dry-run=client -o yaml | kubectl apply -f -"))


# ----- what pod creation needs ----------------------------------------------------------------------
def read_or_note(client: kube.KubeClient, kind: kube.Kind, name: str, what: str,
                 findings: Findings) -> Obj | None | bool:
    """The object, None if it does not exist, or False (with a note) if we may not read it."""
    try:
        return client.read(kind, name)
    except kube.KubeRequestError as exc:
        if exc.status != 403:
            raise
        findings.notes.append(f"cannot check that {what} exists: you may not read {kind.plural}")
        return False


def list_or_note(client: kube.KubeClient, kind: kube.Kind, what: str, findings: Findings) -> list[Obj] | None:
    """The namespace's objects of `kind`, or None (with a note that `what` was not checked) if we may
    not list them."""
    try:
        found, _ = client.list(kind)
    except kube.KubeRequestError as exc:
        if exc.status != 403:
            raise
        findings.notes.append(f"cannot check {what}: you may not list {kind.plural}")
        return None
    return found


def check_service_account(client: kube.KubeClient, spec: JobSpec, findings: Findings) -> None:
    """kubernetes.service_account exists: the serviceaccount admission plugin refuses pods naming a missing one."""
    name, namespace = spec.kubernetes.service_account, client.namespace
    if name is None:
        return
    what = f"ServiceAccount '{name}' (kubernetes.service_account)"
    if read_or_note(client, kube.SERVICE_ACCOUNT, name, what, findings) is None:
        findings.problems.append(Problem(f"{what} does not exist in namespace '{namespace}'",
                                         f"create it (kubectl -n {namespace} create serviceaccount {name}) or fix "
                                         "kubernetes.service_account"))


def check_priority_class(client: kube.KubeClient, spec: JobSpec, findings: Findings) -> None:
    """kubernetes.priority_class exists: the priority admission plugin refuses pods naming a missing one,
    and Kueue creates no Workload for their job (so a queued job would wait forever)."""
    name = spec.kubernetes.priority_class
    if name is None:
        return
    what = f"PriorityClass '{name}' (kubernetes.priority_class)"
    if read_or_note(client, kube.PRIORITY_CLASS, name, what, findings) is not None:
        return
    consequence = (" (Kueue would never create a Workload for the job, so it would wait forever)"
                   if spec.kubernetes.queue else " (no pod of the job could be created)")
    findings.problems.append(Problem(f"{what} does not exist{consequence}",
                                     "fix kubernetes.priority_class (kubectl get priorityclasses lists them), or ask a "
                                     "cluster admin to create it"))


def pod_counts(objects: list[Obj]) -> list[tuple[Obj, int]]:
    """Every pod template of the job's objects, with how many pods it makes at once."""
    found: list[tuple[Obj, int]] = []
    for obj in objects:
        spec = obj.get("spec") or {}
        if obj["kind"] == "Job":
            found.append((spec["template"], int(spec.get("parallelism") or 1)))
        elif obj["kind"] == "RayJob":
            ray = spec["rayClusterSpec"]
            found.append((ray["headGroupSpec"]["template"], 1))
            found += [(group["template"], int(group.get("replicas") or 0)) for group in ray["workerGroupSpecs"]]
            if spec.get("submitterPodTemplate"):
                found.append((spec["submitterPodTemplate"], 1))
    return found


def baseline_violations(pod: Obj) -> list[str]:
    """What the baseline Pod Security level forbids in a pod spec (the subset dlaunch could render)."""
    found = [f"{key}=true" for key in ("hostNetwork", "hostPID", "hostIPC") if pod.get(key)]
    found += [f"hostPath volume {v['name']}" for v in pod.get("volumes") or [] if "hostPath" in v]
    for container in pod.get("initContainers", []) + pod.get("containers", []):
        if (container.get("securityContext") or {}).get("privileged"):
            found.append(f"privileged container {container['name']}")
        if any("hostPort" in port for port in container.get("ports") or []):
            found.append(f"hostPort in container {container['name']}")
    return found


def restricted_violations(pod: Obj) -> list[str]:
    """What the restricted level forbids beyond baseline (pod-security-admission's restricted checks)."""
    found = [f"volume {v['name']}" for v in pod.get("volumes") or [] if not set(v) - {"name"} <= RESTRICTED_VOLUMES]
    pod_context = pod.get("securityContext") or {}
    for container in pod.get("initContainers", []) + pod.get("containers", []):
        context, name = container.get("securityContext") or {}, container["name"]
        if context.get("allowPrivilegeEscalation") is not False:
            found.append(f"allowPrivilegeEscalation != false ({name})")
        if "ALL" not in (context.get("capabilities") or {}).get("drop", []):
            found.append(f"capabilities not dropped ({name})")
        if not context.get("runAsNonRoot", pod_context.get("runAsNonRoot")):
            found.append(f"runAsNonRoot != true ({name})")
        seccomp = (context.get("seccompProfile") or pod_context.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            found.append(f"seccompProfile not RuntimeDefault ({name})")
    return found


def check_pod_security(namespace: Obj | None, objects: list[Obj], findings: Findings) -> None:
    """The namespace's enforced Pod Security level admits the job's pods (the admission would refuse
    them with "violates PodSecurity"). Needs the namespace's labels; skipped when it may not be read."""
    level = ((namespace or {}).get("metadata", {}).get("labels") or {}).get(POD_SECURITY_LABEL)
    if level not in ("baseline", "restricted"):
        return
    found: list[str] = []
    for template, _ in pod_counts(objects):
        pod = template.get("spec") or {}
        found += baseline_violations(pod) + (restricted_violations(pod) if level == "restricted" else [])
    if found:
        name = namespace["metadata"]["name"] if namespace else ""
        findings.problems.append(Problem(
            f"namespace '{name}' enforces the {level} Pod Security level, which refuses the job's pods "
            f"({', '.join(dict.fromkeys(found))})",
            "drop kubernetes.host_network, or use a namespace whose pod-security.kubernetes.io/enforce level allows "
            "them"))


def pod_usage(template: Obj) -> dict[str, float]:
    """What one pod of `template` counts against each quota key of QUOTA_KEYS."""
    usage: dict[str, float] = {}
    containers = (template.get("spec") or {}).get("containers") or []
    for key, source in QUOTA_KEYS.items():
        if source is None:
            usage[key] = 1.0
            continue
        section, resource = source
        usage[key] = sum(parse_quantity(((c.get("resources") or {}).get(section) or {}).get(resource, "0"))
                         for c in containers)
    return usage


def job_usage(objects: list[Obj]) -> dict[str, float]:
    """What all the job's pods together count against each quota key."""
    total: dict[str, float] = {}
    for template, count in pod_counts(objects):
        for key, amount in pod_usage(template).items():
            total[key] = total.get(key, 0.0) + amount * count
    return total


def amount(key: str, value: float) -> str:
    return f"{value / 2**30:g}Gi" if key.endswith("memory") else f"{value:g}"


def check_quotas(client: kube.KubeClient, objects: list[Obj], findings: Findings) -> None:
    """No ResourceQuota of the namespace is smaller than the job (a problem), or fuller than leaves room
    for it now (a note: its pods wait for room). Scoped quotas are not checked."""
    quotas = list_or_note(client, kube.RESOURCE_QUOTA, "the namespace's ResourceQuotas", findings)
    if quotas is None:
        return
    need = job_usage(objects)
    for quota in quotas:
        spec, status = quota.get("spec") or {}, quota.get("status") or {}
        if spec.get("scopes") or spec.get("scopeSelector"):
            continue
        for key, hard_text in (spec.get("hard") or {}).items():
            if key not in need or not need[key]:
                continue
            hard, used = parse_quantity(hard_text), parse_quantity((status.get("used") or {}).get(key, "0"))
            name = quota["metadata"]["name"]
            if need[key] > hard:
                findings.problems.append(Problem(
                    f"ResourceQuota '{name}' allows {key}={hard_text} in namespace '{client.namespace}', but the "
                    f"job's pods need {amount(key, need[key])} together",
                    "ask for a larger quota, or request fewer nodes or resources"))
            elif need[key] + used > hard:
                findings.notes.append(f"ResourceQuota '{name}' has {amount(key, hard - used)} of {key} left, the job "
                                      f"needs {amount(key, need[key])}: its pods wait until other jobs free quota")


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


def check_node_fit(client: kube.KubeClient, spec: JobSpec, findings: Findings) -> None:
    """A GPU job needs at least one node that can ever hold one of its pods."""
    gpus = spec.resources.gpus_per_node
    if gpus == 0:
        return
    nodes = list_or_note(client, kube.NODE, "that a node can hold this job's pods", findings)
    if nodes is None:
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
