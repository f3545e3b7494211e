"""The plan as a result: the options table, the chosen layout, the reason, notes and what does not fit.

`Plan` is what `dlaunch plan` prints (the CLI formats it) and what `-o json` writes; the texts
here (notes, the problem and its smallest changes) name spec fields, so that a user can act on
them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from launcher.plan.memory import HEADROOM, OPTIONS, Limits, Memory, Option
from launcher.plan.search import Change, Inputs, Scenario, largest_fitting_micro
from launcher.plan.vocab import planned_vocabulary
from launcher.quantity import format_bytes
from launcher.spec import JobSpec
from training.contract import BatchLayout


@dataclass(frozen=True)
class OptionRow:
    """One line of the plan's table: an option's memory per device at the table's micro-batch."""

    option: Option
    memory: Memory
    fits: bool | None
    max_micro: int | None

    def to_json(self) -> dict[str, Any]:
        """Bytes per device of each part, the host's share, whether it fits and its largest micro-batch."""
        m = self.memory
        return {
            "model_states_bytes": m.states.device,
            "parameters_bytes": m.states.parameters,
            "gradients_bytes": m.states.gradients,
            "optimizer_bytes": m.states.optimizer,
            "activation_bytes": m.activations,
            "activation_checkpointed_bytes": m.activations_checkpointed,
            "overhead_bytes": m.overhead,
            "step_transient_bytes": m.step_transient,
            "total_bytes": m.device_total(),
            "host_bytes_per_node": m.host_per_node,
            "host_bytes_per_rank": m.host_per_rank,
            "construction_bytes": m.construction,
            "fits": self.fits,
            "max_micro": self.max_micro,
        }


@dataclass
class Plan:
    """The planner's answer: model size, memory per device for every option, and the chosen layout.

    `layout` is None only from `estimate_job` when nothing fits; `problem` then says why and
    `changes` lists the smallest changes that would fit.
    """

    parameters: int
    model: str
    precision: str
    seq_len: int
    micro: int  # the micro-batch the table is computed at
    limits: Limits
    rows: list[OptionRow]
    layout: BatchLayout | None
    reason: str
    chosen_memory: Memory | None = None
    notes: list[str] = field(default_factory=list)
    problem: str | None = None
    changes: list[Change] = field(default_factory=list)

    @property
    def memory_checked(self) -> bool:
        """Whether device memory was known, so that `fits` means something."""
        return self.limits.device_bytes is not None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict: parameters, `stages` "0".."3" (bytes per device), `chosen`, notes."""
        stages: dict[str, dict[str, Any]] = {str(s): {} for s in range(4)}
        for row in self.rows:
            entry = stages[str(row.option.stage)]
            if row.option.offload == "none":
                entry.update(row.to_json())
            else:
                entry.setdefault("offload", {})[row.option.offload] = row.to_json()
        return {
            "parameters": self.parameters, "model": self.model, "precision": self.precision,
            "seq_len": self.seq_len, "micro": self.micro, "device": self.limits.device,
            "device_memory_bytes": self.limits.device_bytes, "usable_device_bytes": self.limits.usable_device,
            "host_memory_bytes": self.limits.host_bytes, "headroom": HEADROOM,
            "stages": stages, "chosen": self._chosen_json(), "reason": self.reason, "notes": self.notes,
            "problem": self.problem, "suggestions": [c.text for c in self.changes],
        }

    def _chosen_json(self) -> dict[str, Any] | None:
        if self.layout is None:
            return None
        chosen: dict[str, Any] = {**self.layout.model_dump(), "global_batch": self.layout.global_batch}
        if self.chosen_memory is not None:
            chosen["total_bytes"] = self.chosen_memory.device_total()
            chosen["host_bytes_per_node"] = self.chosen_memory.host_per_node
            chosen["host_bytes_per_rank"] = self.chosen_memory.host_per_rank
        return chosen


def option_rows(inputs: Inputs, scenario: Scenario, micro: int) -> list[OptionRow]:
    """One row per ZeRO option at `micro`, with the largest micro-batch each fits (None without a limit)."""
    rows = []
    for option in OPTIONS:
        memory = inputs.memory(scenario, option, micro)
        fits = inputs.fits(scenario, memory)
        best = largest_fitting_micro(inputs, replace(scenario, micro=None), option) if fits is not None else None
        rows.append(OptionRow(option, memory, fits, best))
    return rows


def common_notes(inputs: Inputs, spec: JobSpec) -> list[str]:
    """Notes every plan carries: where a preset's vocabulary comes from, whether activations are counted."""
    notes = []
    vocabulary = planned_vocabulary(spec.training)
    if spec.training.model.preset and vocabulary.size is not None:
        notes.append(f"vocabulary {vocabulary.size} from {vocabulary.source}")
    if not inputs.shape.knows_activations:
        notes.append("activation memory is unknown for this model (no transformers config); only model states "
                     "and overhead are counted")
    return notes


def _device_problem(spec: JobSpec, inputs: Inputs, base: Scenario, allowed: list[OptionRow], micro: int) -> str:
    """What the leanest allowed option needs per device (and per node, when the host is short too)."""
    lean = min(allowed, key=lambda r: r.memory.device_total())
    r, shape = spec.resources, inputs.shape
    text = (f"{shape.source} ({shape.parameters:,} parameters, {inputs.precision}) does not fit on "
            f"{r.nodes} node(s) x {r.procs_per_node} GPU(s) of {inputs.limits.device} "
            f"({format_bytes(inputs.limits.usable_device or 0)} usable per device after {HEADROOM:.0%} headroom) "
            f"at micro-batch {micro} and training.data.seq_len {base.seq_len}: the leanest allowed option, "
            f"{lean.option.label}, needs {format_bytes(lean.memory.device_total())} per device")
    host = inputs.limits.usable_host
    if host is not None and lean.memory.host_per_node > host:
        text += f" and {format_bytes(lean.memory.host_per_node)} of host memory per node ({format_bytes(host)} usable)"
    return text


def _host_problem(spec: JobSpec, inputs: Inputs, base: Scenario, allowed: list[OptionRow], micro: int) -> str:
    """What the leanest allowed option needs of the node's host memory (`resources.memory`)."""
    lean = min(allowed, key=lambda r: r.memory.host_per_node)
    r, shape = spec.resources, inputs.shape
    return (f"{shape.source} ({shape.parameters:,} parameters, {inputs.precision}) does not fit in "
            f"resources.memory {r.memory} per node ({format_bytes(inputs.limits.usable_host or 0)} usable after "
            f"{HEADROOM:.0%} headroom) with {r.procs_per_node} worker(s) per node at micro-batch {micro} and "
            f"training.data.seq_len {base.seq_len}: the leanest allowed option, {lean.option.label}, needs "
            f"{format_bytes(lean.memory.host_per_node)} per node ({format_bytes(lean.memory.host_per_rank)} per "
            f"worker: construction {format_bytes(lean.memory.construction)}, offloaded states "
            f"{format_bytes(lean.memory.states.host)}, runtime)")


def problem_text(spec: JobSpec, inputs: Inputs, base: Scenario, rows: list[OptionRow], micro: int,
                  changes: list[Change]) -> str:
    """What does not fit, by how much, and the smallest changes that would."""
    allowed = [r for r in rows if r.option in base.options]
    if inputs.limits.usable_device is None:
        text = _host_problem(spec, inputs, base, allowed, micro)
    else:
        text = _device_problem(spec, inputs, base, allowed, micro)
    if not changes:
        return text + ("\n  no change of ZeRO stage, offload, nodes, sequence length or activation checkpointing "
                       "fits; use devices with more memory (resources.gpu_type / gpu_memory_gb) or a smaller model")
    lines = [f"{c.text} -> {c.choice.option.label}, micro-batch {c.choice.micro}: "
             f"{format_bytes(c.choice.memory.device_total(c.scenario.checkpointing))} per device" for c in changes]
    return text + "\n  smallest change: " + lines[0] + "".join(f"\n  or: {line}" for line in lines[1:])
