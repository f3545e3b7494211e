"""The job spec (`cluster.yaml`): pydantic models, loading, and errors users can act on.

Every problem is reported at once with its field path, the offending value, the YAML line
and, for typos, the closest valid key. Nothing here touches the network.
"""

from __future__ import annotations

import difflib
import glob
import hashlib
import ipaddress
import json
import os
import re
import types
import typing
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from launcher.errors import SpecError, SpecProblem
from launcher.gpus import GPU_MEMORY_GB
from launcher.quantity import parse_quantity
from launcher.yamlsource import YamlDocument, parse_yaml, read_yaml_file
from training.contract import StrictModel, TrainingConfig, deepspeed_conflicts

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# A job's name becomes a Service and a RayJob name, both DNS-1035 labels (a letter first):
# kubernetes/kubernetes pkg/apis/core/validation `ValidateServiceName` = `NameIsDNS1035Label`
# (apimachinery `IsDNS1035Label`), KubeRay ray-operator/controllers/ray/utils/validation.go
# `ValidateRayJobMetadata`.
DNS_1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
IMAGE_REF = re.compile(
    r"^(?:[a-zA-Z0-9.-]+(?::[0-9]+)?/)?[a-z0-9]+(?:[._-]+[a-z0-9]+)*(?:/[a-z0-9]+(?:[._-]+[a-z0-9]+)*)*"
    r"(?::[\w][\w.-]{0,127})?(?:@sha256:[a-f0-9]{64})?$"
)
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
LABEL_KEY = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")
SECRET_LOOKING_ENV = re.compile(r"(KEY|SECRET|TOKEN|PASSWORD|PASSWD|CREDENTIAL)", re.IGNORECASE)
MAX_NAME = 40
# Tags that registries conventionally move to each new build.
MUTABLE_TAGS = frozenset({"latest", "main", "master", "dev", "nightly", "edge", "stable"})


def divisors(n: int) -> list[int]:
    """Every divisor of `n`, ascending (O(sqrt n))."""
    small = [d for d in range(1, int(n**0.5) + 1) if n % d == 0]
    return sorted(set(small + [n // d for d in small]))


def _check_quantity(value: Any, what: str, maximum: float) -> Any:
    amount = parse_quantity(value)
    if amount <= 0 or amount > maximum:
        raise ValueError(f"{what} {value!r} is out of range (must be > 0 and at most {maximum:g})")
    return value


class Resources(StrictModel):
    """Per-node hardware. On the local target `gpus_per_node` is the number of worker processes."""

    nodes: int = Field(default=1, ge=1, le=16_384, description=(
        "Nodes (pods) the job runs on; on the local target, torchrun agents on this machine that meet "
        "on loopback exactly as pods would."))
    gpus_per_node: int = Field(default=0, ge=0, le=64, description=(
        "GPUs per node, one worker process each; `0` runs one CPU worker per node. On the local target: "
        "worker processes per node."))
    gpu_type: str | None = Field(default=None, description=(
        "Device the planner budgets memory for (`H100-80GB`, `A100-40GB`, `L4`, ...; an unknown name lists "
        "them); for any other device set `gpu_memory_gb`."))
    gpu_memory_gb: float | None = Field(default=None, gt=0, le=4096, description=(
        "Memory of one device in GB, for a device `gpu_type` does not name."))
    cpu: float | str | None = Field(default=None, description=(
        "CPU per node, a number or a quantity (`500m`); on Kubernetes both request and limit."))
    memory: str | None = Field(default=None, description=(
        "Memory per node, a quantity (`64Gi`); on Kubernetes both request and limit."))
    shm: str = Field(default="8Gi", description=(
        "Size of the memory-backed `/dev/shm` each pod gets (data loaders and NCCL use it)."))

    @field_validator("gpu_type")
    @classmethod
    def _known_gpu(cls, value: str | None) -> str | None:
        if value is not None and value not in GPU_MEMORY_GB:
            close = difflib.get_close_matches(value, GPU_MEMORY_GB, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise ValueError(f"unknown gpu_type '{value}'; {hint}set gpu_memory_gb for other devices")
        return value

    @field_validator("cpu")
    @classmethod
    def _cpu_quantity(cls, value: float | str | None) -> float | str | None:
        return None if value is None else _check_quantity(value, "cpu", 4096)

    @field_validator("memory", "shm")
    @classmethod
    def _memory_quantity(cls, value: str | None) -> str | None:
        return None if value is None else _check_quantity(value, "memory", 64 * 2**40)

    @property
    def procs_per_node(self) -> int:
        """Worker processes per node: one per GPU, or one CPU worker when there are no GPUs."""
        return max(self.gpus_per_node, 1)


class Toleration(StrictModel):
    key: str | None = Field(default=None, description=(
        "Taint key to tolerate; unset with `operator: Exists` tolerates every taint."))
    operator: Literal["Exists", "Equal"] = Field(default="Equal", description=(
        "`Equal` matches the taint's `value`; `Exists` matches any value of the key."))
    value: str | None = Field(default=None, description="Taint value to match with `operator: Equal`.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(default=None, description=(
        "Taint effect to tolerate; unset tolerates every effect."))
    toleration_seconds: int | None = Field(default=None, alias="tolerationSeconds", ge=0, description=(
        "With `effect: NoExecute`, seconds a pod stays on a node after the taint appears; unset: for ever."))

    @model_validator(mode="after")
    def _exists_has_no_value(self) -> "Toleration":
        if self.operator == "Exists" and self.value is not None:
            raise ValueError("operator Exists takes no value")
        return self


class SecretRefs(StrictModel):
    """Names of existing Kubernetes Secrets. Never their contents."""

    s3: str | None = Field(default=None, description=(
        "Secret with the key `credentials` (an AWS shared credentials file) and optionally `config` "
        "(e.g. `endpoint_url`), mounted read-only for boto3."))
    wandb: str | None = Field(default=None, description=(
        "Secret with the key `netrc` holding the W&B API key, mounted read-only for the W&B client."))

    @field_validator("s3", "wandb")
    @classmethod
    def _secret_name(cls, value: str | None) -> str | None:
        if value is not None and not DNS_SUBDOMAIN.match(value):
            raise ValueError(f"'{value}' is not a valid Secret name (lowercase letters, digits, '-' and '.')")
        return value


class NetworkPolicyConfig(StrictModel):
    """The job's NetworkPolicy: ingress only from the job's own pods (and, for Ray, the KubeRay
    operator on the dashboard port). `kubernetes.network_policy: false` turns it off."""

    enabled: bool = Field(default=True, description=(
        "Render the NetworkPolicy. Only a CNI that implements NetworkPolicies (Calico, Cilium, ...) enforces it."))
    egress: list[str] | None = Field(default=None, description=(
        "Networks in CIDR form (`10.0.0.0/8`) the pods may reach besides the job's own pods and cluster "
        "DNS; unset leaves egress open (S3, W&B, the API server)."))

    @model_validator(mode="before")
    @classmethod
    def _from_bool(cls, value: Any) -> Any:
        return {"enabled": value} if isinstance(value, bool) else value

    @field_validator("egress")
    @classmethod
    def _cidrs(cls, value: list[str] | None) -> list[str] | None:
        for cidr in value or []:
            try:
                ipaddress.ip_network(cidr, strict=True)
            except ValueError as exc:
                raise ValueError(f"'{cidr}' is not a network in CIDR form (e.g. 10.0.0.0/8): {exc}") from None
        return value


class KubernetesConfig(StrictModel):
    """Where and how pods run; only read when `target: kubernetes`."""

    context: str | None = Field(default=None, description="kubeconfig context; unset: the current context.")
    namespace: str | None = Field(default=None, description=(
        "Namespace of the job's objects; unset: the context's namespace."))
    service_account: str | None = Field(default=None, description=(
        "ServiceAccount the pods run as (e.g. one bound to a cloud IAM role, which needs no S3 Secret); "
        "unset: the namespace's default."))
    queue: str | None = Field(default=None, description=(
        "Kueue LocalQueue; the job is created suspended and starts when Kueue admits it."))
    priority_class: str | None = Field(default=None, description="PriorityClass of the pods; it must exist.")
    node_selector: dict[str, str] = Field(default_factory=dict, description=(
        "Node labels the pods must run on, e.g. `{nvidia.com/gpu.product: NVIDIA-H100-80GB-HBM3}`."))
    tolerations: list[Toleration] = Field(default_factory=list, description=(
        "Taints the pods tolerate, as in a Pod spec: `[{key: nvidia.com/gpu, operator: Exists, "
        "effect: NoSchedule}]`."))
    host_network: bool = Field(default=False, description=(
        "Run the pods in the node's network namespace (`hostNetwork`), e.g. for NCCL over the node's NICs."))
    labels: dict[str, str] = Field(default_factory=dict, description=(
        "Extra labels on every object and pod of the job."))
    env: dict[str, str] = Field(default_factory=dict, description=(
        "Plain environment variables for every worker (`NCCL_DEBUG: WARN`); names that look like secrets "
        "are refused: name a Secret under `secrets` instead."))
    secrets: SecretRefs = Field(default_factory=SecretRefs, description=(
        "Names of existing Secrets, mounted as files; never their contents."))
    image_pull_secrets: list[str] = Field(default_factory=list, description=(
        "Secrets the kubelet pulls `image` with, for a private registry."))
    max_restarts: int = Field(default=3, ge=0, le=1000, description=(
        "Restarts of the whole gang after a worker fails, before the job fails (torchrun "
        "`--max-restarts`, Ray Train `max_failures`)."))
    active_deadline: int | None = Field(default=None, ge=1, le=365 * 86400, description=(
        "Seconds the job may run in all before Kubernetes stops it; unset: no limit."))
    ttl_after_finished: int | None = Field(default=None, ge=0, le=365 * 86400, description=(
        "Seconds a finished Job and its objects are kept before Kubernetes deletes them; unset: until "
        "`dlaunch cancel`. For Ray, how long KubeRay keeps the finished Ray cluster (unset: 600 s); the "
        "RayJob stays until `dlaunch cancel`."))
    termination_grace: int = Field(default=120, ge=0, le=86400, description=(
        "Seconds a cancelled or preempted worker has to write a checkpoint before it is killed."))
    network_policy: NetworkPolicyConfig = Field(default_factory=NetworkPolicyConfig, description=(
        "The job's NetworkPolicy: ingress only from the job's own pods (for Ray also the KubeRay operator "
        "on the dashboard port). `true` or `false` is short for `{enabled: ...}`."))

    @field_validator("namespace", "queue")
    @classmethod
    def _dns_label(cls, value: str | None) -> str | None:
        if value is not None and not (DNS_LABEL.match(value) and len(value) <= 63):
            raise ValueError(f"'{value}' is not a DNS-1123 label (lowercase letters, digits and '-')")
        return value

    @field_validator("service_account", "priority_class")
    @classmethod
    def _dns_subdomain(cls, value: str | None) -> str | None:
        if value is not None and not (DNS_SUBDOMAIN.match(value) and len(value) <= 253):
            raise ValueError(f"'{value}' is not a valid Kubernetes object name")
        return value

    @field_validator("image_pull_secrets")
    @classmethod
    def _pull_secret_names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not DNS_SUBDOMAIN.match(name):
                raise ValueError(f"'{name}' is not a valid Secret name")
        return value

    @field_validator("labels", "node_selector")
    @classmethod
    def _label_form(cls, value: dict[str, str]) -> dict[str, str]:
        for key, val in value.items():
            if not LABEL_KEY.match(key):
                raise ValueError(f"'{key}' is not a valid label key")
            if not LABEL_VALUE.match(val):
                raise ValueError(f"'{val}' (for {key}) is not a valid label value (at most 63 characters)")
        return value

    @field_validator("env")
    @classmethod
    def _plain_env_only(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if not ENV_NAME.match(key):
                raise ValueError(f"'{key}' is not a valid environment variable name")
            if SECRET_LOOKING_ENV.search(key):
                raise ValueError(
                    f"'{key}' looks like a secret; never put secret values in the spec: create a Kubernetes "
                    "Secret and name it under kubernetes.secrets (s3, wandb)"
                )
        return value


class JobSpec(StrictModel):
    """One training job: what to run, on which backend, where, with which resources."""

    name: str = Field(description=(
        "DNS-1035 label (a lowercase letter first: `sft-7b`, not `7b-sft`), at most 40 characters; names "
        "the run directory, the checkpoints and the Kubernetes objects."))
    backend: Literal["deepspeed", "ray"] = Field(default="deepspeed", description=(
        "`deepspeed` (torchrun agents and a DeepSpeed engine) or `ray` (a Ray Train `TorchTrainer`; on "
        "Kubernetes a KubeRay RayJob)."))
    target: Literal["local", "kubernetes"] = Field(default="local", description=(
        "Where the job runs: `local` (this machine, no cluster needed) or `kubernetes`."))
    image: str | None = Field(default=None, description=(
        "Worker image every pod runs, `registry/repo:tag` or, pinned, `registry/repo@sha256:...`; required "
        "for `target: kubernetes`."))
    resources: Resources = Field(default_factory=Resources, description=(
        "Hardware per node; on the local target, the worker processes this machine runs."))
    kubernetes: KubernetesConfig = Field(default_factory=KubernetesConfig, description=(
        "Where and how pods run; read only when `target: kubernetes`."))
    training: TrainingConfig = Field(description=(
        "What every worker does: model, data, batch, optimization, evaluation, checkpoints, tracking."))

    @field_validator("name")
    @classmethod
    def _dns_name(cls, value: str) -> str:
        if len(value) > MAX_NAME:
            raise ValueError(f"must be at most {MAX_NAME} characters, got {len(value)}")
        if DNS_LABEL.match(value) and not DNS_1035_LABEL.match(value):
            raise ValueError(f"must start with a letter: it names the job's Kubernetes Service and KubeRay "
                             f"RayJob, which must be DNS-1035 labels (e.g. 'job-{value}' instead of '{value}')")
        if not DNS_1035_LABEL.match(value):
            raise ValueError("must be a DNS-1035 label: lowercase letters, digits and '-', starting with a "
                             "letter and ending with a letter or digit")
        return value

    @field_validator("image")
    @classmethod
    def _image_form(cls, value: str | None) -> str | None:
        if value is not None and not IMAGE_REF.match(value):
            raise ValueError(f"'{value}' is not a valid image reference (registry/repository:tag)")
        return value

    @model_validator(mode="after")
    def _kubernetes_needs_image(self) -> "JobSpec":
        if self.target == "kubernetes" and self.image is None:
            raise ValueError("target kubernetes needs `image:` (the worker image every pod runs)")
        return self

    @property
    def world_size(self) -> int:
        return self.resources.nodes * self.resources.procs_per_node

    def spec_hash(self) -> str:
        """A stable digest of the spec, used to tell a changed resubmission from an unchanged one."""
        payload = json.dumps(self.model_dump(mode="json", by_alias=True), sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


@dataclass
class LoadedSpec:
    """A validated spec with where it came from and the non-fatal notes about it."""

    spec: JobSpec
    source: str
    notes: list[str] = field(default_factory=list)


def _model_at(model: type[BaseModel], loc: tuple[str | int, ...]) -> type[BaseModel] | None:
    """The pydantic model class that owns the key at `loc` (for suggesting valid keys)."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        info = next((f for n, f in current.model_fields.items() if part in (n, f.alias)), None)
        if info is None:
            return None
        current = _unwrap_model(info.annotation)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _unwrap_model(annotation: Any) -> Any:
    """Find the BaseModel inside Optional[...] / list[...] annotations."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType, list):
        for arg in typing.get_args(annotation):
            found = _unwrap_model(arg)
            if found is not None:
                return found
    return None


def field_names(model: type[BaseModel]) -> list[str]:
    return [f.alias or n for n, f in model.model_fields.items()]


def _short(value: Any) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _problem_from_error(err: Any, doc: YamlDocument) -> SpecProblem:
    loc = tuple(err["loc"])
    path = ".".join(str(p) for p in loc) or "(top level)"
    line = doc.line_of(loc)
    kind = err["type"]
    if kind == "extra_forbidden":
        owner = _model_at(JobSpec, loc[:-1])
        valid = field_names(owner) if owner else []
        close = difflib.get_close_matches(str(loc[-1]), valid, n=1, cutoff=0.5)
        hint = f"did you mean '{close[0]}'?" if close else f"valid keys here: {', '.join(valid)}"
        return SpecProblem(path=path, message="unknown key", line=line, hint=hint)
    if kind == "missing" and isinstance(loc[-1], int):
        parent = ".".join(str(p) for p in loc[:-1])
        return SpecProblem(path=parent, message=f"has too few items (item {loc[-1] + 1} is missing)", line=line)
    if kind == "missing":
        return SpecProblem(path=path, message="required key is missing", line=line,
                           hint=f"add `{loc[-1]}:` (see `dlaunch init` for an example)")
    message = err["msg"].removeprefix("Value error, ")
    value: str | None = _short(err.get("input"))
    if isinstance(err.get("input"), dict) or repr(err.get("input")) in message or str(err.get("input")) in message:
        value = None
    return SpecProblem(path=path, message=message, line=line, value=value)


def _local_path_problems(data: dict[str, Any], doc: YamlDocument) -> list[SpecProblem]:
    """Data paths of a local job must exist and be readable now, not an hour into the run."""
    if data.get("target", "local") != "local":
        return []
    section = data.get("training", {}).get("data") if isinstance(data.get("training"), dict) else None
    if not isinstance(section, dict):
        return []
    problems = []
    for key in ("train", "validation"):
        value = section.get(key)
        if not isinstance(value, str) or "://" in value and not value.startswith("file://"):
            continue
        path = value.removeprefix("file://")
        matches = glob.glob(path) if glob.has_magic(path) else ([path] if os.path.exists(path) else [])
        loc = ("training", "data", key)
        if not matches:
            problems.append(SpecProblem(path=".".join(loc), message="no such file, directory or glob match",
                                        line=doc.line_of(loc), value=repr(value),
                                        hint="paths are relative to the directory you run dlaunch from"))
        elif not all(os.access(m, os.R_OK) for m in matches):
            problems.append(SpecProblem(path=".".join(loc), message="not readable (permission denied)",
                                        line=doc.line_of(loc), value=repr(value)))
        else:
            problems += _raw_text_size_problems(matches, loc, value, doc)
    return problems


def _raw_text_size_problems(matches: list[str], loc: tuple[str, ...], value: str,
                            doc: YamlDocument) -> list[SpecProblem]:
    """Raw text above `RAW_TEXT_LIMIT_MB` must be prepared first: every rank would read and tokenize
    all of it into memory. A directory holding a prepared dataset (manifest.json) is not raw text."""
    from training.config import RAW_TEXT_LIMIT_MB

    if len(matches) == 1 and os.path.isfile(os.path.join(matches[0], "manifest.json")):
        return []
    files = [m for m in matches if os.path.isfile(m)]
    files += [str(p) for m in matches if os.path.isdir(m) for p in Path(m).rglob("*") if p.is_file()]
    megabytes = sum(os.path.getsize(f) for f in files) / 1e6
    if megabytes <= RAW_TEXT_LIMIT_MB:
        return []
    return [SpecProblem(
        path=".".join(loc), line=doc.line_of(loc), value=repr(value),
        message=f"holds {megabytes:,.0f} MB of raw text, above the {RAW_TEXT_LIMIT_MB} MB the raw-text path "
                f"reads (every rank would tokenize all of it into memory)",
        hint="tokenize it once with `dlaunch prepare DATA_SPEC` (inputs: this path, output: a local path or "
             "s3:// prefix), then set training.data.prepared to that output")]


def _world_sizes_text(global_batch: int, shown: int = 12) -> str:
    """The data-parallel sizes that split `global_batch` evenly, the first `shown` of them."""
    sizes = divisors(global_batch)
    return ", ".join(map(str, sizes[:shown])) + (f", ... ({len(sizes)} in all)" if len(sizes) > shown else "")


def batch_problems(spec: JobSpec) -> list[SpecProblem]:
    """The global batch must split evenly over the data-parallel ranks, and the micro-batch divide each share."""
    batch, dp, res = spec.training.batch, spec.world_size, spec.resources
    if batch.global_ % dp:
        lower = batch.global_ // dp * dp
        return [SpecProblem(path="training.batch.global", value=str(batch.global_),
                            message=f"must be divisible by the data-parallel size {dp} "
                                    f"(nodes {res.nodes} x {res.procs_per_node} workers); "
                                    f"the world sizes that keep a global batch of {batch.global_} "
                                    f"are {_world_sizes_text(batch.global_)}",
                            hint=(f"try {lower} or {lower + dp}" if lower else f"try {dp}")
                                 + " (a job resuming a checkpoint must keep its global batch: change the world size)")]
    per_rank = batch.global_ // dp
    if batch.micro is not None and per_rank % batch.micro:
        valid = ", ".join(str(d) for d in divisors(per_rank))
        return [SpecProblem(path="training.batch.micro", value=str(batch.micro),
                            message=f"must divide global / data-parallel = {batch.global_} / {dp} = {per_rank}",
                            hint=f"valid micro-batches: {valid}")]
    return []


def deepspeed_problems(spec: JobSpec) -> list[SpecProblem]:
    """Raw `training.deepspeed` keys that contradict the plan (see `training.config.deepspeed_conflicts`)."""
    return [SpecProblem(path=f"training.deepspeed.{key}", message=message)
            for key, message in deepspeed_conflicts(spec.training, spec.world_size)]


def spec_problems(spec: JobSpec, kubernetes: bool | None = None) -> list[SpecProblem]:
    """Every problem a schema-valid spec can have that needs neither the network nor a model file.

    The one consistency check `validate`, `render` and `submit` share: `validate_document` runs it
    on every load and `check_renderable` before every render, so a spec `validate` calls valid
    is not refused later for a reason it could have known. `kubernetes` adds the checks for
    Kubernetes objects (default: when the spec targets Kubernetes).
    """
    problems = batch_problems(spec) + deepspeed_problems(spec)
    if spec.target == "kubernetes" if kubernetes is None else kubernetes:
        from launcher.targets.kubernetes.checks import kubernetes_problems

        problems += kubernetes_problems(spec)
    return problems


def _located(problem: SpecProblem, doc: YamlDocument) -> SpecProblem:
    """The problem with the YAML line of its field (or of the nearest parent the file has)."""
    if problem.line is not None:
        return problem
    return replace(problem, line=doc.line_of(tuple(problem.path.split("."))))


def validate_document(doc: YamlDocument, source: str = "") -> LoadedSpec:
    """Validate parsed YAML into a `JobSpec`, collecting every problem before raising."""
    if not isinstance(doc.data, dict):
        raise SpecError([SpecProblem(path="(top level)", line=1, value=_short(doc.data),
                                     message="a job spec must be a mapping of keys (name:, training:, ...)")],
                        source)
    problems = _local_path_problems(doc.data, doc)
    spec = None
    try:
        spec = JobSpec.model_validate(doc.data)
    except ValidationError as exc:
        problems = [_problem_from_error(e, doc) for e in exc.errors()] + problems
    if spec is not None:
        problems += [_located(p, doc) for p in spec_problems(spec)]
    if problems or spec is None:
        raise SpecError(sorted(problems, key=lambda p: p.line or 0), source)
    return LoadedSpec(spec=spec, source=source, notes=spec_notes(spec))


def spec_notes(spec: JobSpec) -> list[str]:
    """Valid but worth saying: settings that will be ignored where the job runs."""
    notes = []
    k8s_fields = spec.kubernetes.model_fields_set
    if spec.target == "local" and k8s_fields:
        notes.append("kubernetes: is ignored for target local")
    if spec.target == "local" and spec.resources.gpu_type:
        notes.append("resources.gpu_type is used for planning only; local workers run on this machine's devices")
    if spec.target == "kubernetes" and not spec.training.checkpoint.uri.startswith("s3://"):
        notes.append("training.checkpoint.uri is a path inside the pod: its checkpoints are lost with the pod; "
                     "use an s3:// URI to keep them")
    if spec.image is not None and (mutable := mutable_image_tag(spec.image)):
        notes.append(f"image {spec.image!r} is {mutable}: nodes may run different builds of it, and a retry may "
                     "run another build than the first attempt; pin it by digest (repo@sha256:...) or a "
                     "release tag")
    return notes


def mutable_image_tag(image: str) -> str | None:
    """Why `image` may change under the same name (None for a digest or a release tag).

    Pods pull with `IfNotPresent`: a digest names one build, so pulling again could only fetch
    the same bytes; a mutable tag is what makes `Always` tempting, and the fix is the digest.
    """
    if "@sha256:" in image:
        return None
    last = image.rsplit("/", 1)[-1]
    if ":" not in last:
        return "untagged (Kubernetes reads it as :latest)"
    tag = last.rsplit(":", 1)[1]
    if tag in MUTABLE_TAGS:
        return f"tagged '{tag}', a tag that moves"
    return None


def load_spec(path: str | Path) -> LoadedSpec:
    """Read, parse and validate a spec file. Raises `SpecError` listing every problem."""
    return validate_document(read_yaml_file(path), str(path))


def load_spec_text(text: str, source: str = "<string>") -> LoadedSpec:
    return validate_document(parse_yaml(text, source), source)
