"""A distributed, resumable sampler: which samples each rank sees in each micro-batch.

Every optimizer step consumes `global_batch` consecutive indices of a per-epoch permutation.
Rank r takes the r-th contiguous share; micro-batch a takes the a-th slice of that share.
So the samples of a step depend only on the step and the data-parallel size, not on how the
share is split into micro-batches, and the whole state is one integer: samples consumed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from training.errors import ConfigError


@dataclass
class SamplerState:
    consumed: int = 0


class ResumableSampler:
    """Yields index lists for one rank's micro-batches, step after step, across epochs."""

    def __init__(self, n_samples: int, global_batch: int, micro: int, rank: int, world: int, seed: int) -> None:
        if n_samples < global_batch:
            raise ConfigError(f"the training set has {n_samples} sequences, fewer than one global batch ({global_batch})")
        self.n_samples, self.global_batch, self.micro = n_samples, global_batch, micro
        self.rank, self.world, self.seed = rank, world, seed
        self.per_rank = global_batch // world
        self.steps_per_epoch = n_samples // global_batch
        self.state = SamplerState()
        self._epoch_cache: tuple[int, np.ndarray] | None = None

    def _permutation(self, epoch: int) -> np.ndarray:
        if self._epoch_cache is None or self._epoch_cache[0] != epoch:
            rng = np.random.default_rng([self.seed, epoch])
            self._epoch_cache = (epoch, rng.permutation(self.n_samples))
        return self._epoch_cache[1]

    @property
    def epoch(self) -> int:
        return self.state.consumed // (self.steps_per_epoch * self.global_batch)

    def next_step(self) -> list[list[int]]:
        """This rank's micro-batches for the next optimizer step; advances the state."""
        step_in_epoch = (self.state.consumed // self.global_batch) % self.steps_per_epoch
        perm = self._permutation(self.epoch)
        start = step_in_epoch * self.global_batch + self.rank * self.per_rank
        share = perm[start:start + self.per_rank].tolist()
        self.state.consumed += self.global_batch
        return [share[i:i + self.micro] for i in range(0, self.per_rank, self.micro)]

    def state_dict(self) -> dict[str, int]:
        return {"consumed": self.state.consumed, "seed": self.seed, "global_batch": self.global_batch}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state.get("global_batch", self.global_batch) != self.global_batch:
            raise ConfigError(
                f"checkpoint was written with global batch {state['global_batch']}, the spec now says "
                f"{self.global_batch}; resuming would change the data order"
            )
        self.state.consumed = int(state["consumed"])
