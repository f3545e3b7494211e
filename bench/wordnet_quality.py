"""Quality of the WordNet MiniLM example against a TF-IDF + logistic-regression baseline.

Runs `examples/wordnet-minilm.yaml` through `dlaunch submit` (2 DeepSpeed workers, early
stopping) into a fresh temporary directory, takes the best validation macro-F1 it logged, and
trains scikit-learn's TF-IDF (word 1-2 grams) + logistic regression on the same train split,
scored on the same validation split: one split, one run of each.

Last line: {"macro_f1": ..., "baseline_macro_f1": ...}.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "data" / "wordnet"
SPEC = REPO / "examples" / "wordnet-minilm.yaml"


def load_split(name: str) -> tuple[list[str], list[str]]:
    records = [json.loads(line) for line in (DATA / f"{name}.jsonl").read_text().splitlines()]
    return [r["text"] for r in records], [r["label"] for r in records]


def baseline_macro_f1() -> float:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score
    from sklearn.pipeline import make_pipeline

    train_x, train_y = load_split("train")
    val_x, val_y = load_split("validation")
    model = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2),
                          LogisticRegression(max_iter=3000, C=10.0))
    model.fit(train_x, train_y)
    return float(f1_score(val_y, model.predict(val_x), average="macro"))


def dlaunch_macro_f1(tmp: Path) -> tuple[float, int]:
    """Best validation macro-F1 of the example, run into `tmp` (nothing under runs/ is touched)."""
    spec = yaml.safe_load(SPEC.read_text())
    spec["training"]["checkpoint"]["uri"] = str(tmp / "ckpt")
    spec["training"]["tracking"] = {"wandb": {"mode": "disabled"}}
    spec_file = tmp / "wordnet.yaml"
    spec_file.write_text(yaml.safe_dump(spec))
    subprocess.run([str(Path(sys.executable).parent / "dlaunch"), "submit", str(spec_file), "--runs-dir",
                    str(tmp / "runs")], check=True, cwd=REPO, env=dict(os.environ))
    events = [json.loads(line) for line in (tmp / "runs" / spec["name"] / "metrics.jsonl").read_text().splitlines()]
    evals = [e for e in events if e["event"] == "eval"]
    best = max(evals, key=lambda e: e["eval_macro_f1"])
    return best["eval_macro_f1"], best["step"]


def main() -> None:
    if not (DATA / "validation.jsonl").exists():
        subprocess.run([sys.executable, "-m", "training.data.wordnet", "--out", str(DATA)], check=True, cwd=REPO)
    started = time.perf_counter()
    baseline = baseline_macro_f1()
    print(f"TF-IDF + logistic regression: validation macro-F1 {baseline:.4f} ({time.perf_counter() - started:.0f} s)")
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        ours, step = dlaunch_macro_f1(Path(tmp))
    print(f"dlaunch MiniLM fine-tune:     validation macro-F1 {ours:.4f} (best at step {step}, "
          f"{time.perf_counter() - started:.0f} s)")
    print(json.dumps({"macro_f1": round(ours, 4), "baseline_macro_f1": round(baseline, 4)}))


if __name__ == "__main__":
    main()
