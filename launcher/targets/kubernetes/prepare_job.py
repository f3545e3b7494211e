"""`dlaunch prepare --on CLUSTER_SPEC`: the Kubernetes objects that tokenize a corpus on a cluster.

A terabyte corpus is tokenized by a KubeRay RayJob, built the way a Ray training job is: the
cluster spec (an ordinary job spec with `target: kubernetes`) gives the image, namespace,
Secrets, scheduling, security settings and `resources` (`nodes` Ray workers of `cpu`/`memory`
each, never GPUs: tokenizing needs none); the data spec (`PrepareSpec`) gives what to tokenize.

The prepare job is the cluster spec under another name, `<name>-prepare`, with `backend: ray`,
no GPUs and the label PREPARE_LABEL, rendered by the training job's own helpers
(`render.render_rayjob` and the Ray head, worker and submitter templates). So it is labelled
`dlaunch.dev/job: <name>-prepare` like any job (`dlaunch status|logs|cancel <name>-prepare`
find it), and it never collides with the training job's objects. The objects:

- a ConfigMap `<name>-prepare-config` with the data spec as JSON (`engine: ray`, `num_cpus`
  unset: the cluster's Ray decides), mounted at CONFIG_DIR in every Ray pod;
- the RayJob, whose entrypoint runs `python -m training.data.prepare.run SPEC_FILE` on the
  head, where Ray's job supervisor points `ray.init` at the cluster (see `training/data/prepare/run.py`).

The backend gives the ConfigMap an owner reference to the RayJob when it applies them, as for
training jobs (`backend.KubernetesBackend._own_dependents`).
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

from launcher.errors import SpecError, SpecProblem
from launcher.spec import JobSpec
from launcher.targets.kubernetes.checks import MAX_RAY_JOB_NAME, derived_name_problems
from launcher.targets.kubernetes.network import render_network_policy
from launcher.targets.kubernetes.pods import CONFIG_DIR, config_map_name, object_meta
from launcher.targets.kubernetes.render import render_rayjob

if TYPE_CHECKING:
    from training.data.prepare.config import PrepareSpec

PREPARE_SUFFIX = "-prepare"
# Marks a prepare job (select them all with `-l dlaunch.dev/prepare`); its value is the digest of
# the data spec, so that the job's spec hash changes with the data spec too: an unchanged
# resubmission is left alone, a changed one asks for --replace while the job runs.
PREPARE_LABEL = "dlaunch.dev/prepare"
SPEC_KEY = "prepare.json"
SPEC_FILE = f"{CONFIG_DIR}/{SPEC_KEY}"
PREPARE_ENTRYPOINT = f"python -m training.data.prepare.run {SPEC_FILE}"
# The name a cluster spec may have at most: KubeRay's RayJob limit less the suffix.
MAX_CLUSTER_NAME = MAX_RAY_JOB_NAME - len(PREPARE_SUFFIX)

Objects = list[dict[str, Any]]


def prepare_job_name(name: str) -> str:
    """The prepare job's name for a cluster spec named `name`."""
    return name + PREPARE_SUFFIX


def cluster_data_spec(data: "PrepareSpec") -> "PrepareSpec":
    """The data spec as the cluster runs it: a Ray Data job on the cluster's Ray (`engine: ray`),
    with no `num_cpus` (that only sizes a local Ray; connecting to a cluster refuses it)."""
    return data.model_copy(update={"engine": "ray", "num_cpus": None})


def data_spec_json(data: "PrepareSpec") -> str:
    """The ConfigMap's JSON: the whole data spec, defaults included, keys sorted (same input, same bytes)."""
    return json.dumps(cluster_data_spec(data).model_dump(mode="json"), indent=1, sort_keys=True) + "\n"


def data_problems(data: "PrepareSpec") -> list[SpecProblem]:
    """Inputs and output a pod cannot reach: anything but s3:// is a path on this machine."""
    problems = [SpecProblem(path=f"inputs[{index}]", value=repr(uri),
                            message="is not an s3:// URI: pods of the cluster cannot read this machine's files",
                            hint="upload the corpus (aws s3 sync DIR s3://bucket/prefix/) and name the s3:// prefix, "
                                 "or run without --on to tokenize on this machine")
                for index, uri in enumerate(data.inputs) if not uri.startswith("s3://")]
    if not data.output.startswith("s3://"):
        problems.append(SpecProblem(path="output", value=repr(data.output),
                                    message="is not an s3:// URI: what pods write to their own disks is lost with them",
                                    hint="name an s3:// prefix (s3://bucket/prepared/name) that training can read"))
    return problems


def cluster_problems(cluster: JobSpec) -> list[SpecProblem]:
    """What keeps a loaded job spec from serving as the cluster of a prepare job."""
    if cluster.target != "kubernetes":
        return [SpecProblem(path="target", value=repr(cluster.target),
                            message="must be kubernetes: --on names the cluster the corpus is tokenized on",
                            hint="pass a spec with `target: kubernetes` (image, resources, kubernetes:), or run "
                                 "without --on to tokenize on this machine")]
    return [SpecProblem(path="name", value=repr(cluster.name), message=problem.message,
                        hint=f"dlaunch prepare adds '{PREPARE_SUFFIX}' to the job's name: choose a name of at most "
                             f"{MAX_CLUSTER_NAME} characters")
            for problem in derived_name_problems(prepare_job_spec(cluster, ""))]


def check_prepare(cluster: JobSpec, data: "PrepareSpec", cluster_source: str = "", data_source: str = "") -> None:
    """Raise `SpecError` naming the file and field of every problem: the cluster spec's first."""
    problems = cluster_problems(cluster)
    if problems:
        raise SpecError(problems, cluster_source)
    problems = data_problems(data)
    if problems:
        raise SpecError(problems, data_source)


def prepare_job_spec(cluster: JobSpec, data_digest: str) -> JobSpec:
    """The cluster spec as the prepare job: its own name, Ray, no GPUs, the prepare label.

    Not validated again (`model_copy`): the name is longer than a spec's own limit, by design,
    and `cluster_problems` checks every name KubeRay derives from it."""
    k8s, res = cluster.kubernetes, cluster.resources
    labels = {**k8s.labels, PREPARE_LABEL: data_digest}
    return cluster.model_copy(update={
        "name": prepare_job_name(cluster.name),
        "backend": "ray",
        "resources": res.model_copy(update={"gpus_per_node": 0, "gpu_type": None, "gpu_memory_gb": None}),
        "kubernetes": k8s.model_copy(update={"labels": labels}),
    })


def data_digest(data: "PrepareSpec") -> str:
    """16 hex digits of the data spec's JSON: a valid label value."""
    return hashlib.sha256(data_spec_json(data).encode()).hexdigest()[:16]


def prepared_output(spec_json: str) -> str | None:
    """The dataset a prepare job writes, from its ConfigMap's data spec (None if unreadable)."""
    try:
        output = json.loads(spec_json).get("output")
    except (ValueError, AttributeError):
        return None
    return output if isinstance(output, str) else None


def render_prepare_configmap(job: JobSpec, data: "PrepareSpec") -> dict[str, Any]:
    """The data spec every Ray pod sees at SPEC_FILE (the job's ConfigMap volume, as for training)."""
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": object_meta(job, config_map_name(job)),
            "data": {SPEC_KEY: data_spec_json(data)}}


def with_cluster_endpoint(cluster: JobSpec, data: "PrepareSpec") -> "PrepareSpec":
    """The data spec with the cluster spec's S3 endpoint (`training.checkpoint.endpoint_url`) when it
    names none: the pods reach the same store the job's checkpoints go to (MinIO, SeaweedFS), not
    AWS. An endpoint in the data spec, or AWS_ENDPOINT_URL in the pods' Secret, still wins."""
    endpoint = cluster.training.checkpoint.endpoint_url
    if data.endpoint_url is not None or endpoint is None:
        return data
    return data.model_copy(update={"endpoint_url": endpoint})


def render_prepare(cluster: JobSpec, data: "PrepareSpec") -> tuple[JobSpec, Objects]:
    """The prepare job's spec and its objects in apply order: ConfigMap, NetworkPolicy (when the
    cluster spec enables it, before any pod exists), RayJob. Checks both specs first."""
    check_prepare(cluster, data)
    data = with_cluster_endpoint(cluster, data)
    job = prepare_job_spec(cluster, data_digest(data))
    objects = [render_prepare_configmap(job, data)]
    if job.kubernetes.network_policy.enabled:
        objects.append(render_network_policy(job))
    objects.append(render_rayjob(job, PREPARE_ENTRYPOINT))
    return job, objects
