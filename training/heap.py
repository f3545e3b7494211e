"""Python's cyclic garbage collector around a worker's start.

A worker imports torch, transformers and DeepSpeed and builds an engine: some 350,000 objects that
live as long as the process. While they are created, the collector runs about 800 times and keeps
re-scanning them (about 1 s of a worker's start measured here); at exit, the interpreter's final
collections scan them again (about 1.3 s). So a process entrypoint turns the collector off while it
starts (`defer_collection`), and once the job is built `settle_after_start` runs one full
collection (0.3 s: what start-up left as cyclic garbage is freed, nothing leaks) and then moves
every survivor out of the collector's view with `gc.freeze()`: later collections, during training
and at exit, only look at objects created after it. Reference counting frees memory as usual
throughout; only cycles wait for the one collection.
"""

from __future__ import annotations

import gc


def defer_collection() -> None:
    """Turn the cyclic collector off until `settle_after_start` (call it first thing in a process)."""
    gc.disable()


def settle_after_start() -> None:
    """Collect once, freeze what survived and turn the collector back on. Does nothing when the
    collector is on (the caller did not defer it, e.g. a test calling the training function)."""
    if gc.isenabled():
        return
    gc.collect()
    gc.freeze()
    gc.enable()
