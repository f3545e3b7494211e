"""Compile the DeepSpeed ops a job on this machine loads, once, before any job needs them.

DeepSpeed builds its C++ ops just in time, on first use, into torch's extension cache
(`TORCH_EXTENSIONS_DIR`, by default ~/.cache/torch_extensions); later loads reuse the build. On a
machine without a GPU two are built: the shared-memory collectives the CPU accelerator loads in
`deepspeed.init_distributed` (deepspeed/comm/torch.py `build_shm_op`), about 40 s on 2 cores, and
CPU Adam for optimizer offload (deepspeed/ops/adam/cpu_adam.py), about 60 s. `make install` runs
`python -m training.prebuild` so that neither lands on the first job (or the first test) that
happens to need it. With a GPU, only CPU Adam is built here (the rest needs the CUDA toolkit and
is left to DeepSpeed). A build that fails is reported and skipped: DeepSpeed tries again, with
its own error, when a job needs the op.
"""

from __future__ import annotations

import sys
import time

from training.distributed import select_accelerator

CPU_OPS = ("ShareMemCommBuilder", "CPUAdamBuilder")
GPU_OPS = ("CPUAdamBuilder",)


def main() -> int:
    device = select_accelerator()  # sets DS_ACCELERATOR before DeepSpeed is imported
    from deepspeed.accelerator import get_accelerator

    accelerator = get_accelerator()
    for name in CPU_OPS if device == "cpu" else GPU_OPS:
        started = time.monotonic()
        builder = accelerator.create_op_builder(name)
        try:
            builder.load(verbose=False)
        except Exception as exc:  # a compiler or header missing: DeepSpeed will say so at use
            print(f"prebuild: {builder.absolute_name()} not built ({exc}); DeepSpeed will try when a job "
                  "uses it", file=sys.stderr)
            continue
        print(f"prebuild: {builder.absolute_name()} ready ({time.monotonic() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
