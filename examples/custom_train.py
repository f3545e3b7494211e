"""Bring your own training function: `training.entrypoint: examples.custom_train:main`.

dlaunch starts the workers, joins the process group and hands `main` a `TrainContext` with the
resolved job, this worker's rank, the task's data and model builders, a DeepSpeed engine
factory (the spec's ZeRO stage, precision, optimizer and schedule), the checkpoint manager and
the tracker. What happens in between is yours. Return the exit code (or None for 0).
"""

from __future__ import annotations

from typing import Any


def main(ctx: Any) -> int:
    task = ctx.make_task()
    engine = ctx.initialize(task.build_model())
    sampler_state = {"consumed": 0, "seed": ctx.job.training.seed, "global_batch": ctx.job.layout.global_batch}
    ctx.tracker.log("start", step=0, max_steps=ctx.job.training.max_steps, note="custom entrypoint")
    for step in range(1, ctx.job.training.max_steps + 1):
        for micro in range(ctx.job.layout.grad_accum):
            offset = (step * ctx.job.layout.grad_accum + micro) * ctx.job.layout.micro
            indices = [(offset + i) % task.train_size for i in range(ctx.job.layout.micro)]
            batch = {k: v.to(engine.device) for k, v in task.train_batch(indices, step).items()}
            loss = task.loss(engine, batch)
            engine.backward(loss)
            engine.step()
        ctx.tracker.log("train", step=step, loss=loss.item(), lr=max(engine.get_lr()), tokens_per_s=0.0,
                        max_steps=ctx.job.training.max_steps)
    engine.eval()
    ctx.tracker.log("eval", step=ctx.job.training.max_steps, **task.evaluate(engine))
    ctx.checkpoints.save(engine, ctx.job.training.max_steps, {"sampler": sampler_state}, {"note": "custom entrypoint"})
    ctx.tracker.log("end", step=ctx.job.training.max_steps, reason="max_steps")
    return 0
