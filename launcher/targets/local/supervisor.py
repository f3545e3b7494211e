"""The supervisor of one local job: `python -m launcher.targets.local.supervisor <run_dir>`.

`launch` starts it in a session of its own, detached from the terminal, so the job outlives the
command that submitted it. It runs exactly `request.json`: each process in its own process group
(a torchrun agent and its workers stop together), output appended to its log. It records every
pid and exit code in `state.json` and ends when the job ends:

- when an agent fails, the others get `SETTLE_S` to exit on their own (their rendezvous closes),
  then SIGTERM; the job's code is the most telling one (`state.job_exit_code`);
- on SIGTERM (`dlaunch cancel`) it SIGTERMs every agent; torch elastic passes it to the workers,
  which finish their step, checkpoint and exit 75 (training/agent.py). Whatever still runs after
  the request's grace period is killed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from launcher.targets.local.paths import RunPaths
from launcher.targets.local.request import LocalRequest
from launcher.targets.local.state import AgentState, RunState, job_exit_code, start_time

POLL_S = 0.2
SETTLE_S = 10.0


class Supervisor:
    """Starts the request's processes, records them, stops them on SIGTERM or a failure."""

    def __init__(self, paths: RunPaths) -> None:
        self.paths = paths
        self.request = LocalRequest.from_json(paths.request_file.read_text(encoding="utf-8"))
        self.state = RunState(os.getpid(), start_time(os.getpid()), time.time())
        self.processes: list[subprocess.Popen[bytes]] = []
        self.stop_requested = False

    def start(self) -> None:
        env = {**os.environ, **self.request.env}
        for process in self.request.processes:
            with (self.paths.log_dir / process.log).open("ab") as log:
                child = subprocess.Popen(process.argv, stdout=log, stderr=subprocess.STDOUT, env=env,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
            self.processes.append(child)
            self.state.agents.append(AgentState(process.name, child.pid, start_time(child.pid)))
        self.state.save(self.paths)

    def record_exits(self) -> bool:
        """Note newly exited processes in the state file; True when all have exited."""
        changed = False
        for child, agent in zip(self.processes, self.state.agents):
            code = child.poll()
            if code is not None and agent.exit_code is None:
                agent.exit_code, changed = code, True
        if changed:
            self.state.save(self.paths)
        return all(agent.exit_code is not None for agent in self.state.agents)

    def signal_all(self, signum: int) -> None:
        for child in self.processes:
            if child.poll() is None:
                try:
                    os.killpg(child.pid, signum)
                except ProcessLookupError:
                    pass

    def stop(self) -> None:
        """SIGTERM every process group; SIGKILL what still runs after the grace period."""
        self.signal_all(signal.SIGTERM)
        deadline = time.monotonic() + self.request.grace_s
        while not self.record_exits() and time.monotonic() < deadline:
            time.sleep(POLL_S)
        self.signal_all(signal.SIGKILL)

    def run(self) -> int:
        """Supervise until every process exited; record and return the job's exit code."""
        self.start()
        failed_at = None
        while not self.record_exits():
            if self.stop_requested:
                self.state.cancelled = True
                self.stop()
                break
            if failed_at is None and any(agent.exit_code not in (None, 0) for agent in self.state.agents):
                failed_at = time.monotonic()
            if failed_at is not None and time.monotonic() - failed_at > SETTLE_S:
                self.stop()
                break
            time.sleep(POLL_S)
        for child in self.processes:
            child.wait()
        self.record_exits()
        self.state.exit_code = job_exit_code([agent.exit_code or 0 for agent in self.state.agents])
        self.state.ended_at = time.time()
        self.state.save(self.paths)
        return self.state.exit_code


def main(argv: list[str]) -> int:
    supervisor = Supervisor(RunPaths(Path(argv[0])))

    def request_stop(signum: int, frame: FrameType | None) -> None:
        supervisor.stop_requested = True
    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    return supervisor.run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
