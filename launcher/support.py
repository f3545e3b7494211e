"""Which valid spec settings this version, or this machine, can actually run.

A spec may use every key of the reference format; `validate` accepts them and `submit`
refuses, with this message, the ones whose implementation has not landed yet. For a local job
it also refuses, before any worker starts, what would only fail inside the workers: a precision
this machine's accelerator lacks, and a model that the job's committed checkpoints (which a
resubmission resumes) were not written for; and it notes what would run, but badly (bf16 on a
CPU without bf16 kernels).
"""

from __future__ import annotations

from launcher.spec import JobSpec


def unsupported_features(spec: JobSpec) -> list[str]:
    """Human-readable list of settings in `spec` that `submit` cannot run (here), each with the fix."""
    t = spec.training
    found = []
    distill = t.compression.distill if t.compression else None
    if distill is not None and t.model.type != "sequence-classification":
        found.append("training.compression.distill: distilling causal LMs is not supported yet "
                     "(sequence-classification is)")
    return found


def local_run_problems(spec: JobSpec) -> list[str]:
    """Why this machine cannot run a valid local job: its precision, or checkpoints of another model."""
    if spec.target != "local":
        return []
    return hardware_problems(spec) + checkpoint_problems(spec)


def uses_deepspeed_engine(spec: JobSpec) -> bool:
    """Whether the workers build a DeepSpeed engine: always, except Ray with `zero.stage: 0` (plain DDP)."""
    return spec.backend == "deepspeed" or spec.training.zero.stage != 0


def hardware_problems(spec: JobSpec) -> list[str]:
    """A local job's settings that this machine cannot train with (see `launcher.hardware`)."""
    from launcher.hardware import precision_problem

    if spec.target != "local" or not uses_deepspeed_engine(spec):
        return []
    problem = precision_problem(spec.training.precision)
    return [problem] if problem else []


def local_run_notes(spec: JobSpec) -> list[str]:
    """What this machine can run for a local job, but slowly, with the faster choice (see `launcher.hardware`)."""
    from launcher.hardware import precision_note

    if spec.target != "local":
        return []
    note = precision_note(spec.training.precision)
    return [note] if note else []


def _local_job_root(spec: JobSpec) -> str | None:
    """`<checkpoint uri>/<name>` as an absolute local path, or None for remote (s3://) storage."""
    import os

    uri = spec.training.checkpoint.uri
    if uri.startswith("file://"):
        uri = uri[len("file://"):]
    elif "://" in uri:
        return None
    return os.path.join(os.path.abspath(uri), spec.name)


def checkpoint_problems(spec: JobSpec) -> list[str]:
    """The model change that would make a resubmitted local job resume from checkpoints of another
    model. Reads only `latest`, one manifest and model.json; remote checkpoints are left to the
    workers, which compare the built model before loading anything."""
    from training.models.compat import incompatible_message, spec_differences
    from training.models.restore import CHECKPOINTS_DIR, recorded_model

    root = _local_job_root(spec)
    recorded = recorded_model(root) if root is not None else None
    differences = spec_differences(recorded, spec.training.model) if recorded is not None else []
    if not differences:
        return []
    return ["training.model: " + incompatible_message(f"{root}/{CHECKPOINTS_DIR}", differences)]
