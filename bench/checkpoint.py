"""Checkpoint benchmark: what saving costs training, and what our S3 layer costs against raw boto3.

(a) Training time blocked per checkpoint: `CheckpointManager.save()` with asynchronous saving
    (blocked while DeepSpeed stages the state on local disk, or while the previous upload ends)
    against synchronous saving (stage, upload and commit) of the same engine state. Goal <= 10 %.
(b) Step time while an upload runs against step time with none, in the same asynchronous run;
    an upload runs from `save()` returning until the manifest's `created_at`. Goal <= 1.2x.
(c) Upload and download throughput of `S3Storage.upload_file` / `download_file` against boto3's
    `upload_file` / `download_file` with the same `TransferConfig`, same file, same server. Goal >= 0.9x.

Everything runs on this machine: a DeepSpeed ZeRO-2 engine (one process, CPU, fp32 + AdamW) and a
SeaweedFS S3 server (`tests/s3server.py`). The trainer uses one intra-op thread so that the upload
process has the rest of the machine; as in production, that process runs in the idle CPU and I/O
scheduling classes at nice 10 and hashes the buffers it uploads (`training.checkpoint.uploader`).
The server stands in for a remote store, so it runs at nice 10 too and takes only CPU the trainer
leaves idle. Figures move a lot when other work shares the machine (about +-0.1 on the step ratio
from run to run); per-run rates are printed to judge that. Last line:
{"async_stall_over_sync": ..., "step_slowdown_during_upload": ..., "upload_ratio_vs_boto3": ...,
"download_ratio_vs_boto3": ...}

    .venv/bin/python bench/checkpoint.py [--preset llama-tiny] [--saves 3] [--file-mib 256]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

MiB = 1024 * 1024
SEQ_LEN, MICRO_BATCH, VOCAB = 64, 8, 4096


def build_engine(preset: str) -> Any:
    """A single-process DeepSpeed ZeRO-2 engine (fp32, AdamW) around a preset llama."""
    import torch

    from training.config import BatchLayout, TrainingConfig
    from training.distributed import init_distributed
    from training.engine.deepspeed import initialize
    from training.models.build import build_causal_lm

    init_distributed()
    torch.manual_seed(0)
    training = TrainingConfig.model_validate({
        "model": {"preset": preset}, "data": {"train": "unused"}, "batch": {"global": MICRO_BATCH},
        "max_steps": 100_000, "precision": "fp32", "zero": {"stage": 2},
    })
    layout = BatchLayout(micro=MICRO_BATCH, grad_accum=1, data_parallel=1, zero_stage=2)
    return initialize(build_causal_lm(training.model, VOCAB), training, layout)[0]


def train_step(engine: Any) -> tuple[float, float]:
    """One optimizer step on random tokens; (start, end) in wall-clock seconds."""
    import torch

    started = time.time()
    batch = torch.randint(0, VOCAB, (MICRO_BATCH, SEQ_LEN))
    engine.backward(engine(input_ids=batch, labels=batch).loss)
    engine.step()
    return started, time.time()


def run_saves(engine: Any, manager: Any, saves: int, steps_between: int, first_step: int) -> dict[str, Any]:
    """`saves` checkpoints, `steps_between` steps apart; blocked seconds per save and every step's span."""
    blocked, steps, returned = [], [], []
    step = first_step
    for _ in range(saves):
        for _ in range(steps_between):
            steps.append(train_step(engine))
            step += 1
        started = time.perf_counter()
        manager.save(engine, step, {"sampler": {"consumed": step}}, {"metric": None})
        blocked.append(time.perf_counter() - started)
        returned.append((step, time.time()))
    for _ in range(steps_between):  # the last upload overlaps these steps too
        steps.append(train_step(engine))
    manager.close()
    return {"blocked": blocked, "steps": steps, "returned": returned}


def upload_windows(manager: Any, returned: list[tuple[int, float]]) -> list[tuple[float, float]]:
    """(save returned, manifest written) per committed checkpoint: when an upload was in flight."""
    from training.checkpoint import commit as protocol
    from training.checkpoint.storage import join_uri

    windows = []
    for step, at in returned:
        manifest = protocol.read_json(manager.storage, join_uri(protocol.step_uri(manager.root, step), "manifest.json"))
        windows.append((at, manifest["created_at"]))
    return windows


def step_seconds(steps: list[tuple[float, float]],
                 windows: list[tuple[float, float]]) -> tuple[list[float], list[float]]:
    """Step durations split into (overlapping an upload, clear of any upload)."""
    during, clear = [], []
    for start, end in steps:
        overlaps = any(start < w_end and end > w_start for w_start, w_end in windows)
        (during if overlaps else clear).append(end - start)
    return during, clear


def bench_saving(server: Any, preset: str, saves: int, staging_dir: str | None) -> dict[str, float]:
    """(a) and (b): the same engine saved synchronously, then asynchronously."""
    import torch

    from training.checkpoint.manager import CheckpointManager

    torch.set_num_threads(1)
    engine = build_engine(preset)
    bucket = server.create_bucket()
    staging = Path(tempfile.mkdtemp(prefix="bench-staging-", dir=staging_dir))
    sync = CheckpointManager(f"s3://{bucket}/sync", 0, 1, 100, False, async_save=False, staging_dir=staging / "sync")
    asyn = CheckpointManager(f"s3://{bucket}/async", 0, 1, 100, False, async_save=True, staging_dir=staging / "async")
    for _ in range(3):
        train_step(engine)
    sync_run = run_saves(engine, sync, saves + 1, 1, 0)
    upload_s = statistics.median(sync_run["blocked"][1:])
    step_s = statistics.median(end - start for start, end in sync_run["steps"])
    between = max(4, 2 * math.ceil(upload_s / step_s) + 2)  # room for the upload, and clear steps after it
    print(f"sync save {upload_s:.2f} s, step {step_s:.3f} s -> {between} steps between async saves")
    async_run = run_saves(engine, asyn, saves + 1, between, 10_000)
    during, clear = step_seconds(async_run["steps"], upload_windows(asyn, async_run["returned"]))
    results = {
        "sync_blocked_s": statistics.mean(sync_run["blocked"][1:]),  # the first save of each starts processes
        "async_blocked_s": statistics.mean(async_run["blocked"][1:]),
        "step_during_upload_s": statistics.median(during),
        "step_clear_s": statistics.median(clear),
    }
    print(f"checkpoint size {checkpoint_bytes(asyn) / MiB:.0f} MiB; steps during uploads {len(during)}, "
          f"clear {len(clear)}")
    return results


def checkpoint_bytes(manager: Any) -> int:
    from training.checkpoint.manager import list_committed

    return list_committed(manager.root)[0].size_bytes


def bench_transfer(server: Any, file_mib: int, repeats: int = 5) -> dict[str, float]:
    """(c): our storage layer against raw boto3 with the same TransferConfig, alternating, median of `repeats`."""
    import boto3
    from boto3.s3.transfer import TransferConfig
    from botocore.config import Config

    from training.checkpoint.storage import S3Options, S3Storage

    options = S3Options()
    transfer = TransferConfig(multipart_threshold=options.multipart_threshold,
                              multipart_chunksize=options.multipart_chunksize,
                              max_concurrency=options.max_concurrency, use_threads=True)
    raw = boto3.session.Session().client("s3", endpoint_url=server.endpoint_url,
                                         config=Config(s3={"addressing_style": "path"}))
    ours = S3Storage(endpoint_url=server.endpoint_url, options=options)
    bucket, work = server.create_bucket(), Path(tempfile.mkdtemp(prefix="bench-transfer-"))
    source = work / "shard.bin"
    source.write_bytes(os.urandom(file_mib * MiB))
    timings: dict[str, list[float]] = {k: [] for k in ("ours_up", "raw_up", "ours_down", "raw_down")}
    actions = {
        "raw_up": lambda i: raw.upload_file(str(source), bucket, f"raw-{i}", Config=transfer),
        "ours_up": lambda i: ours.upload_file(source, f"s3://{bucket}/ours-{i}"),
        # Both sides download the same object (uploaded by raw boto3), into fresh local files.
        "raw_down": lambda i: raw.download_file(bucket, f"raw-{i}", str(work / f"raw-{i}.bin"), Config=transfer),
        "ours_down": lambda i: ours.download_file(f"s3://{bucket}/raw-{i}", work / f"ours-{i}.bin"),
    }
    for i in range(repeats):  # alternate which side goes first, so neither always meets a warmer server
        order = ["raw", "ours"] if i % 2 == 0 else ["ours", "raw"]
        for direction in ("up", "down"):
            for side in order:
                timings[f"{side}_{direction}"].append(timed(lambda: actions[f"{side}_{direction}"](i)))
        for side in ("raw", "ours"):
            (work / f"{side}-{i}.bin").unlink()
    rate = {k: file_mib / statistics.median(v) for k, v in timings.items()}
    runs = {k: [round(file_mib / t) for t in v] for k, v in timings.items()}
    print("throughput MiB/s per run: " + ", ".join(f"{k} {v}" for k, v in runs.items()))
    print("throughput MiB/s (median of %d): " % repeats + ", ".join(f"{k} {v:.0f}" for k, v in rate.items()))
    return {"upload_ratio": rate["ours_up"] / rate["raw_up"], "download_ratio": rate["ours_down"] / rate["raw_down"]}


def lower_priority(pid: int, niceness: int = 10) -> None:
    """Renice every thread of the S3 server: it stands in for a remote store, so it should take
    only CPU the trainer leaves idle (threads it starts later inherit the niceness)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        os.setpriority(os.PRIO_PROCESS, int(task.name), niceness)


def timed(action: Any) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="llama-tiny")
    parser.add_argument("--saves", type=int, default=3, help="measured saves per mode (after one warm-up save)")
    parser.add_argument("--file-mib", type=int, default=256, help="file size for (c); 0 skips (c)")
    parser.add_argument("--staging-dir", help="where ranks stage checkpoints (default: the temp dir)")
    args = parser.parse_args()

    from tests.s3server import SeaweedS3

    # Everything the bench writes (server data, staged checkpoints, transfer files: several GB) lives
    # under one temporary directory that is removed at the end.
    with tempfile.TemporaryDirectory(prefix="bench-checkpoint-") as scratch:
        tempfile.tempdir = scratch
        with SeaweedS3.running(Path(tempfile.mkdtemp(prefix="bench-seaweedfs-"))) as server:
            os.environ.update(server.env())
            lower_priority(server.process.pid)
            transfer = (bench_transfer(server, args.file_mib) if args.file_mib
                        else {"upload_ratio": 0, "download_ratio": 0})
            saving = bench_saving(server, args.preset, args.saves, args.staging_dir)
        tempfile.tempdir = None
    for key, value in saving.items():
        print(f"{key:22} {value:8.3f}")
    print(json.dumps({
        "async_stall_over_sync": round(saving["async_blocked_s"] / saving["sync_blocked_s"], 4),
        "step_slowdown_during_upload": round(saving["step_during_upload_s"] / saving["step_clear_s"], 4),
        "upload_ratio_vs_boto3": round(transfer["upload_ratio"], 4),
        "download_ratio_vs_boto3": round(transfer["download_ratio"], 4),
    }))


if __name__ == "__main__":
    main()
