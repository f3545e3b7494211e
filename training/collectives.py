"""The collectives the training loop uses, behind a small interface so that it can be injected.

`Trainer` needs two things from the process group: a sum over ranks of a few numbers (the step's
loss and tokens with the preemption vote folded in, so one collective per step) and rank 0's
choice of checkpoint sent to everyone. `ProcessGroup` does both with torch.distributed;
`SingleProcess` is a world of one, for unit tests with a fake engine and single-process runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import torch


class Collectives(Protocol):
    """What the loop asks of the other ranks."""

    def all_reduce_sum(self, values: "torch.Tensor") -> "torch.Tensor":
        """The element-wise sum of `values` over all ranks (the tensor stays on its device)."""
        ...

    def broadcast_object(self, value: Any) -> Any:
        """Rank 0's `value`, on every rank."""
        ...


class ProcessGroup:
    """torch.distributed's default group; the tensors live on the engine's device (nccl on GPU)."""

    def all_reduce_sum(self, values: "torch.Tensor") -> "torch.Tensor":
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(values)
        return values

    def broadcast_object(self, value: Any) -> Any:
        from training.distributed import broadcast_object

        return broadcast_object(value)


class SingleProcess:
    """A world of one: sums and broadcasts return their input."""

    def all_reduce_sum(self, values: "torch.Tensor") -> "torch.Tensor":
        return values

    def broadcast_object(self, value: Any) -> Any:
        return value
