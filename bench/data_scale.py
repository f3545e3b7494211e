"""Data at scale (issue 13): how fast `dlaunch prepare` tokenizes, against bare baselines.

Prepare part: a corpus of `--mb` MB (default 1,000) of real text (Python's tutorial and WordNet's
glosses, repeated and shuffled into JSON-lines files) is tokenized three ways with one and the
same tokenizer, each limited to one tokenizer thread per CPU it is given:
- `dlaunch prepare` (Ray Data, `--cpus` CPUs), whole job wall time, manifest last;
- a bare HF `tokenizers` `encode_batch` loop over the same files in one process (1 CPU);
- `datasets.load_dataset("json").map(batched=True)` tokenization (1 CPU).
Figures: MB/s per core of each, `prepare_vs_tokenizers` (goal >= 0.7) and
`prepare_vs_hf_datasets` (goal >= 1.0). The prepare figure is the whole job's wall time, start-up
included: about 15 s on this machine (the process, the tokenizer, a local Ray, megatron-core's
import in each Ray worker) before the first shard, which the 1 GB default spreads over the job
as a corpus worth a cluster would. `prepare_s_by_size` shows it: the prepare time of every corpus
the training half prepares (10 MB and 100 MB; the 1 GB one is this part's).

Training part: for prepared corpora of `--train-mb` sizes (default 10, 100 and 1000 MB, under
/tmp), the quickstart's model and batch (llama-tiny, seq_len 128, 2 workers, global 32) run 3
steps through `dlaunch submit`: the time from submit to the first optimizer step (the first
`train` event of metrics.jsonl) and the peak RSS of the largest process of the job (a worker;
`getrusage(RUSAGE_CHILDREN)` of a process that runs `dlaunch submit`). `ttfs_ratio` and
`rss_ratio` are largest / smallest corpus (goal <= 1.3 each). `loader_over_training`: tokens/s
one rank's data pipeline alone delivers (random global indices, micro-batches of the quickstart)
over the tokens/s a quickstart step consumes per rank (goal >= 20).

Last line: one JSON object with the ratios and the absolute figures.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TUTORIAL = Path("/usr/share/doc/python3.11/html/_sources/tutorial")
WORDNET = Path("/usr/share/wordnet/data.noun")
FILE_MB = 8
ONE_THREAD = {"RAYON_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def real_texts() -> list[str]:
    """Paragraphs of the tutorial and WordNet glosses: the real text the corpus is made of."""
    texts = [p for path in sorted(TUTORIAL.glob("*.rst.txt"))
             for p in (" ".join(b.split()) for b in path.read_text().split("\n\n")) if p]
    for line in WORDNET.read_text(errors="replace").splitlines():
        if " | " in line and not line.startswith("  "):
            texts.append(line.split(" | ", 1)[1].strip())
    return texts


def make_corpus(folder: Path, megabytes: float, seed: int = 0) -> float:
    """Write JSON-lines files of about FILE_MB MB until `megabytes` MB; returns the MB written."""
    texts, rng = real_texts(), random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    written, part = 0, 0
    while written < megabytes * 1e6:
        rng.shuffle(texts)
        lines, size = [], 0
        for text in texts:
            lines.append(json.dumps({"text": text}) + "\n")
            size += len(lines[-1])
            if size >= min(FILE_MB * 1e6, megabytes * 1e6 - written):
                break
        (folder / f"part-{part:04d}.jsonl").write_text("".join(lines))
        written, part = written + size, part + 1
    return written / 1e6


def make_tokenizer(corpus: Path, directory: Path, vocab_size: int) -> None:
    """A byte-level BPE trained on the first file, saved as a pretrained tokenizer directory."""
    from training.data.tokenizer import EOS, train_bpe

    first = sorted(corpus.glob("*.jsonl"))[0]
    texts = [json.loads(line)["text"] for line in first.read_text().splitlines()]
    directory.mkdir(parents=True, exist_ok=True)
    train_bpe(texts, vocab_size).save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(json.dumps({"eos_token": EOS,
                                                                 "tokenizer_class": "PreTrainedTokenizerFast"}))


def timed(command: list[str], env: dict[str, str]) -> tuple[float, str]:
    started = time.monotonic()
    done = subprocess.run(command, cwd=REPO, env={**os.environ, **env}, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return time.monotonic() - started, done.stdout


def measure_prepare(corpus: Path, tokenizer: Path, out: Path, cpus: int) -> dict[str, float]:
    job = out.parent / "prepare.json"
    job.write_text(json.dumps({"inputs": [str(corpus)], "output": str(out), "num_cpus": cpus,
                               "shard_mb": FILE_MB, "tokenizer": {"pretrained": str(tokenizer)}}))
    seconds, _ = timed([sys.executable, "-m", "training.data.prepare.run", str(job)], {})
    manifest = json.loads((out / "manifest.json").read_text())
    return {"prepare_s": round(seconds, 2), "tokens": manifest["tokens"], "documents": manifest["documents"]}


BASELINE = """
import json, sys, time
from pathlib import Path
from tokenizers import Tokenizer
tok = Tokenizer.from_file(sys.argv[2])
started, tokens = time.monotonic(), 0
for path in sorted(Path(sys.argv[1]).glob("*.jsonl")):
    with open(path) as handle:
        texts = [json.loads(line)["text"] for line in handle]
    for i in range(0, len(texts), 1024):
        tokens += sum(len(e.ids) + 1 for e in tok.encode_batch(texts[i:i + 1024], add_special_tokens=False))
print(json.dumps({"seconds": time.monotonic() - started, "tokens": tokens}))
"""

HF_DATASETS = """
import json, sys, time, tempfile
from pathlib import Path
import datasets
from tokenizers import Tokenizer
datasets.disable_progress_bars()
tok = Tokenizer.from_file(sys.argv[2])
def encode(batch):
    return {"ids": [e.ids for e in tok.encode_batch(batch["text"], add_special_tokens=False)]}
started = time.monotonic()
with tempfile.TemporaryDirectory() as cache:
    files = sorted(str(p) for p in Path(sys.argv[1]).glob("*.jsonl"))
    data = datasets.load_dataset("json", data_files=files, split="train", cache_dir=cache)
    data = data.map(encode, batched=True, batch_size=1024, remove_columns=["text"])
    tokens = sum(len(ids) + 1 for ids in data["ids"])
print(json.dumps({"seconds": time.monotonic() - started, "tokens": tokens}))
"""


def measure_baseline(script: str, corpus: Path, tokenizer: Path) -> float:
    seconds, stdout = timed([sys.executable, "-c", script, str(corpus), str(tokenizer / "tokenizer.json")],
                            ONE_THREAD)
    return json.loads(stdout.strip().splitlines()[-1])["seconds"]


SUBMIT = """
import resource, sys
from launcher.cli import main
code = main(["submit", sys.argv[1], "--runs-dir", sys.argv[2]])
print("MAXRSS_KB", resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
sys.exit(code)
"""


def training_spec(prepared: Path, name: str) -> dict:
    """The quickstart's model, batch and workers on a prepared dataset, 3 steps, no checkpoints in the way."""
    return {
        "name": name, "backend": "deepspeed", "target": "local", "resources": {"nodes": 2, "gpus_per_node": 1},
        "training": {
            "seed": 1234, "model": {"type": "causal-lm", "preset": "llama-tiny"},
            "data": {"prepared": str(prepared), "seq_len": 128, "validation_fraction": 0.01},
            "batch": {"global": 32, "micro": 8}, "max_steps": 3, "precision": "bf16", "zero": {"stage": 2},
            "eval": {"every_steps": 1000, "max_batches": 1},
            "checkpoint": {"uri": str(prepared.parent / "ckpt"), "every_steps": 1000},
            "tracking": {"wandb": {"mode": "disabled"}},
        },
    }


def measure_training(prepared: Path, name: str) -> dict[str, float]:
    """Seconds from `dlaunch submit` to the first optimizer step, peak worker RSS, tokens/s per rank."""
    import yaml

    spec_file = prepared.parent / f"{name}.yaml"
    spec_file.write_text(yaml.safe_dump(training_spec(prepared, name)))
    runs = prepared.parent / "runs"
    started = time.time()
    _, stdout = timed([sys.executable, "-c", SUBMIT, str(spec_file), str(runs)], {})
    events = [json.loads(line) for line in (runs / name / "metrics.jsonl").read_text().splitlines()]
    steps = [e for e in events if e["event"] == "train"]
    rss_kb = int(next(line.split()[1] for line in stdout.splitlines() if line.startswith("MAXRSS_KB")))
    steady = steps[1:] or steps
    return {"ttfs_s": round(steps[0]["time"] - started, 2), "worker_peak_rss_mb": round(rss_kb / 1024, 1),
            "step_tokens_per_s_per_rank": sum(e["tokens_per_s"] for e in steady) / len(steady) / 2}


def measure_loader(prepared: Path, seconds: float = 3.0) -> float:
    """Tokens/s of one rank's pipeline alone: quickstart micro-batches at random global indices."""
    import numpy as np

    from training.data.prepare.reader import PreparedDataset
    from training.data.prepared import LMSamples, tail_splits

    dataset = PreparedDataset(str(prepared), max_open_shards=1 << 16)
    samples = LMSamples(dataset, tail_splits(dataset.num_samples(128), 0.01)[0], 128)
    samples.batch([0])  # warm-up: the megatron-core import (seconds) is start-up, not throughput
    rng, tokens, started = np.random.default_rng(0), 0, time.monotonic()
    while time.monotonic() - started < seconds:
        batch = samples.batch(rng.integers(0, len(samples), 8).tolist())
        tokens += batch["input_ids"].numel()
    return tokens / (time.monotonic() - started)


def measure_sizes(root: Path, sizes: list[float], tokenizer: Path, cpus: int,
                  prepared: dict[float, tuple[Path, float]]) -> dict[str, object]:
    """The training half for each corpus size; ratios of the largest to the smallest. `prepared`:
    datasets already prepared (size -> directory, prepare seconds), used instead of preparing again."""
    per_size = {}
    for megabytes in sizes:
        folder = root / f"train-{megabytes:g}mb"
        if megabytes in prepared:
            dataset, prepare_s = prepared[megabytes]
        else:
            make_corpus(folder / "corpus", megabytes, seed=int(megabytes))
            dataset, prepare_s = folder / "prepared", measure_prepare(folder / "corpus", tokenizer,
                                                                      folder / "prepared", cpus)["prepare_s"]
            shutil.rmtree(folder / "corpus")  # keep /tmp small: training reads only the prepared shards
        per_size[megabytes] = measure_training(dataset, f"scale-{int(megabytes)}mb")
        per_size[megabytes]["prepare_s"] = prepare_s
        per_size[megabytes]["loader_tokens_per_s"] = round(measure_loader(dataset))
    small, large = per_size[min(sizes)], per_size[max(sizes)]
    return {
        "training": {f"{mb:g}MB": figures for mb, figures in per_size.items()},
        "ttfs_ratio": round(large["ttfs_s"] / small["ttfs_s"], 3),
        "rss_ratio": round(large["worker_peak_rss_mb"] / small["worker_peak_rss_mb"], 3),
        "loader_over_training": round(large["loader_tokens_per_s"] / large["step_tokens_per_s_per_rank"], 1),
        "prepare_s_by_size": {f"{mb:g}MB": figures["prepare_s"] for mb, figures in per_size.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mb", type=float, default=1000.0, help="corpus size in MB of the prepare part")
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 1, help="CPUs of prepare's local Ray")
    parser.add_argument("--vocab-size", type=int, default=8192)
    parser.add_argument("--train-mb", default="10,100,1000",
                        help="comma-separated prepared corpus sizes (MB) of the training half; empty: skip it")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dlaunch-data-scale-", dir="/tmp") as tmp:
        root = Path(tmp)
        megabytes = make_corpus(root / "corpus", args.mb)
        make_tokenizer(root / "corpus", root / "tokenizer", args.vocab_size)
        prepared = measure_prepare(root / "corpus", root / "tokenizer", root / "prepared", args.cpus)
        bare_s = measure_baseline(BASELINE, root / "corpus", root / "tokenizer")
        hf_s = measure_baseline(HF_DATASETS, root / "corpus", root / "tokenizer")
        shutil.rmtree(root / "corpus")
        sizes = [float(mb) for mb in args.train_mb.split(",") if mb.strip()]
        reuse = {args.mb: (root / "prepared", prepared["prepare_s"])} if args.mb in sizes else {}
        training = measure_sizes(root, sizes, root / "tokenizer", args.cpus, reuse) if sizes else {}
    per_core = megabytes / prepared["prepare_s"] / args.cpus
    result = {
        "corpus_mb": round(megabytes, 1), "cpus": args.cpus, **prepared,
        "prepare_mb_per_s_per_core": round(per_core, 3),
        "tokenizers_mb_per_s": round(megabytes / bare_s, 3), "hf_datasets_mb_per_s": round(megabytes / hf_s, 3),
        "prepare_vs_tokenizers": round(per_core / (megabytes / bare_s), 3),
        "prepare_vs_hf_datasets": round(per_core / (megabytes / hf_s), 3),
        **training,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
