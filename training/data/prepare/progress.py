"""Progress of a prepare job on stderr: files, MB/s, tokens/s, ETA; then the closing summary."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from training.data.prepare.shards import Unit


class Progress:
    """Counts finished units against the planned ones and reports one line per finished shard."""

    def __init__(self, todo: list[Unit], report: Callable[[str], None]) -> None:
        self.report = report
        self.started = time.monotonic()
        self.total_files = sum(len(u.files) for u in todo)
        self.total_bytes = sum(f.size for u in todo for f in u.files)
        self.files = self.bytes = self.tokens = self.shards = 0
        self.shards_total = len(todo)

    def done(self, record: dict[str, Any]) -> None:
        """One shard committed: report throughput so far and the time left at that rate."""
        self.files += record["input_files"]
        self.bytes += record["input_bytes"]
        self.tokens += record["tokens"]
        self.shards += 1
        elapsed = max(time.monotonic() - self.started, 1e-9)
        rate = self.bytes / elapsed
        eta = (self.total_bytes - self.bytes) / rate if rate else 0.0
        skipped = f", {record['bad_lines']} bad lines skipped" if record["bad_lines"] else ""
        self.report(f"shard {record['name']} ({self.shards}/{self.shards_total})  files {self.files}/"
                    f"{self.total_files}  {rate / 1e6:.2f} MB/s  {self.tokens / elapsed:,.0f} tokens/s  "
                    f"ETA {_clock(eta)}{skipped}")

    def summary(self, manifest: dict[str, Any]) -> None:
        """The closing line: documents, tokens, shards, bytes written and tokens/s of the whole job."""
        written = sum(meta["size"] for shard in manifest["shards"] for meta in shard["files"].values())
        self.report(f"committed: {manifest['documents']:,} documents, {manifest['tokens']:,} tokens, "
                    f"{len(manifest['shards'])} shards, {written / 1e6:.1f} MB, "
                    f"{manifest['timings']['tokens_per_s']:,.0f} tokens/s"
                    + (f", {manifest['bad_lines']} bad lines skipped" if manifest["bad_lines"] else ""))


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
