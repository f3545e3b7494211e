"""Training data and pretrained models read from s3:// prefixes of a real S3 server (SeaweedFS)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.s3server import s3_server  # noqa: F401  (fixture)
from training.data.sources import DataError, read_documents
from training.models.pretrained import resolve_pretrained

pytestmark = pytest.mark.slow


@pytest.fixture
def s3_env(s3_server, monkeypatch, tmp_path):  # noqa: F811
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr("training.data.sources.CACHE_DIR", tmp_path / "cache")
    monkeypatch.setattr("training.models.pretrained.CACHE_DIR", tmp_path / "cache")
    return s3_server


def test_documents_from_an_s3_prefix_match_the_local_files(s3_env, tmp_path: Path) -> None:
    bucket = s3_env.create_bucket()
    local = tmp_path / "corpus"
    (local / "part").mkdir(parents=True)
    (local / "a.txt").write_text("alpha para\n\nbeta para\n")
    (local / "part" / "b.jsonl").write_text(json.dumps({"text": "gamma", "label": "x"}) + "\n")
    client = s3_env.client()
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        client.upload_file(str(path), bucket, f"corpora/train/{path.relative_to(local)}")
    from_s3 = read_documents(f"s3://{bucket}/corpora/train", "text", None)
    assert [d.text for d in from_s3] == [d.text for d in read_documents(str(local), "text", None)]
    assert [d.text for d in from_s3] == ["alpha para", "beta para", "gamma"]
    single = read_documents(f"s3://{bucket}/corpora/train/a.txt")
    assert [d.text for d in single] == ["alpha para", "beta para"]


def test_missing_s3_prefix_is_a_data_error(s3_env) -> None:
    bucket = s3_env.create_bucket()
    with pytest.raises(DataError, match=f"s3://{bucket}/nothing"):
        read_documents(f"s3://{bucket}/nothing/")


def test_pretrained_directory_is_downloaded_once_and_cached(s3_env, tmp_path: Path) -> None:
    bucket = s3_env.create_bucket()
    client = s3_env.client()
    client.put_object(Bucket=bucket, Key="models/tiny/config.json", Body=b'{"model_type": "bert"}')
    client.put_object(Bucket=bucket, Key="models/tiny/weights.bin", Body=b"0123")
    first = resolve_pretrained(f"s3://{bucket}/models/tiny")
    assert (first / "config.json").read_bytes() == b'{"model_type": "bert"}'
    client.delete_object(Bucket=bucket, Key="models/tiny/weights.bin")
    assert resolve_pretrained(f"s3://{bucket}/models/tiny") == first  # served from the cache
    assert (first / "weights.bin").read_bytes() == b"0123"
