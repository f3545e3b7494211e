"""dlaunch prepare as a Ray Data job: killed and rerun, and to and from a real S3 server (slow)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.s3server import s3_server  # noqa: F401  (fixture)
from training.data.prepare.config import PrepareSpec
from training.data.prepare.reader import PreparedDataset
from training.data.prepare.run import prepare

pytestmark = pytest.mark.slow
WORDNET = Path("/usr/share/wordnet/data.noun")
TUTORIAL = Path("/usr/share/doc/python3.11/html/_sources/tutorial")
REPO = Path(__file__).resolve().parents[1]


def split_corpus(folder: Path, parts: int) -> None:
    """WordNet's noun glosses (about 15 MB) cut into `parts` .txt files of whole lines."""
    lines = WORDNET.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)
    folder.mkdir(parents=True)
    step = len(lines) // parts + 1
    for i in range(parts):
        (folder / f"part-{i:02d}.txt").write_text("\n".join(lines[i * step:(i + 1) * step]))


def spec_for(corpus: Path, output: Path, engine: str) -> dict:
    return {"inputs": [str(corpus)], "output": str(output), "engine": engine, "num_cpus": 1, "shard_mb": 1.5,
            "tokenizer": {"vocab_size": 1000, "sample_mb": 1}}


def comparable(manifest: dict) -> dict:
    return {key: value for key, value in manifest.items() if key != "timings"}


def test_killed_prepare_resumes_without_redoing_shards_and_matches_an_uninterrupted_one(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    split_corpus(corpus, 10)
    reference = prepare(PrepareSpec(**spec_for(corpus, tmp_path / "reference", "inline")), report=lambda _: None)
    job = tmp_path / "job.json"
    job.write_text(json.dumps(spec_for(corpus, tmp_path / "ds", "ray")))
    progress = tmp_path / "ds" / "progress.json"
    command = [sys.executable, "-m", "training.data.prepare.run", str(job)]
    first = subprocess.Popen(command, cwd=REPO, start_new_session=True, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and first.poll() is None:
        if progress.is_file() and len(json.loads(progress.read_text()).get("shards", {})) >= 2:
            break
        time.sleep(0.1)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    assert not (tmp_path / "ds" / "manifest.json").exists()
    done = json.loads(progress.read_text())["shards"]
    assert 2 <= len(done) < len(reference["shards"]), "the kill came too late to leave work undone"
    mtimes = {name: (tmp_path / "ds" / "shards" / name).stat().st_mtime_ns
              for record in done.values() for name in record["files"]}
    second = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    written = [line for line in second.stderr.splitlines() if line.startswith("shard ")]
    assert len(written) == len(reference["shards"]) - len(done)
    assert all((tmp_path / "ds" / "shards" / n).stat().st_mtime_ns == t for n, t in mtimes.items())
    resumed = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    assert comparable(resumed) == comparable(reference)
    for path in sorted((tmp_path / "reference").rglob("*")):
        twin = tmp_path / "ds" / path.relative_to(tmp_path / "reference")
        if path.is_file() and path.name not in ("manifest.json", "progress.json"):
            assert twin.read_bytes() == path.read_bytes(), path.name


@pytest.fixture
def s3_env(s3_server, monkeypatch):  # noqa: F811
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    return s3_server


def test_prepare_from_and_to_s3_reads_back_through_a_small_shared_cache(s3_env, tmp_path: Path) -> None:
    import zstandard

    bucket = s3_env.create_bucket()
    client = s3_env.client()
    for path in sorted(TUTORIAL.glob("*.rst.txt")):
        client.upload_file(str(path), bucket, f"corpus/{path.name}")
    records = "".join(json.dumps({"text": line.strip()}) + "\n" for line in WORDNET.read_text().splitlines()[40:400])
    client.put_object(Bucket=bucket, Key="corpus/glosses.jsonl.zst",
                      Body=zstandard.ZstdCompressor().compress(records.encode()))
    spec = {"inputs": [f"s3://{bucket}/corpus"], "engine": "inline", "shard_mb": 0.05,
            "tokenizer": {"vocab_size": 800, "sample_mb": 1}}
    remote = prepare(PrepareSpec(output=f"s3://{bucket}/prepared", **spec), report=lambda _: None)
    local = prepare(PrepareSpec(output=str(tmp_path / "local"), **spec), report=lambda _: None)
    assert comparable(remote) == comparable(local) and len(remote["shards"]) > 4
    expected = PreparedDataset(str(tmp_path / "local"))
    shard_bytes = max(sum(f["size"] for f in s["files"].values()) for s in remote["shards"])
    dataset = PreparedDataset(f"s3://{bucket}/prepared", cache_dir=tmp_path / "cache", cache_limit=2 * shard_bytes,
                              max_open_shards=1)
    seq_len = 256
    for _ in range(2):
        for i in range(dataset.num_samples(seq_len)):
            assert np.array_equal(dataset.sample(i, seq_len), expected.sample(i, seq_len))
            assert dataset.cache.size() <= 2 * shard_bytes
    assert dataset.cache.downloads > len(remote["shards"])  # evicted shards were fetched again
    assert (dataset.tokenizer_dir() / "tokenizer.json").is_file()
    dataset.close()
