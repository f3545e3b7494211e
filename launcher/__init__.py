"""The user side of dlaunch: spec, planner, targets and CLI. Cheap to import."""

from training import __version__

__all__ = ["__version__"]
