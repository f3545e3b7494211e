"""What is being learned: causal LM or sequence classification, one module per task.

- `base`: the `Task` interface every task implements, and the helpers they share;
- `causal_lm`: next-token prediction (`CausalLMTask`);
- `classification`: sequence classification (`ClassificationTask`);
- here: `make_task`, the factory the worker entrypoint calls with `training.model.type`.
"""

from __future__ import annotations

from training.config import ResolvedJob
from training.distributed import WorkerInfo
from training.tasks.base import LossFn, Task, equal_shares, read_splits, user_model
from training.tasks.causal_lm import CausalLMTask, vocabulary_difference
from training.tasks.classification import ClassificationTask

__all__ = ["CausalLMTask", "ClassificationTask", "LossFn", "Task", "equal_shares", "make_task", "read_splits",
           "user_model", "vocabulary_difference"]


def make_task(job: ResolvedJob, worker: WorkerInfo, job_root: str) -> Task:
    """The task `training.model.type` names, built with its data for this worker."""
    if job.training.model.type == "sequence-classification":
        return ClassificationTask(job, worker, job_root)
    return CausalLMTask(job, worker, job_root)
