"""The upload process: one per rank, started by `CheckpointManager`, given one save at a time.

Training waits only while DeepSpeed writes the rank's state into a local staging directory.
This process then hashes and uploads those files, writes the rank's upload marker and, on
rank 0, waits for every rank's marker and commits: manifest, then `latest`, then retention.
It is a process rather than a thread so that hashing and the S3 client never hold the GIL
the training step needs. For the same reason it yields the machine to training: it runs in
the idle CPU scheduling class and the idle I/O class (see `lower_priority`), and reads each file
once, hashing the very buffers it uploads.

It ignores SIGINT and SIGTERM (a preempted trainer still needs its last upload) and dies with
its parent (PR_SET_PDEATHSIG), so a killed rank never leaves an upload running behind it.

Protocol, JSON lines: the trainer sends {"op": "upload", ...}, maybe {"op": "abandon", "step"}
while a commit waits for other ranks, and {"op": "exit"}; this process answers every upload
with {"event": "uploaded", "ok", ...} and, when the job has a "commit" part, {"event": "committed", ...}.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import select
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import IO, Any

from training.checkpoint import commit as protocol
from training.checkpoint.errors import CheckpointError, StorageError
from training.checkpoint.storage import TEMP_SUFFIX, LocalStorage, S3Options, Storage, join_uri, local_path, storage_for

log = logging.getLogger("training.checkpoint.uploader")

_PR_SET_PDEATHSIG = 1
# ioprio_set(2)/ioprio_get(2): Linux's include/uapi/linux/ioprio.h; glibc has no wrapper, so by number.
_IOPRIO_WHO_PROCESS = 1
_IOPRIO_CLASS_SHIFT = 13
IOPRIO_CLASS_IDLE = 3
_IOPRIO_SYSCALLS = {"x86_64": (251, 252), "aarch64": (30, 31)}  # machine -> (ioprio_set, ioprio_get)


# ---- the work: upload one rank's staged files, then (rank 0) commit -----------------------------


def upload_staged(storage: Storage, staged: Path, prefix_uri: str) -> list[dict[str, Any]]:
    """Upload every file under `staged` to `prefix_uri`; returns their manifest entries.

    Each file is made read-only, then uploaded and hashed in one pass (the sha256 is computed
    from the buffers that are sent), and its stored size checked, so the sha256 recorded is of
    exactly the bytes that were sent.
    """
    entries = []
    for key in LocalStorage().list(os.fspath(staged)):
        path = staged / key
        path.chmod(0o444)
        uri = join_uri(prefix_uri, key)
        size, digest = _place(storage, path, uri)
        stored = storage.size(uri)
        if stored != size:
            raise StorageError(f"Failed to upload {path} to {uri}: {stored} bytes arrived of {size}")
        entries.append({"path": key, "size": size, "sha256": digest})
    return entries


def _place(storage: Storage, source: Path, uri: str) -> tuple[int, str]:
    """Copy one file to storage, hashing it on the way; (size, sha256) of what was placed.

    A local root on the same filesystem gets a hard link instead of a copy, which reads nothing,
    so there the file is read once to hash it.
    """
    if isinstance(storage, LocalStorage):
        target = local_path(uri)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name[:200]}.{uuid.uuid4().hex[:12]}{TEMP_SUFFIX}")
        hashed = protocol.hash_file(source)
        try:
            with open(source, "rb") as handle:
                os.fsync(handle.fileno())
            os.link(source, tmp)
            os.replace(tmp, target)
            return hashed
        except OSError:  # another filesystem, or links not allowed: copy
            tmp.unlink(missing_ok=True)
    return storage.upload_file_hashed(source, uri)


def run_upload(storage: Storage, job: dict[str, Any]) -> dict[str, Any]:
    """Upload this rank's staged files and write its marker; the reply for the trainer."""
    started = time.monotonic()
    root, step, rank, token = job["root"], job["step"], job["rank"], job["token"]
    try:
        files = upload_staged(storage, Path(job["staged_dir"]), protocol.step_uri(root, step))
        seconds = time.monotonic() - started
        protocol.write_marker(storage, root, step, rank, token, files=files, rng=job["rng"], seconds=seconds)
    except (CheckpointError, OSError) as e:
        log.warning("rank %d: upload of %s failed: %s", rank, protocol.step_uri(root, step), e)
        try:  # lets rank 0 stop waiting at once; if storage is down, it times out or is told at the next save
            protocol.write_marker(storage, root, step, rank, token, error=str(e))
        except CheckpointError:
            pass
        return {"event": "uploaded", "ok": False, "step": step, "error": str(e)}
    finally:
        shutil.rmtree(job["staged_dir"], ignore_errors=True)
    size = sum(f["size"] for f in files)
    log.info("rank %d: uploaded %s (%d files, %.1f MB) in %.2f s", rank, protocol.step_uri(root, step),
             len(files), size / 1e6, seconds)
    return {"event": "uploaded", "ok": True, "step": step, "seconds": seconds, "bytes": size}


def run_commit(storage: Storage, job: dict[str, Any], channel: LineChannel) -> dict[str, Any]:
    """Rank 0: wait for every rank's marker, write the manifest, move `latest`, apply retention."""
    root, step, spec = job["root"], job["step"], job["commit"]
    started = time.monotonic()
    try:
        markers = protocol.await_markers(storage, root, step, job["world"], job["token"], spec["timeout_s"],
                                         pause=lambda seconds: channel.abandon_requested(step, seconds))
        manifest = protocol.build_manifest(step, job["world"], job["token"], markers, spec["states"],
                                           spec["extra"], spec["stage_s"])
        protocol.commit(storage, root, manifest)
    except CheckpointError as e:
        log.warning("%s not committed: %s", protocol.step_uri(root, step), e)
        return {"event": "committed", "ok": False, "step": step, "error": str(e)}
    reply = {"event": "committed", "ok": True, "step": step, "token": job["token"],
             "seconds": time.monotonic() - started, "deleted": []}
    try:
        reply["deleted"] = protocol.apply_retention(storage, root, step, spec["keep_last"], spec["keep_best"],
                                                    spec["best_mode"])
    except CheckpointError as e:  # the checkpoint is committed; old ones are retried after the next commit
        log.warning("retention after %s failed: %s", protocol.step_uri(root, step), e)
    log.info("committed %s (retention deleted %s)", protocol.step_uri(root, step), reply["deleted"] or "nothing")
    return reply


# ---- the process ---------------------------------------------------------------------------------


class LineChannel:
    """JSON lines read from a file descriptor, with a timeout (to hear "abandon" while polling)."""

    def __init__(self, fd: int) -> None:
        self.fd, self.buffer, self.closed = fd, b"", False
        self.exit_requested = False

    def read(self, timeout: float | None = None) -> dict[str, Any] | None:
        """The next message; None at end of input or when `timeout` passes first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self.buffer:
            if self.closed:
                return None
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not select.select([self.fd], [], [], left)[0]:
                return None
            chunk = os.read(self.fd, 65536)
            self.closed = not chunk
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return json.loads(line)

    def abandon_requested(self, step: int, seconds: float) -> str | None:
        """Wait up to `seconds`; the reason if the trainer asked to abandon the commit of `step` or to exit."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            message = self.read(timeout=left)
            if message is None:
                if self.closed:
                    time.sleep(left)
                continue
            if message.get("op") == "exit":
                self.exit_requested = True
                return "the trainer is exiting"
            if message.get("op") == "abandon" and message.get("step") == step:
                return str(message.get("reason", "abandoned by the trainer"))
        return None


def die_with_parent(parent_pid: int) -> None:
    """Ask Linux to SIGKILL this process when its parent dies; exit now if it already has."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the closed pipe still ends the loop between jobs
        pass
    if os.getppid() != parent_pid:
        os._exit(1)


def lower_priority(niceness: int) -> list[str]:
    """Make this process take only CPU and disk time that training leaves idle; what could not be done.

    Call it before any thread starts: Linux applies each setting to the calling thread, and the
    threads it starts later (boto3's transfer threads) inherit them.
    - nice `niceness` (shown by ps and top; the CPU weight if the idle class is refused);
    - CPU scheduling class SCHED_IDLE: weight 3 against 1024 for a nice-0 trainer thread, where nice
      10 still weighs 110, about 10 % of a shared core (Linux kernel/sched/core.c,
      `set_load_weight`, WEIGHT_IDLEPRIO; `sched_prio_to_weight`). No privilege is needed to lower it;
    - I/O class idle: served only when no other I/O waits, by the schedulers that use classes (BFQ;
      `none` and `mq-deadline` ignore it). Linux block/ioprio.c, `ioprio_set` with who=0 sets the
      calling thread's io_context; kernel/fork.c, `copy_io`, copies it to new threads.
    It never fails: a setting the system refuses (a seccomp filter, another OS) is reported instead.
    """
    refused = []
    try:
        os.nice(niceness)
    except OSError as e:
        refused.append(f"nice {niceness}: {e}")
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (OSError, AttributeError) as e:
        refused.append(f"SCHED_IDLE: {e}")
    try:
        set_ioprio(0, IOPRIO_CLASS_IDLE, 0)
    except OSError as e:
        refused.append(f"idle I/O class: {e}")
    return refused


def _ioprio_call(which: int, *args: int) -> int:
    """ioprio_set (which=0) or ioprio_get (which=1) through libc's syscall(2); OSError if refused."""
    numbers = _IOPRIO_SYSCALLS.get(os.uname().machine)
    if numbers is None:
        raise OSError(f"no ioprio system call number known for {os.uname().machine}")
    libc = ctypes.CDLL(None, use_errno=True)
    result = libc.syscall(ctypes.c_long(numbers[which]), *(ctypes.c_int(a) for a in args))
    if result < 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))
    return result


def set_ioprio(pid: int, io_class: int, level: int) -> None:
    """Set the I/O scheduling class and level of thread `pid` (0: the calling thread)."""
    _ioprio_call(0, _IOPRIO_WHO_PROCESS, pid, (io_class << _IOPRIO_CLASS_SHIFT) | level)


def get_ioprio(pid: int) -> tuple[int, int]:
    """(I/O scheduling class, level) of thread `pid`: what `ionice -p` shows."""
    value = _ioprio_call(1, _IOPRIO_WHO_PROCESS, pid)
    return value >> _IOPRIO_CLASS_SHIFT, value & ((1 << _IOPRIO_CLASS_SHIFT) - 1)


def serve(config: dict[str, Any], channel: LineChannel, out: IO[bytes]) -> None:
    """Run upload jobs until told to exit or the trainer goes away."""
    options = S3Options(**config["s3_options"]) if config.get("s3_options") else None
    storages: dict[str, Storage] = {}

    def send(reply: dict[str, Any]) -> None:
        out.write(json.dumps(reply).encode() + b"\n")
        out.flush()

    while not channel.exit_requested and (job := channel.read()) is not None and job.get("op") != "exit":
        if job.get("op") != "upload":
            continue  # a late "abandon" for a commit that already ended
        scheme = "s3" if job["root"].startswith("s3://") else "local"
        if scheme not in storages:
            storages[scheme] = storage_for(job["root"], endpoint_url=config.get("endpoint_url"), s3_options=options)
        uploaded = run_upload(storages[scheme], job)
        send(uploaded)
        if job.get("commit") is not None:
            send(run_commit(storages[scheme], job, channel) if uploaded["ok"] else
                 {"event": "committed", "ok": False, "step": job["step"],
                  "error": f"rank {job['rank']} could not upload: {uploaded['error']}"})


def main() -> int:
    config = json.loads(sys.argv[1])
    refused = lower_priority(config["niceness"]) if config.get("niceness") else []
    die_with_parent(config["parent_pid"])
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # stray prints must not corrupt the reply stream
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s %(levelname)s upload[{config.get('rank', '?')}]: "
                                                   "%(message)s")
    logging.getLogger("botocore").setLevel(logging.WARNING)
    for what in refused:
        log.info("could not lower this process's priority (%s); uploads compete with training for it", what)
    serve(config, LineChannel(0), out)
    return 0


# ---- the trainer's side --------------------------------------------------------------------------


class UploadProcess:
    """The trainer's handle on its upload process: started on first use, one job at a time."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def submit(self, job: dict[str, Any]) -> None:
        """Hand a job over; (re)starts the process if it is not running."""
        if self._proc is None or self._proc.poll() is not None:
            self._proc = self._start()
        self._send({"op": "upload", **job})

    def reply(self, event: str) -> dict[str, Any]:
        """Block for the next reply, which must be `event`; a dead process gives a failed reply."""
        line = self._proc.stdout.readline() if self._proc is not None else b""
        if not line:
            return {"event": event, "ok": False, "error": self._death_note()}
        reply = json.loads(line)
        if reply.get("event") != event:
            raise CheckpointError(f"upload process answered {reply.get('event')!r} where {event!r} was due")
        return reply

    def abandon(self, step: int, reason: str) -> None:
        """Tell a commit that waits for other ranks' uploads to give up."""
        self._send({"op": "abandon", "step": step, "reason": reason})

    def close(self, timeout: float = 30.0) -> None:
        """Ask the process to exit (abandoning a commit still waiting for other ranks); kill it if it hangs."""
        if self._proc is None:
            return
        self._send({"op": "exit"})
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        for pipe in (self._proc.stdin, self._proc.stdout):
            if pipe is not None:
                pipe.close()
        self._proc = None

    def _start(self) -> subprocess.Popen[bytes]:
        package_root = os.fspath(Path(__file__).resolve().parents[2])
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        config = {**self.config, "parent_pid": os.getpid()}
        return subprocess.Popen([sys.executable, "-m", "training.checkpoint.uploader", json.dumps(config)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, close_fds=True)

    def _send(self, message: dict[str, Any]) -> None:
        if self._proc is None or self._proc.stdin is None:
            return
        try:
            self._proc.stdin.write(json.dumps(message).encode() + b"\n")
            self._proc.stdin.flush()
        except (BrokenPipeError, ValueError):  # it died: the next reply() says so
            pass

    def _death_note(self) -> str:
        proc, self._proc = self._proc, None
        code = proc.wait() if proc is not None else None
        return f"the upload process exited with code {code} before answering; see this rank's log"


if __name__ == "__main__":
    sys.exit(main())
