"""Jobs on this machine: `nodes` torchrun agents meeting through c10d rendezvous on loopback, exactly as
pods would, under a detached supervisor, managed from `runs/<name>/` (see `target.LocalTarget`)."""

from launcher.targets.local.request import LocalRequest, prepare
from launcher.targets.local.target import LocalTarget, start_agents

__all__ = ["LocalRequest", "LocalTarget", "prepare", "start_agents"]
