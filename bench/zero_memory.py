"""Measured ZeRO model-state memory per rank against the planner and DeepSpeed's own estimators.

Two CPU ranks (gloo) train a llama preset of at least 100M parameters with DeepSpeed, one ZeRO
stage after another, in bf16 with the DeepSpeed config dlaunch's workers use. For each stage the
bytes of every parameter, gradient and optimizer-state tensor a rank holds are counted (tensor
storages, deduplicated, not process memory):
- gradients after the first micro-step of two (accumulating, before the optimizer step);
- parameters and optimizer states (fp32 master copy, Adam moments) after the optimizer step.
DeepSpeed's gradient-reduction bucket is a communication buffer, not a model state: it is
reported beside the measurement and left out of it, as the planner counts it as overhead.

`planned` is `launcher.plan.model_state_bytes`. `deepspeed` is what
`estimate_zero2_model_states_mem_needs_all_live` (stage 2; stage 0 with one GPU, which
partitions nothing) and `estimate_zero3_model_states_mem_needs_all_live` (stage 3, zero_init=0)
print per GPU; DeepSpeed ships no stage-1 estimator, so stage 1 has none. Those estimators also
count the fp32 gradient copy made during the step, so they exceed the steady-state measurement.

    DS_ACCELERATOR=cpu .venv/bin/python bench/zero_memory.py [--preset llama-125m]

The last line is {"parameters": N, "stages": {"0": {"measured": B, "planned": B, "deepspeed": B}, ...}}.
The exit code is 1 if a measurement is more than 10% away from the plan.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import os
import re
import socket
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

WORLD = 2
SEQ_LEN = 64
TOLERANCE = 0.10
# Small communication buckets keep the run light; they are reported, not counted as model states.
BUCKET = 20_000_000
_GB_ROW = re.compile(r"^\s*([\d.]+)GB \|\s*([\d.]+)GB \| (.*)$")


def tensors_in(obj: Any, path: str = "opt", seen: set[int] | None = None, depth: int = 0) -> Iterator[tuple[str, Any]]:
    """Every tensor reachable from a DeepSpeed optimizer, with its attribute path (modules excluded)."""
    import torch

    seen = set() if seen is None else seen
    if depth > 8 or id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        yield path, obj
        if obj.grad is not None:
            yield path + ".grad", obj.grad
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield from tensors_in(value, f"{path}[{key if isinstance(key, (str, int)) else '*'}]", seen, depth + 1)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            yield from tensors_in(value, f"{path}[]", seen, depth + 1)
    elif not isinstance(obj, torch.nn.Module) and type(obj).__module__.startswith(("deepspeed", "torch.optim")):
        for key, value in vars(obj).items():
            yield from tensors_in(value, f"{path}.{key}", seen, depth + 1)


def storage_bytes(tensors: Iterator[Any], exclude: set[int]) -> dict[int, int]:
    """Bytes per distinct storage (by address) of `tensors`, skipping empty ones and `exclude`."""
    found: dict[int, int] = {}
    for tensor in tensors:
        storage = tensor.untyped_storage()
        if storage.nbytes() and storage.data_ptr() not in exclude:
            found[storage.data_ptr()] = storage.nbytes()
    return found


def parameter_storages(engine: Any) -> dict[int, int]:
    """The working copy of the parameters: module tensors, or ZeRO-3's partitions of them."""
    held = []
    for p in engine.module.parameters():
        held.append(p.data)
        if getattr(p, "ds_tensor", None) is not None:
            held.append(p.ds_tensor)
    return storage_bytes(iter(held), set())


def gradient_storages(engine: Any, exclude: set[int]) -> tuple[dict[int, int], dict[int, int]]:
    """(gradients, reduction buckets): `.grad` of parameters and the optimizer's gradient partitions."""
    grads = [p.grad for p in engine.module.parameters() if p.grad is not None]
    buckets = []
    for path, tensor in tensors_in(engine.optimizer):
        if "ipg" in path:
            buckets.append(tensor)
        elif "grad" in path.lower() and "norm" not in path.lower() and tensor.numel() > 1:
            grads.append(tensor)
    bucket_bytes = storage_bytes(iter(buckets), exclude)
    return storage_bytes(iter(grads), exclude | set(bucket_bytes)), bucket_bytes


def optimizer_storages(engine: Any, exclude: set[int]) -> dict[int, int]:
    """Adam moments and the fp32 master copy the wrapped torch optimizer steps on.

    The masters are the keys of the optimizer's state (ZeRO-3 empties `param_groups` between steps).
    """
    basic = engine.optimizer.optimizer if hasattr(engine.optimizer, "optimizer") else engine.optimizer
    held = [t for state in basic.state.values() for t in state.values() if hasattr(t, "untyped_storage")]
    held += list(basic.state.keys()) + [p for group in basic.param_groups for p in group["params"]]
    return {k: v for k, v in storage_bytes(iter(held), exclude).items() if v > 64}


def deepspeed_estimate(model: Any, stage: int) -> int | None:
    """What DeepSpeed's `*_all_live` estimator prints per GPU for this model on WORLD ranks, in bytes."""
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs_all_live
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs_all_live

    if stage == 1:
        return None
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        if stage == 3:
            estimate_zero3_model_states_mem_needs_all_live(model, num_gpus_per_node=WORLD)
        else:
            estimate_zero2_model_states_mem_needs_all_live(model, num_gpus_per_node=WORLD if stage == 2 else 1)
    wanted = "offload_param=none, offload_optimizer=none, zero_init=0" if stage == 3 else "offload_optimizer=none"
    for line in printed.getvalue().splitlines():
        match = _GB_ROW.match(line)
        if match and match.group(3).strip() == wanted:
            return round(float(match.group(2)) * 2**30)
    raise RuntimeError(f"no '{wanted}' row in DeepSpeed's estimate:\n{printed.getvalue()}")


def training_config(preset: str, stage: int) -> Any:
    """The spec's training section for this run (data is never read: batches are random tokens)."""
    from training.config import TrainingConfig

    return TrainingConfig.model_validate({
        "model": {"preset": preset}, "data": {"train": "unused.txt", "seq_len": SEQ_LEN}, "batch": {"global": 4},
        "max_steps": 10, "precision": "bf16", "zero": {"stage": stage},
        "deepspeed": {"zero_optimization": {"reduce_bucket_size": BUCKET, "allgather_bucket_size": BUCKET}},
    })


def measure_stage(preset: str, stage: int, rank: int) -> dict[str, Any]:
    """Train two micro-steps and one optimizer step at `stage`; count this rank's model-state bytes."""
    import deepspeed
    import torch

    from training.config import BatchLayout
    from training.engine.deepspeed import deepspeed_config
    from training.models.build import build_causal_lm
    from training.optim import build_optimizer

    training = training_config(preset, stage)
    torch.manual_seed(0)
    model = build_causal_lm(training.model)
    estimate = deepspeed_estimate(model, stage) if rank == 0 else None
    layout = BatchLayout(micro=1, grad_accum=2, data_parallel=WORLD, zero_stage=stage)
    engine, *_ = deepspeed.initialize(model=model, optimizer=build_optimizer(model, training.optimizer),
                                      config=deepspeed_config(training, layout))
    ids = torch.randint(0, model.config.vocab_size, (1, SEQ_LEN), generator=torch.Generator().manual_seed(rank))
    engine.backward(engine(input_ids=ids, labels=ids).loss)
    params = parameter_storages(engine)
    grads, buckets = gradient_storages(engine, set(params))
    engine.step()
    engine.backward(engine(input_ids=ids, labels=ids).loss)
    engine.step()
    params = parameter_storages(engine)
    optimizer = optimizer_storages(engine, set(params))
    result = {"parameters_bytes": sum(params.values()), "gradients_bytes": sum(grads.values()),
              "optimizer_bytes": sum(optimizer.values()), "bucket_bytes": sum(buckets.values()),
              "deepspeed": estimate}
    engine.destroy()
    del engine, model
    gc.collect()
    return result


def rank_main(rank: int, port: int, preset: str, out_dir: str) -> None:
    """One rank: join the gloo group, measure every stage, write this rank's numbers."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), DS_ACCELERATOR="cpu")
    import deepspeed
    import torch

    torch.set_num_threads(1)
    deepspeed.init_distributed(dist_backend="gloo")
    results = {stage: measure_stage(preset, stage, rank) for stage in range(4)}
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(results))
    torch.distributed.destroy_process_group()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def summarize(preset: str, per_rank: list[dict[str, Any]]) -> dict[str, Any]:
    """Per stage: the largest rank's measurement, the plan, DeepSpeed's estimate (rank 0)."""
    from launcher.plan import Option, count_parameters, model_state_bytes
    from training.config import ModelConfig

    parameters = count_parameters(ModelConfig(preset=preset))
    stages = {}
    for stage in range(4):
        ranks = [r[str(stage)] for r in per_rank]
        measured = max(r["parameters_bytes"] + r["gradients_bytes"] + r["optimizer_bytes"] for r in ranks)
        planned = model_state_bytes(parameters, Option(stage), WORLD, "bf16").device
        stages[str(stage)] = {"measured": measured, "planned": planned, "deepspeed": ranks[0]["deepspeed"]}
        detail = {k: max(r[k] for r in ranks) for k in ("parameters_bytes", "gradients_bytes", "optimizer_bytes",
                                                        "bucket_bytes")}
        print(f"stage {stage}: measured {measured / 2**20:.1f} MiB {detail}, planned {planned / 2**20:.1f} MiB "
              f"({(measured - planned) / planned:+.1%}), deepspeed "
              + ("n/a" if ranks[0]["deepspeed"] is None else f"{ranks[0]['deepspeed'] / 2**20:.1f} MiB"))
    return {"parameters": parameters, "stages": stages}


def main(argv: list[str] | None = None) -> int:
    import torch.multiprocessing as mp

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="llama-125m", help="a llama/gpt2 preset of at least 100M parameters")
    args = parser.parse_args(argv)
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    from launcher.plan import count_parameters
    from training.config import ModelConfig

    if count_parameters(ModelConfig(preset=args.preset)) < 100_000_000:
        parser.error(f"--preset {args.preset} has fewer than 100M parameters; use llama-125m or larger")
    with tempfile.TemporaryDirectory(prefix="zero-memory-") as out_dir:
        mp.spawn(rank_main, args=(free_port(), args.preset, out_dir), nprocs=WORLD, join=True)
        per_rank = [json.loads(Path(out_dir, f"rank{r}.json").read_text()) for r in range(WORLD)]
    summary = summarize(args.preset, per_rank)
    print(json.dumps(summary))
    off = [s for s, v in summary["stages"].items() if abs(v["measured"] - v["planned"]) > TOLERANCE * v["planned"]]
    return 1 if off else 0


if __name__ == "__main__":
    sys.exit(main())
