"""The worker side of dlaunch: everything that runs inside each training process.

This package never imports `launcher`. Importing it is cheap; heavy modules (torch,
transformers, deepspeed) are imported by the submodules that need them.
"""

__version__ = "0.1.0"
