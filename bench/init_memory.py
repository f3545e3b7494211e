"""Host memory of a ZeRO-3 rank: while the model is built, and through the first steps, against the plan.

Two CPU ranks (gloo) run the worker's own code path for a llama preset (default llama-350m,
about 300M parameters with the 4,096-token BPE vocabulary the worker trains): the task, its
`prepare_model` (sharded under ZeRO-3 by `training.models.sharded`), the DeepSpeed engine from
`training.engine.deepspeed.initialize`, and a few optimizer steps on the task's own batches.
A thread in each rank reads its VmRSS from /proc/self/status every 0.2 s and tags each sample
with the phase (construction, engine, steps). Reported, for the rank that grew most:
- `construction_rss_over_full_model`: peak RSS growth during `prepare_model` (from the RSS just
  before it) over the full fp32 model's bytes (4 x parameters); goal <= 0.6 (ZeRO-3 shards as
  it builds, so a rank holds its partition and one module at a time);
- `measured_over_planned`: the rank's peak RSS over the run over the planner's memory per rank
  for this job (`launcher.plan.estimate_job`, `host_per_rank` of the chosen option: on CPU
  workers the device total plus the process runtime); goal 0.9-1.1.

    .venv/bin/python bench/init_memory.py [--preset llama-350m] [--steps 2] [--precision bf16]

The last line is one JSON object with these ratios and the absolute bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

WORLD = 2
SEQ_LEN = 128
CORPUS = "/usr/share/doc/python3.11/html/_sources/**/*.rst.txt"
SAMPLE_SECONDS = 0.2


def spec_dict(preset: str, steps: int, root: Path, precision: str = "bf16") -> dict[str, Any]:
    """A local 2-rank ZeRO-3 job (bf16 by default): what `dlaunch submit` would plan and hand the workers."""
    return {
        "name": "init-memory", "backend": "deepspeed", "target": "local",
        "resources": {"nodes": 1, "gpus_per_node": WORLD},
        "training": {
            "seed": 1, "model": {"preset": preset}, "data": {"train": CORPUS, "seq_len": SEQ_LEN},
            "batch": {"global": 2 * WORLD, "micro": 2}, "max_steps": steps, "precision": precision,
            "zero": {"stage": 3}, "eval": {"every_steps": 1000, "max_batches": 1},
            "checkpoint": {"uri": str(root / "ckpt"), "every_steps": 1000},
            "tracking": {"wandb": {"mode": "disabled"}},
        },
    }


def rss_bytes() -> int:
    """This process's resident set size (VmRSS)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


class Sampler(threading.Thread):
    """Samples VmRSS every `SAMPLE_SECONDS`, recording the peak per phase."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.phase, self.peaks, self.stop = "start", {}, threading.Event()

    def enter(self, phase: str) -> int:
        """Start `phase`; returns the RSS at its start (also counted as a sample of it)."""
        now = rss_bytes()
        self.phase = phase
        self.peaks[phase] = max(self.peaks.get(phase, 0), now)
        return now

    def run(self) -> None:
        while not self.stop.is_set():
            now = rss_bytes()
            self.peaks[self.phase] = max(self.peaks.get(self.phase, 0), now)
            time.sleep(SAMPLE_SECONDS)


def worker(job_file: str, out_file: str) -> None:
    """One rank: task, model, engine, a few steps; writes its RSS figures as JSON."""
    from training.distributed import init_distributed
    from training.engine.deepspeed import initialize
    from training.models.sharded import parameter_count
    from training.run import load_job
    from training.tasks import make_task

    sampler = Sampler()
    sampler.start()
    job = load_job(job_file)
    worker_info = init_distributed()
    task = make_task(job, worker_info, job.training.checkpoint.uri)
    before = sampler.enter("construction")
    model = task.prepare_model()
    held = sum(p.numel() + (p.ds_tensor.numel() if hasattr(p, "ds_tensor") else 0) for p in model.parameters())
    sampler.enter("engine")
    engine, _ = initialize(model, job.training, job.layout)
    sampler.enter("steps")
    for step in range(job.training.max_steps):
        for micro in range(job.layout.grad_accum):
            start = (step * job.layout.grad_accum + micro) * job.layout.micro + worker_info.rank * 10_000
            batch = task.train_batch([i % task.train_size for i in range(start, start + job.layout.micro)], step)
            engine.backward(task.loss(engine, batch))
            engine.step()
    sampler.enter("done")
    sampler.stop.set()
    Path(out_file).write_text(json.dumps({"rank": worker_info.rank, "before_construction": before,
                                          "peaks": sampler.peaks, "parameters": parameter_count(model),
                                          "elements_held_after_construction": held}))
    # Leave the gloo group before exit: a process that exits with it alive can abort in a C++
    # thread destructor ("terminate called without an active exception") after its figures are written.
    import torch.distributed as dist

    dist.barrier()
    dist.destroy_process_group()


def planned(spec: dict[str, Any]) -> tuple[Any, Any]:
    """The planner's layout and per-rank memory for the spec."""
    from launcher.plan import estimate_job
    from launcher.spec import JobSpec

    plan = estimate_job(JobSpec.model_validate(spec))
    assert plan.layout is not None and plan.chosen_memory is not None, plan.problem
    return plan, plan.chosen_memory


def launch(spec: dict[str, Any], root: Path) -> list[dict[str, Any]]:
    """Start WORLD ranks of this script and collect their figures."""
    from launcher.resolve import job_json, resolve_job
    from launcher.spec import JobSpec
    from training.distributed import free_port

    plan, _ = planned(spec)
    job_file = root / "job.json"
    job_file.write_text(job_json(resolve_job(JobSpec.model_validate(spec), plan.layout, str(root / "runs"))))
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "WORLD_SIZE": str(WORLD),
           "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    procs = [subprocess.Popen([sys.executable, __file__, "--worker", str(job_file), str(root / f"rank-{r}.json")],
                              env={**env, "RANK": str(r), "LOCAL_RANK": str(r)}, cwd=REPO,
                              stdout=open(root / f"rank-{r}.log", "w"), stderr=subprocess.STDOUT)
             for r in range(WORLD)]
    codes = [p.wait() for p in procs]
    if any(codes):
        logs = "\n".join((root / f"rank-{r}.log").read_text()[-3000:] for r in range(WORLD))
        raise SystemExit(f"a rank failed ({codes}):\n{logs}")
    return [json.loads((root / f"rank-{r}.json").read_text()) for r in range(WORLD)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="llama-350m")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--precision", choices=["bf16", "fp32"], default="bf16",
                        help="fp32 where the CPU has no bf16 kernels (see launcher/hardware.py)")
    parser.add_argument("--worker", nargs=2, metavar=("JOB", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(*args.worker)
        return
    with tempfile.TemporaryDirectory() as tmp:
        spec = spec_dict(args.preset, args.steps, Path(tmp), args.precision)
        ranks = launch(spec, Path(tmp))
        _, memory = planned(spec)
    full_model = 4 * ranks[0]["parameters"]
    growth = max(r["peaks"]["construction"] - r["before_construction"] for r in ranks)
    peak = max(max(r["peaks"].values()) for r in ranks)
    plan_bytes = memory.host_per_rank  # on CPU workers the host holds the device total too
    for r in ranks:
        print(f"rank {r['rank']}: " + ", ".join(f"{k} {v / 2**30:.2f} GiB" for k, v in r["peaks"].items()))
    print(json.dumps({
        "preset": args.preset, "parameters": ranks[0]["parameters"], "full_model_fp32_bytes": full_model,
        "elements_held_after_construction": max(r["elements_held_after_construction"] for r in ranks),
        "construction_rss_growth_bytes": growth, "construction_rss_over_full_model": round(growth / full_model, 3),
        "peak_rss_bytes": peak, "planned_bytes_per_rank": plan_bytes,
        "planned_device_total_bytes": memory.device_total(),
        "measured_over_planned": round(peak / plan_bytes, 3),
    }))


if __name__ == "__main__":
    main()
