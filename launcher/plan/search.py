"""The search: the cheapest ZeRO option and the largest micro-batch that fit, or the smallest change that would.

`choose` walks the allowed options cheapest first and, for each, the micro-batches that divide
the per-rank batch, largest first. When nothing fits, `smallest_changes` tries the spec's
settings one lever at a time (micro-batch, ZeRO stage and offload, host memory, nodes,
sequence length, activation checkpointing), then pairs of them, and keeps the changes that
touch the fewest settings.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

from launcher.gpus import GiB
from launcher.plan.memory import (
    HEADROOM,
    PREFERENCE,
    DeepSpeedBuffers,
    Limits,
    Memory,
    Option,
    activation_bytes,
    construction_bytes,
    host_bytes_per_rank,
    model_state_bytes,
    overhead_bytes,
    step_transient_bytes,
)
from launcher.plan.shape import ModelShape
from launcher.spec import divisors

# Without a memory limit, prefer micro-batches no larger than this when the spec leaves it open
# (with one, the largest micro-batch that fits is chosen).
DEFAULT_MAX_MICRO = 8
# Shorter sequences are suggested in multiples of this.
SEQ_STEP = 64


@dataclass(frozen=True)
class Scenario:
    """The settings a plan is made for; the search for the smallest change varies them."""

    nodes: int
    seq_len: int
    micro: int | None  # fixed by the spec, or None to choose
    options: tuple[Option, ...]
    checkpointing: bool = False
    check_host: bool = True


@dataclass(frozen=True)
class Inputs:
    """Everything about the job that the search does not vary."""

    shape: ModelShape
    precision: str
    global_batch: int
    procs_per_node: int
    limits: Limits
    buffers: DeepSpeedBuffers
    host_is_device: bool = False  # CPU workers: the device total lives in host memory

    def data_parallel(self, scenario: Scenario) -> int:
        """Ranks that split the global batch: nodes x processes per node."""
        return scenario.nodes * self.procs_per_node

    def memory(self, scenario: Scenario, option: Option, micro: int) -> Memory:
        """Per-device memory of `option` at `micro` sequences of `scenario.seq_len` tokens."""
        n, p = self.data_parallel(scenario), self.shape.parameters
        states = model_state_bytes(p, option, n, self.precision)
        act = activation_bytes(self.shape, micro, scenario.seq_len, self.precision, checkpointing=False)
        ckpt = activation_bytes(self.shape, micro, scenario.seq_len, self.precision, checkpointing=True)
        overhead = overhead_bytes(self.shape, option, self.precision, self.buffers)
        transient = step_transient_bytes(p, option, n, self.precision)
        construction = construction_bytes(p, self.shape.largest_layer, option, n, self.precision)
        device = states.device + overhead + max(ckpt if scenario.checkpointing else act, transient)
        host = host_bytes_per_rank(construction, states, device, self.host_is_device)
        return Memory(states, act, ckpt, overhead, transient, host * self.procs_per_node, host, construction)

    def fits(self, scenario: Scenario, memory: Memory) -> bool | None:
        """True/False against device and host memory, each when known (host only when checked);
        None when neither is known."""
        usable, host = self.limits.usable_device, self.limits.usable_host
        if usable is None and host is None:
            return None
        device_ok = usable is None or memory.device_total(scenario.checkpointing) <= usable
        host_ok = not scenario.check_host or host is None or memory.host_per_node <= host
        return device_ok and host_ok


@dataclass(frozen=True)
class Choice:
    """A layout that fits: the option, the micro-batch and what it needs per device."""

    option: Option
    micro: int
    grad_accum: int
    data_parallel: int
    memory: Memory


def _micro_fits(inputs: Inputs, scenario: Scenario, option: Option, micro: int) -> bool:
    return bool(inputs.fits(scenario, inputs.memory(scenario, option, micro)))


def largest_fitting_micro(inputs: Inputs, scenario: Scenario, option: Option) -> int | None:
    """The largest micro-batch (a divisor of the per-rank batch) that fits with `option`, if any."""
    per_rank = inputs.global_batch // inputs.data_parallel(scenario)
    candidates = [scenario.micro] if scenario.micro else reversed(divisors(per_rank))
    return next((m for m in candidates if per_rank % m == 0 and _micro_fits(inputs, scenario, option, m)), None)


def target_micro(per_rank: int) -> int:
    """The micro-batch used when memory does not decide: the largest divisor up to `DEFAULT_MAX_MICRO`."""
    return max(d for d in divisors(per_rank) if d <= DEFAULT_MAX_MICRO)


def choose(inputs: Inputs, scenario: Scenario) -> Choice | None:
    """The first option (cheapest, in `scenario.options` order) that fits, with its largest micro-batch."""
    dp = inputs.data_parallel(scenario)
    if inputs.global_batch % dp:
        return None
    per_rank = inputs.global_batch // dp
    if scenario.micro and per_rank % scenario.micro:
        return None
    for option in scenario.options:
        micro = largest_fitting_micro(inputs, scenario, option)
        if micro is not None:
            return Choice(option, micro, per_rank // micro, dp, inputs.memory(scenario, option, micro))
    return None


@dataclass(frozen=True)
class Change:
    """A change to the spec that makes the job fit, and the layout it then gets."""

    text: str
    choice: Choice
    scenario: Scenario


def _zero_text(option: Option, stage_was_fixed: bool) -> str:
    parts = [f"stage: {option.stage}"]
    parts += [f"{k}: true" for k, on in (("offload_optimizer", option.offload_optimizer),
                                         ("offload_params", option.offload_params)) if on]
    return "set training.zero to {" + ", ".join(parts) + "}" + (" (or stage: auto)" if stage_was_fixed else "")


def _lever_texts(base: Scenario, scenario: Scenario, choice: Choice) -> list[str]:
    """Describe, field by field, how `scenario` differs from the spec."""
    texts = []
    if base.micro and not scenario.micro:
        texts.append(f"set training.batch.micro to {choice.micro} (or leave it out)")
    if scenario.options != base.options:
        texts.append(_zero_text(choice.option, stage_was_fixed=len(base.options) == 1))
    if base.check_host and not scenario.check_host:
        need = choice.memory.host_per_node / (1 - HEADROOM)
        texts.append(f"raise resources.memory to at least {math.ceil(need / GiB)}Gi per node "
                     "(model construction, offloaded states and the workers' runtime)")
    if scenario.nodes != base.nodes:
        texts.append(f"use resources.nodes: {scenario.nodes} (data-parallel size {choice.data_parallel})")
    if scenario.seq_len != base.seq_len:
        texts.append(f"shorten training.data.seq_len to {scenario.seq_len} or less")
    if scenario.checkpointing and not base.checkpointing:
        texts.append("set training.activation_checkpointing: true")
    return texts


@dataclass(frozen=True)
class Lever:
    """One kind of change the planner may suggest; `numeric` ones are searched over values."""

    name: str
    numeric: bool = False


def _levers(inputs: Inputs, base: Scenario) -> list[Lever]:
    """The changes worth trying, least disruptive first; activation checkpointing (extra compute) last."""
    levers = []
    if base.micro:
        levers.append(Lever("micro"))
    if base.options != PREFERENCE:
        levers.append(Lever("zero"))
    if inputs.limits.host_bytes is not None:
        levers.append(Lever("host"))
    levers += [Lever("nodes", numeric=True), Lever("seq", numeric=True)]
    return levers if base.checkpointing else levers + [Lever("checkpointing")]


def _switch(scenario: Scenario, lever: Lever) -> Scenario:
    changes: dict[str, dict[str, Any]] = {
        "micro": {"micro": None}, "zero": {"options": PREFERENCE}, "host": {"check_host": False},
        "checkpointing": {"checkpointing": True},
    }
    return replace(scenario, **changes[lever.name])


def _more_nodes(inputs: Inputs, scenario: Scenario) -> Iterator[Scenario]:
    """Larger node counts that keep the global batch divisible by the data-parallel size."""
    if inputs.global_batch % inputs.procs_per_node:
        return
    for nodes in divisors(inputs.global_batch // inputs.procs_per_node):
        if nodes > scenario.nodes:
            yield replace(scenario, nodes=nodes)


def _shorter_sequence(inputs: Inputs, scenario: Scenario) -> Iterator[Scenario]:
    """The longest sequence below the current one that fits (binary search in steps of SEQ_STEP)."""
    step = SEQ_STEP if scenario.seq_len > SEQ_STEP else 8
    low, high, best = 1, (scenario.seq_len - 1) // step, None
    while low <= high:
        mid = (low + high) // 2
        if choose(inputs, replace(scenario, seq_len=mid * step)) is not None:
            best, low = mid, mid + 1
        else:
            high = mid - 1
    if best is not None:
        yield replace(scenario, seq_len=best * step)


def _try_change(inputs: Inputs, base: Scenario, combo: tuple[Lever, ...]) -> Change | None:
    """Apply the switches in `combo`, search its numeric lever if any, and describe the result."""
    scenario = base
    for lever in combo:
        if not lever.numeric:
            scenario = _switch(scenario, lever)
    numeric = next((lever.name for lever in combo if lever.numeric), None)
    candidates: Iterator[Scenario] = iter([scenario])
    if numeric == "nodes":
        candidates = _more_nodes(inputs, scenario)
    elif numeric == "seq":
        candidates = _shorter_sequence(inputs, scenario)
    for candidate in candidates:
        choice = choose(inputs, candidate)
        if choice is not None:
            return Change(" and ".join(_lever_texts(base, candidate, choice)), choice, candidate)
    return None


def smallest_changes(inputs: Inputs, base: Scenario, limit: int = 3) -> list[Change]:
    """Changes that make the job fit: only those touching the fewest settings, in preference order."""
    levers = _levers(inputs, base)
    found: list[Change] = []
    for size in range(1, len(levers) + 1):
        for combo in itertools.combinations(levers, size):
            if sum(lever.numeric for lever in combo) > 1:
                continue
            change = _try_change(inputs, base, combo)
            if change is not None:
                found.append(change)
            if len(found) == limit:
                return found
        if found:
            return found
    return found
