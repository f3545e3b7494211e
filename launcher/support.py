"""Which valid spec settings this version can actually run, and which issue will add the rest.

A spec may use every key of the reference format; `validate` accepts them and `submit`
refuses, with this message, the ones whose implementation has not landed yet.
"""

from __future__ import annotations

from launcher.spec import JobSpec


def unsupported_features(spec: JobSpec) -> list[str]:
    """Human-readable list of settings in `spec` that `submit` cannot run yet."""
    t = spec.training
    found = []
    distill = t.compression.distill if t.compression else None
    if distill is not None and t.model.type != "sequence-classification":
        found.append("training.compression.distill: distilling causal LMs is not supported yet "
                     "(sequence-classification is)")
    return found
