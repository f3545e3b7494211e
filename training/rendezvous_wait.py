"""Wait until a multi-node job's c10d rendezvous host can be reached, before torchrun starts.

In Kubernetes the DNS record of pod 0 (`<job>-0.<job>.<namespace>.svc`) appears only after the
pod has an address and the headless Service has published it. torchrun started earlier fails
with "host not found" on the other pods, and on pod 0 itself it does not recognise the name as
its own and never starts the rendezvous store. So pod 0 (rank 0) waits until the name resolves
to one of its own addresses; every other pod waits until the name resolves and the store port
accepts TCP connections.

The node agent (`training.agent`) calls `wait_for_rendezvous` itself before torchrun starts, so
that it stays the container's PID 1. As a command: `python -m training.rendezvous_wait --host H
--port P --rank R --timeout S`. Exit status 0 when reachable, 69 (EX_UNAVAILABLE) on time-out,
2 on bad arguments, `exitcodes.PREEMPTED` at once on SIGTERM.
Standard library only: it runs before anything heavy is imported.
"""

from __future__ import annotations

import argparse
import signal
import socket
import sys
import time
from types import FrameType
from typing import Callable

from training.exitcodes import PREEMPTED

UNAVAILABLE = 69
LOG_EVERY_S = 30.0


def log(message: str) -> None:
    """One line on stderr, prefixed so it stands out in pod logs."""
    print(f"rendezvous_wait: {message}", file=sys.stderr, flush=True)


def resolve(host: str, port: int) -> set[str]:
    """The IP addresses `host` resolves to now; empty when it does not resolve (yet)."""
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError):
        return set()
    return {str(info[4][0]) for info in infos}


def own_addresses() -> set[str]:
    """Addresses of this machine (pod), as torch's c10d rendezvous matches its own host name."""
    found = {"127.0.0.1", "::1"}
    for name in {socket.gethostname(), socket.getfqdn()}:
        found |= resolve(name, 0)
    return found


def accepts_tcp(host: str, port: int, timeout_s: float) -> bool:
    """Whether a TCP connection to host:port succeeds within `timeout_s`."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def reachable(host: str, port: int, rank: int) -> tuple[bool, str]:
    """One probe: is the rendezvous host ready for this rank? Also says what is still missing."""
    addresses = resolve(host, port)
    if not addresses:
        return False, f"{host} does not resolve yet"
    if rank == 0:
        if addresses & own_addresses():
            return True, f"{host} resolves to this pod ({', '.join(sorted(addresses))})"
        return False, f"{host} resolves to {', '.join(sorted(addresses))}, not (yet) to this pod"
    if accepts_tcp(host, port, timeout_s=2.0):
        return True, f"{host}:{port} accepts connections"
    return False, f"{host} resolves but port {port} does not accept connections yet"


def wait_for_rendezvous(
    host: str, port: int, rank: int, timeout_s: float, interval_s: float = 1.0,
    probe: Callable[[str, int, int], tuple[bool, str]] = reachable,
    clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
) -> bool:
    """Probe until the host is ready or `timeout_s` passes, logging progress now and then."""
    start = clock()
    last_log = -LOG_EVERY_S
    log(f"rank {rank} waiting for rendezvous host {host}:{port} (time-out {timeout_s:g}s)")
    while True:
        ready, detail = probe(host, port, rank)
        elapsed = clock() - start
        if ready:
            log(f"ready after {elapsed:.1f}s: {detail}")
            return True
        if elapsed >= timeout_s:
            log(f"error: gave up after {elapsed:.0f}s: {detail}. Check that the headless Service exists, "
                "publishes not-ready addresses and that pod 0 is scheduled")
            return False
        if elapsed - last_log >= LOG_EVERY_S:
            log(f"still waiting ({elapsed:.0f}s): {detail}")
            last_log = elapsed
        sleep(interval_s)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m training.rendezvous_wait", description=__doc__.split("\n")[0])
    parser.add_argument("--host", required=True, help="rendezvous host name (pod 0)")
    parser.add_argument("--port", required=True, type=int, help="rendezvous (c10d store) port")
    parser.add_argument("--rank", required=True, type=int, help="this node's rank (JOB_COMPLETION_INDEX)")
    parser.add_argument("--timeout", required=True, type=float, help="seconds to wait before giving up")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between probes")
    return parser.parse_args(argv)


def _exit_preempted(signum: int, frame: FrameType | None) -> None:
    log(f"stopped by signal {signum} while waiting")
    sys.exit(PREEMPTED)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit status."""
    signal.signal(signal.SIGTERM, _exit_preempted)
    args = parse_args(argv)
    ok = wait_for_rendezvous(args.host, args.port, args.rank, args.timeout, args.interval)
    return 0 if ok else UNAVAILABLE


if __name__ == "__main__":
    sys.exit(main())
