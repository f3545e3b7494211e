"""dlaunch prepare in one process (engine: inline): formats, random access, labels, bad input, the cache."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from training.checkpoint.storage import LocalStorage
from training.data.prepare.cache import ShardCache, ShardFile, _sha256
from training.data.prepare.config import PrepareSpec
from training.data.prepare.errors import PreparedDataError
from training.data.prepare.reader import PreparedDataset
from training.data.prepare.run import prepare
from training.errors import ConfigError

TUTORIAL = Path("/usr/share/doc/python3.11/html/_sources/tutorial")
WORDNET = Path("/usr/share/wordnet/data.noun")


def glosses(count: int) -> list[dict[str, str]]:
    """Real one-line texts with a label: WordNet noun glosses and their lexicographer file number."""
    records = []
    with WORDNET.open(encoding="utf-8", errors="replace") as handle:
        for line in handle:
            if " | " in line and not line.startswith("  "):
                fields, gloss = line.split(" | ", 1)
                records.append({"text": " ".join(gloss.split()), "label": f"lex{fields.split()[1]}"})
            if len(records) == count:
                break
    return records


def run(inputs: list[str], output: Path, **extra) -> dict:
    spec = PrepareSpec(inputs=inputs, output=str(output), engine="inline",
                       tokenizer={"vocab_size": 600, "sample_mb": 1}, **extra)
    return prepare(spec, report=lambda line: None)


def stream(dataset: PreparedDataset) -> np.ndarray:
    return np.concatenate([dataset.document(i) for i in range(dataset.num_documents)])


def test_random_access_equals_the_concatenated_token_stream(tmp_path: Path) -> None:
    manifest = run([str(TUTORIAL)], tmp_path / "ds", shard_mb=0.05)
    assert len(manifest["shards"]) > 3
    dataset = PreparedDataset(str(tmp_path / "ds"), max_open_shards=2)
    tokens = stream(dataset)
    assert len(tokens) == dataset.num_tokens == manifest["tokens"]
    eos = dataset.eos_id
    assert all(dataset.document(i)[-1] == eos and eos not in dataset.document(i)[:-1]
               for i in range(dataset.num_documents))
    for seq_len in (7, 128):
        assert dataset.num_samples(seq_len) == (len(tokens) - 1) // seq_len
        for i in range(dataset.num_samples(seq_len)):
            assert np.array_equal(dataset.sample(i, seq_len), tokens[i * seq_len:(i + 1) * seq_len + 1])
    with pytest.raises(IndexError, match="out of range"):
        dataset.sample(dataset.num_samples(128), 128)


def test_every_input_format_gives_the_same_tokens(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    import zstandard

    records = glosses(400)
    lines = "".join(json.dumps(r) + "\n" for r in records)
    folder = tmp_path / "src"
    folder.mkdir()
    (folder / "a.txt").write_text("\n\n".join(r["text"] for r in records) + "\n")
    (folder / "a.jsonl").write_text(lines)
    (folder / "a.jsonl.gz").write_bytes(gzip.compress(lines.encode()))
    (folder / "a.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(lines.encode()))
    pq.write_table(pa.table({"text": [r["text"] for r in records]}), folder / "a.parquet", row_group_size=64)
    results = {}
    for name in ("a.txt", "a.jsonl", "a.jsonl.gz", "a.jsonl.zst", "a.parquet"):
        manifest = run([str(folder / name)], tmp_path / name)
        results[name] = (manifest["tokenizer"]["sha256"], stream(PreparedDataset(str(tmp_path / name))).tolist())
    assert len({json.dumps(v) for v in results.values()}) == 1
    assert PreparedDataset(str(tmp_path / "a.txt")).num_documents == 400


def test_classification_examples_carry_their_labels(tmp_path: Path) -> None:
    records = glosses(300)
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records[:150]))
    (tmp_path / "b.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records[150:]))
    manifest = run([str(tmp_path / "*.jsonl")], tmp_path / "ds", task="classification", shard_mb=0.001)
    assert len(manifest["shards"]) == 2
    dataset = PreparedDataset(str(tmp_path / "ds"))
    assert dataset.label_map == sorted({r["label"] for r in records})
    for i in (0, 149, 150, 299):
        ids, label = dataset.example(i)
        assert dataset.label_map[label] == records[i]["label"]
        assert len(ids) > 0


def test_a_bad_line_names_file_and_line_or_is_counted_when_asked(tmp_path: Path) -> None:
    good = [json.dumps(r) for r in glosses(20)]
    source = tmp_path / "bad.jsonl"
    source.write_text("\n".join(good[:5] + ["{not json"] + good[5:] + ['{"body": "no text field"}']) + "\n")
    with pytest.raises(PreparedDataError, match=rf"{source}:6: not valid JSON.*skip_bad_lines"):
        run([str(source)], tmp_path / "strict")
    assert not (tmp_path / "strict" / "manifest.json").exists()
    manifest = run([str(source)], tmp_path / "lenient", skip_bad_lines=True)
    assert (manifest["bad_lines"], manifest["documents"]) == (2, 20)


def test_a_committed_dataset_is_never_overwritten(tmp_path: Path) -> None:
    run([str(TUTORIAL / "interpreter.rst.txt")], tmp_path / "ds")
    before = (tmp_path / "ds" / "manifest.json").read_bytes()
    with pytest.raises(PreparedDataError, match=f"{tmp_path / 'ds'} already holds a committed dataset"):
        run([str(TUTORIAL)], tmp_path / "ds")
    assert (tmp_path / "ds" / "manifest.json").read_bytes() == before


def test_missing_or_corrupt_shards_and_datasets_are_named(tmp_path: Path) -> None:
    manifest = run([str(TUTORIAL)], tmp_path / "ds", shard_mb=0.1)
    with pytest.raises(PreparedDataError, match="no manifest.json") as info:
        PreparedDataset(str(tmp_path / "nothing"))
    assert isinstance(info.value, ConfigError)
    last = manifest["shards"][-1]["name"]
    bin_path = tmp_path / "ds" / "shards" / f"{last}.bin"
    data = bytearray(bin_path.read_bytes())
    data[10] ^= 0xFF
    bin_path.write_bytes(bytes(data))
    dataset = PreparedDataset(str(tmp_path / "ds"))
    dataset.document(0)  # other shards still read
    with pytest.raises(PreparedDataError, match=rf"shard {last}.bin of {tmp_path / 'ds'} is corrupt"):
        dataset.document(dataset.num_documents - 1)
    bin_path.unlink()
    with pytest.raises(PreparedDataError, match=rf"shard {last}.bin of .* is missing"):
        PreparedDataset(str(tmp_path / "ds")).document(dataset.num_documents - 1)


def _shard_files(tmp_path: Path, count: int, size: int) -> list[ShardFile]:
    files = []
    for i in range(count):
        path = tmp_path / "remote" / f"{i:05d}.bin"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(bytes([i]) * size)
        files.append(ShardFile(path.name, str(path), size, _sha256(path)))
    return files


def test_cache_evicts_least_recently_used_shards_but_never_one_in_use(tmp_path: Path) -> None:
    files = _shard_files(tmp_path, 4, 1000)
    reader_a = ShardCache(tmp_path / "cache", 2500, LocalStorage(), "s3://bucket/ds")
    reader_b = ShardCache(tmp_path / "cache", 2500, LocalStorage(), "s3://bucket/ds")
    held = reader_a.acquire(files[0])  # rank A keeps shard 0 open throughout
    for file in files[1:]:
        reader_b.acquire(file).release()
        assert reader_b.size() <= 2500
    names = {p.name for p in reader_b.cached()}
    assert "00000.bin" in names and "00003.bin" in names and len(names) == 2
    assert held.path.read_bytes() == bytes([0]) * 1000
    again = reader_a.acquire(files[0])  # a hit: no second download
    assert reader_a.downloads == 1 and reader_b.downloads == 3
    held.release(), again.release()


def test_cache_rejects_a_corrupt_download_naming_shard_and_dataset(tmp_path: Path) -> None:
    file = _shard_files(tmp_path, 1, 100)[0]
    wrong = ShardFile(file.name, file.uri, file.size, "0" * 64)
    cache = ShardCache(tmp_path / "cache", None, LocalStorage(), "s3://bucket/ds")
    with pytest.raises(PreparedDataError, match="shard 00000.bin of s3://bucket/ds is corrupt"):
        cache.acquire(wrong)
    assert cache.cached() == []
