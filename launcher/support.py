"""Which valid spec settings this version can actually run, and which issue will add the rest.

A spec may use every key of the reference format; `validate` accepts them and `submit`
refuses, with this message, the ones whose implementation has not landed yet.
"""

from __future__ import annotations

from launcher.spec import JobSpec


def _uses_s3(spec: JobSpec) -> list[str]:
    t = spec.training
    uris = {
        "training.data.train": t.data.train,
        "training.data.validation": t.data.validation,
        "training.checkpoint.uri": t.checkpoint.uri,
        "training.model.pretrained": t.model.pretrained,
    }
    return [key for key, uri in uris.items() if uri and uri.startswith("s3://")]


def unsupported_features(spec: JobSpec) -> list[str]:
    """Human-readable list of settings in `spec` that `submit` cannot run yet."""
    t = spec.training
    found = []
    if spec.target == "kubernetes":
        found.append("target: kubernetes is not supported yet (manifests and submission are being built)")
    if spec.backend == "ray":
        found.append("backend: ray is not supported yet (the Ray Train backend is being built)")
    for key in _uses_s3(spec):
        found.append(f"{key}: s3:// URIs are not supported yet (use a local path)")
    if t.compression is not None:
        found.append("training.compression is not supported yet")
    if t.entrypoint or t.model.factory or t.model.pretrained:
        found.append("training.entrypoint / model.factory / model.pretrained are not supported yet")
    if t.model.type != "causal-lm":
        found.append("training.model.type: sequence-classification is not supported yet")
    if t.zero.stage == "auto":
        found.append("training.zero.stage: auto is not supported yet (set 0-3)")
    if t.zero.offload_optimizer or t.zero.offload_params:
        found.append("training.zero offload is not supported yet")
    if t.precision == "fp16":
        found.append("training.precision: fp16 is not supported yet (use bf16 or fp32)")
    if t.tracking.tensorboard:
        found.append("training.tracking.tensorboard is not supported yet")
    return found
