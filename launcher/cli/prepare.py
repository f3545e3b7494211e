"""`dlaunch prepare SPEC`: tokenize a corpus once into a prepared token-shard dataset.

On this machine (a local Ray, or `--inline`), or with `--on CLUSTER_SPEC` as a KubeRay RayJob on
the Kubernetes cluster that job spec names (`launcher/targets/kubernetes/prepare_job.py`):
`--dry-run` prints the objects, otherwise they are applied like a training job's and can be
followed with `dlaunch status|logs|cancel <name>-prepare`.
"""

from __future__ import annotations

from typing import Any

import click


@click.command("prepare")
@click.argument("spec_path", metavar="SPEC", type=click.Path(exists=True, dir_okay=False))
@click.option("--num-cpus", type=click.IntRange(min=1), help="CPUs of the local Ray (default: the spec's, else all).")
@click.option("--inline", is_flag=True, help="Tokenize in this process instead of a Ray Data job (tiny corpora).")
@click.option("--on", "cluster_spec", metavar="CLUSTER_SPEC", type=click.Path(exists=True, dir_okay=False),
              help="Tokenize on Kubernetes as a KubeRay RayJob `<name>-prepare`: CLUSTER_SPEC is a job spec with "
                   "`target: kubernetes` (image, namespace, secrets, scheduling; resources.nodes Ray workers of "
                   "resources.cpu/memory, no GPUs). SPEC's inputs and output must then be s3:// URIs.")
@click.option("-n", "--namespace", help="With --on: namespace [default: kubernetes.namespace, else the context's].")
@click.option("--context", help="With --on: kubeconfig context [default: kubernetes.context, else current].")
@click.option("--dry-run", is_flag=True, help="With --on: print the objects that would be applied; contact nothing.")
@click.option("--wait", is_flag=True, help="With --on: stay until the RayJob ends; the exit code is its outcome.")
@click.option("--replace", is_flag=True, help="With --on: replace a running prepare job whose specs changed "
                                              "(it resumes from the shards already committed).")
def command(spec_path: str, num_cpus: int | None, inline: bool, cluster_spec: str | None, namespace: str | None,
            context: str | None, dry_run: bool, wait: bool, replace: bool) -> int:
    """Read the data spec SPEC (YAML: inputs, output, tokenizer, ...), tokenize every source into shards
    and commit the dataset (manifest last). Rerun after an interruption: finished shards are kept.

    With --on CLUSTER_SPEC the job runs on Kubernetes as the KubeRay RayJob `<name>-prepare`
    instead (--dry-run prints it); follow it with `dlaunch status|logs|cancel <name>-prepare`."""
    if cluster_spec is None:
        cluster_only = [flag for flag, used in (("--namespace", namespace), ("--context", context),
                                                ("--dry-run", dry_run), ("--wait", wait), ("--replace", replace))
                        if used]
        if cluster_only:
            raise click.UsageError(f"{', '.join(cluster_only)} only apply with --on CLUSTER_SPEC")
        prepare_here(spec_path, num_cpus, inline)
        return 0
    if dry_run and wait:
        raise click.UsageError("--dry-run applies nothing, so there is nothing to --wait for: pass one of them")
    if num_cpus or inline:
        raise click.UsageError("--num-cpus and --inline only apply on this machine: on a cluster, "
                               "resources.nodes and resources.cpu of CLUSTER_SPEC size the Ray cluster")
    return prepare_on_cluster(spec_path, cluster_spec, namespace=namespace, context=context, dry_run=dry_run,
                              wait=wait, replace=replace)


def load_data_spec(spec_path: str) -> Any:
    """The data spec; its problems become a `DlaunchError` (printed without a traceback)."""
    from launcher.errors import DlaunchError
    from training.data.prepare.config import load_prepare_spec
    from training.errors import ConfigError

    try:
        return load_prepare_spec(spec_path)
    except ConfigError as exc:
        raise DlaunchError(str(exc)) from exc


def prepare_here(spec_path: str, num_cpus: int | None, inline: bool) -> None:
    """Tokenize on this machine: a local Ray Data job, or this process with --inline."""
    from launcher.errors import DlaunchError
    from training.data.prepare.errors import PreparedDataError
    from training.data.prepare.run import prepare
    from training.errors import ConfigError

    spec = load_data_spec(spec_path)
    updates = {"num_cpus": num_cpus} if num_cpus else {}
    spec = spec.model_copy(update={**updates, **({"engine": "inline"} if inline else {})})
    try:
        manifest = prepare(spec, report=lambda line: click.echo(line, err=True))
    except (PreparedDataError, ConfigError) as exc:
        raise DlaunchError(f"cannot prepare {spec_path}: {exc}") from exc
    click.echo(f"{spec.output}: {manifest['documents']} documents, {manifest['tokens']} tokens, "
               f"{len(manifest['shards'])} shards")


def prepare_on_cluster(spec_path: str, cluster_path: str, *, namespace: str | None, context: str | None,
                       dry_run: bool, wait: bool, replace: bool) -> int:
    """Render the prepare RayJob from the two specs; print it (--dry-run) or apply it, then say how to
    follow it, or with --wait stay until it ends (0 succeeded, 1 failed)."""
    from launcher.cli.common import warn
    from launcher.spec import load_spec
    from launcher.targets.kubernetes.prepare_job import check_prepare, render_prepare
    from launcher.targets.kubernetes.target import with_namespace

    data = load_data_spec(spec_path)
    loaded = load_spec(cluster_path)
    check_prepare(loaded.spec, data, cluster_path, spec_path)
    for note in loaded.notes:
        if not note.startswith("training."):  # the training settings do not run here
            warn(note)
    pretrained = data.tokenizer.pretrained
    if pretrained is not None and not pretrained.startswith("s3://"):
        warn(f"tokenizer.pretrained {pretrained!r} is read inside the pods: it must be a path in the image")
    cluster = with_namespace(loaded.spec, namespace)
    job, objects = render_prepare(cluster, data)
    if dry_run:
        from launcher.targets.kubernetes.documents import objects_to_yaml

        click.echo(objects_to_yaml(objects), nl=False)
        return 0
    return apply_prepare_job(job, objects, context=context or cluster.kubernetes.context, wait=wait,
                             replace=replace)


def apply_prepare_job(job: Any, objects: list[dict[str, Any]], *, context: str | None, wait: bool,
                      replace: bool) -> int:
    """Pre-flight and apply through the Kubernetes backend, exactly as `submit` applies a Ray job (the
    ConfigMap becomes owned by the RayJob), print what happened and what next; with --wait, follow
    the RayJob to its end with the training jobs' status mapping."""
    from launcher.cli.submit import echo_lines, follow_to_outcome
    from launcher.targets.base import Handle, Where
    from launcher.targets.kubernetes.client import RAY_JOB
    from launcher.targets.kubernetes.pods import namespace_of
    from launcher.targets.kubernetes.target import KubeJob, KubernetesTarget

    target = KubernetesTarget(Where(context=context, namespace=namespace_of(job)))
    backend = target.backend(context, namespace_of(job))
    result = backend.submit(job, objects, replace=replace, wait=wait)
    lines = list(result.messages)
    where = f"namespace {backend.namespace}" + (f" (context {context})" if context else "")
    if result.applied:
        lines.append(f"prepare job {job.name} submitted to {where}: applied {', '.join(result.applied)}")
    ref = f"{job.name} -n {backend.namespace}" + (f" --context {context}" if context else "")
    lines.append(f"next: dlaunch status {ref}  |  dlaunch logs {ref} --follow  |  dlaunch cancel {ref}")
    echo_lines(lines)
    if not wait:
        return 0
    handle = Handle(target.name, job.name, backend.namespace, (), KubeJob(RAY_JOB, context, job))
    return follow_to_outcome(target, handle, follow=False)
