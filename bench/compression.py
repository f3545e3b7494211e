"""Compression end to end on WordNet glosses: fine-tune, distill, quantize, export, compare.

1. The teacher: with `--teacher CHECKPOINT_URI`, the model a dlaunch run of the WordNet example
   committed (e.g. `dlaunch submit examples/wordnet-minilm.yaml`, then
   `--teacher runs/wordnet-minilm/checkpoints`); without it, the example's model (MiniLM-L6
   from data/models/all-MiniLM-L6-v2, mean pooling, a 45-way head) is fine-tuned here on
   train.jsonl with a plain loop (frozen token embeddings, no augmentation: a weaker teacher).
2. Distill a 3-layer student (teacher layers 0, 2, 4) from the frozen bf16 teacher.
3. Quantize the student to dynamic int8 (Linear and Embedding layers). The `--float-layers`
   Linear layers whose lone quantization changes the validation predictions most stay float
   (`layer_sensitivity`, measured on validation.jsonl, never on the test split).
4. Export the student as ONNX and TorchScript, float and int8 (both int8 files are made from the
   PyTorch int8 model), and check them against PyTorch.
5. Measure everything on the held-out test.jsonl and print a table.

Training runs on the CPU under bf16 autocast with the token embeddings frozen (their dense
gradient and AdamW update cost more than the rest of a step here; `--train-word-embeddings`
trains them). The student has 3 of the 6 layers but also a slightly narrower feed-forward block
(1472 instead of 1536 neurons, the leading ones): the classifier head is the same size in both
models, so 3/6 layers alone leave the student at 50.08% of the teacher's non-embedding
parameters; `--student-intermediate-size 1536` gives that plain variant.

Targets: student macro-F1 >= 95% of the teacher's with <= 50% of its non-embedding parameters;
int8 >= 1.5x faster at batch 32, <= 0.01 macro-F1 lost, quantized layers >= 3.5x and the saved
model >= 2x smaller; ONNX and TorchScript logits within 1e-4 of PyTorch; exported int8
predictions agree with PyTorch int8 on >= 99.5% of the test set.
Last line: {"teacher_f1", "student_f1", "student_params_ratio", "int8_speedup_b32",
"int8_layer_size_ratio", "int8_file_size_ratio", "int8_f1_drop", "onnx_max_abs_diff",
"torchscript_max_abs_diff", "int8_agreement"} plus the two agreements it is the minimum of
(ONNX int8, TorchScript int8), the int8 ONNX model's largest logit difference from PyTorch int8,
the number of Linear layers kept float, and the student's share of the teacher's total
parameters. F1 figures are macro-F1 on a 0-1 scale, so
int8_f1_drop <= 0.01 is "at most 1 point". Artifacts go to runs/bench-compression/.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Sequence

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from training.compress import benchmark as bm  # noqa: E402
from training.compress.distill import (  # noqa: E402
    build_student,
    distillation_loss,
    freeze_teacher,
    non_embedding_parameters,
    total_parameters,
)
from training.compress.export import export_onnx, export_torchscript, logits_of  # noqa: E402
from training.compress.quantize import (  # noqa: E402
    LayerBytes,
    LayerSensitivity,
    layer_sensitivity,
    most_sensitive_layers,
    quantize_dynamic_int8,
    quantized_layer_bytes,
)
from training.data.wordnet import LEXNAMES  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
MODEL_DIR = REPO / "data/models/all-MiniLM-L6-v2"
DATA_DIR = REPO / "data/wordnet"
INPUTS = ("input_ids", "attention_mask")
LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "runs/bench-compression")
    parser.add_argument("--teacher", default=None, metavar="CHECKPOINT_URI",
                        help="a committed dlaunch checkpoint of the WordNet example (<job>/checkpoints or "
                             ".../step-N) to use as the teacher instead of fine-tuning one here")
    parser.add_argument("--float-layers", type=int, default=1,
                        help="keep the N most quantization-sensitive Linear layers (on validation) in float")
    parser.add_argument("--teacher-epochs", type=int, default=4)
    parser.add_argument("--student-epochs", type=int, default=5)
    parser.add_argument("--student-layers", type=int, default=3)
    parser.add_argument("--layer-stride", type=int, default=2, help="student layer i starts from teacher layer i*stride")
    parser.add_argument("--student-intermediate-size", type=int, default=1472,
                        help="feed-forward width of the student (the teacher's is 1536); see the module docstring")
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--student-lr", type=float, default=3e-4)
    parser.add_argument("--train-word-embeddings", action="store_true",
                        help="also fine-tune the 30522x384 token embeddings (slower on CPU; frozen by default)")
    parser.add_argument("--temperature", type=float, default=2.0)
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for the latency measurements")
    parser.add_argument("--train-threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-limit", type=int, default=None, help="use only the first N training glosses (smoke runs)")
    return parser.parse_args(argv)


def read_split(split: str, classes: Sequence[str] = LEXNAMES) -> tuple[list[str], list[int]]:
    """Texts and label ids (index into `classes`, the teacher's label order) of one WordNet split."""
    records = [json.loads(line) for line in (DATA_DIR / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()]
    return [r["text"] for r in records], [list(classes).index(r["label"]) for r in records]


def bucketed_batches(lengths: Sequence[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Shuffled batches of indices of similar length (little padding), in shuffled order."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], rng.random()))
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    rng.shuffle(batches)
    return batches


def collate(tokenizer, encoded: list[list[int]], indices: list[int]) -> dict[str, torch.Tensor]:
    """Pad to a multiple of 8 tokens: few distinct shapes, so oneDNN re-uses its compiled kernels."""
    padded = tokenizer.pad({"input_ids": [encoded[i] for i in indices]}, pad_to_multiple_of=8, return_tensors="pt")
    return {name: padded[name] for name in INPUTS}


def train(model: nn.Module, tokenizer, encoded: list[list[int]], labels: torch.Tensor, epochs: int, lr: float,
          batch_size: int, loss_fn: LossFn, seed: int, name: str) -> None:
    """AdamW with linear warm-up and decay under bf16 autocast; `loss_fn(logits, labels, indices)`."""
    rng = random.Random(seed)
    steps = epochs * math.ceil(len(encoded) / batch_size)
    trained = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=lr, weight_decay=0.01, fused=True)
    warmup = max(steps // 10, 1)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(steps - s, 0) / max(steps - warmup, 1)))
    lengths = [len(ids) for ids in encoded]
    model.train()
    for epoch in range(epochs):
        start, total = time.perf_counter(), 0.0
        for indices in bucketed_batches(lengths, batch_size, rng):
            batch = collate(tokenizer, encoded, indices)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                logits = logits_of(model(**batch))
            loss = loss_fn(logits.float(), labels[indices], torch.tensor(indices))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trained, 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            total += loss.item() * len(indices)
        print(f"  {name} epoch {epoch + 1}/{epochs}: loss {total / len(encoded):.4f} "
              f"({time.perf_counter() - start:.0f} s)", flush=True)
    model.eval()


def teacher_logits(teacher: nn.Module, tokenizer, encoded: list[list[int]], batch_size: int) -> torch.Tensor:
    """The frozen teacher's logits on every training example (it is deterministic in eval mode)."""
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    chunks = []
    with torch.inference_mode():
        for start in range(0, len(order), batch_size * 2):
            indices = order[start:start + batch_size * 2]
            chunks.append(logits_of(teacher(**collate(tokenizer, encoded, indices))).float())
    out = torch.empty(len(encoded), chunks[0].shape[-1])
    out[order] = torch.cat(chunks)
    return out


def fine_tune_teacher(args: argparse.Namespace, tokenizer, encoded, labels) -> nn.Module:
    """The WordNet example's model (MiniLM backbone, mean pooling, a new 45-way head), trained here."""
    from training.models.classifier import build_classifier

    torch.manual_seed(args.seed)
    teacher = build_classifier(MODEL_DIR, len(LEXNAMES), {})
    word_embeddings(teacher).weight.requires_grad_(args.train_word_embeddings)
    task = lambda logits, y, _: F.cross_entropy(logits, y)  # noqa: E731
    train(teacher, tokenizer, encoded, labels, args.teacher_epochs, args.lr, args.batch_size, task, args.seed, "teacher")
    return teacher


def load_teacher(uri: str, workdir: Path):
    """A dlaunch-trained classifier (SequenceClassifier: MiniLM backbone, mean pooling, head) and its run's facts."""
    from training.models.restore import load_trained_model

    trained = load_trained_model(uri, workdir)
    if not trained.info.get("backbone_config"):
        raise SystemExit(f"{uri} is not a sequence-classification checkpoint: pass the WordNet example's checkpoints")
    print(f"teacher: {uri} (step {trained.step}, classes in the run's order)", flush=True)
    return trained


def student_factory(teacher: nn.Module) -> Callable[[object], nn.Module] | None:
    """How to build a student of a dlaunch `SequenceClassifier` teacher (None: the teacher's transformers class)."""
    from training.models.classifier import SequenceClassifier

    if not isinstance(teacher, SequenceClassifier):
        return None

    def build(config: object) -> nn.Module:
        from transformers import AutoModel

        extra = {"add_pooling_layer": False} if config.model_type == "bert" else {}
        return SequenceClassifier(AutoModel.from_config(config, **extra), teacher.head.out_features,
                                  teacher.dropout.p)

    return build


def word_embeddings(model: nn.Module) -> nn.Embedding:
    return model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else model.backbone.get_input_embeddings()


def distill_student(args: argparse.Namespace, teacher: nn.Module, tokenizer, encoded, labels) -> nn.Module:
    student = build_student(teacher, num_layers=args.student_layers, layer_stride=args.layer_stride,
                            intermediate_size=args.student_intermediate_size, model_factory=student_factory(teacher))
    word_embeddings(student).weight.requires_grad_(args.train_word_embeddings)
    frozen = freeze_teacher(copy.deepcopy(teacher))
    soft_targets = teacher_logits(frozen, tokenizer, encoded, args.batch_size)
    del frozen

    def loss(logits: torch.Tensor, y: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        return distillation_loss(logits, soft_targets[indices], y, args.temperature, args.alpha)

    torch.manual_seed(args.seed + 1)
    train(student, tokenizer, encoded, labels, args.student_epochs, args.student_lr, args.batch_size, loss,
          args.seed + 1, "student")
    return student


def export_all(student: nn.Module, int8: nn.Module, example: dict[str, torch.Tensor], out: Path) -> dict[str, Path]:
    """Float and int8 student in both formats (both int8 files written from the PyTorch int8 model)."""
    return {
        "onnx": export_onnx(student, example, out / "student.onnx"),
        "onnx_int8": export_onnx(int8, example, out / "student-int8.onnx"),
        "torchscript": export_torchscript(student, example, out / "student.pt"),
        "torchscript_int8": export_torchscript(int8, example, out / "student-int8.pt"),
        "state_dict": bm.save_state_dict(student, out / "student.bin"),
        "state_dict_int8": bm.save_state_dict(int8, out / "student-int8.bin"),
    }


def held_out_logits(fns: dict[str, bm.LogitsFn], batches: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Every model's logits on the whole held-out set (computed once, reused for all figures)."""
    return {name: torch.cat([fn(batch).float() for batch in batches]) for name, fn in fns.items()}


def export_checks(logits: dict[str, torch.Tensor]) -> dict[str, float]:
    """Logit differences (float) and prediction agreement (int8) of the exports vs PyTorch."""
    predicted = {name: values.argmax(-1).numpy() for name, values in logits.items()}
    return {
        "onnx_max_abs_diff": float((logits["onnx"] - logits["student"]).abs().max()),
        "torchscript_max_abs_diff": float((logits["torchscript"] - logits["student"]).abs().max()),
        "onnx_int8_max_abs_diff": float((logits["onnx_int8"] - logits["int8"]).abs().max()),
        "onnx_int8_agreement": bm.agreement(predicted["int8"], predicted["onnx_int8"]),
        "torchscript_int8_agreement": bm.agreement(predicted["int8"], predicted["torchscript_int8"]),
    }


def candidates_for(args: argparse.Namespace, fns: dict[str, bm.LogitsFn], paths: dict[str, Path],
                   counts: dict[str, tuple[int, int]]) -> dict[str, bm.Candidate]:
    """The compared models by key; int8 and exported students carry the float student's counts."""
    student = counts["student"]
    return {
        "teacher": bm.Candidate("teacher (6 layers, fp32)", fns["teacher"], paths["teacher"], *counts["teacher"]),
        "student": bm.Candidate(f"student ({args.student_layers} layers, fp32)", fns["student"],
                                paths["state_dict"], *student),
        "int8": bm.Candidate("student int8 (torch.ao)", fns["int8"], paths["state_dict_int8"], *student),
        "onnx": bm.Candidate("student ONNX fp32 (ORT)", fns["onnx"], paths["onnx"], *student),
        "onnx_int8": bm.Candidate("student ONNX int8 (ORT)", fns["onnx_int8"], paths["onnx_int8"], *student),
        "torchscript_int8": bm.Candidate("student TorchScript int8", fns["torchscript_int8"],
                                         paths["torchscript_int8"], *student),
    }


def logits_fns(models: dict[str, nn.Module], paths: dict[str, Path], threads: int) -> dict[str, bm.LogitsFn]:
    return {**{name: bm.torch_logits_fn(model) for name, model in models.items()},
            "onnx": bm.onnx_logits_fn(paths["onnx"], threads),
            "onnx_int8": bm.onnx_logits_fn(paths["onnx_int8"], threads),
            "torchscript": bm.torchscript_logits_fn(paths["torchscript"]),
            "torchscript_int8": bm.torchscript_logits_fn(paths["torchscript_int8"])}


def main(argv: list[str] | None = None) -> dict[str, float]:
    from transformers import AutoTokenizer

    args = parse_args(argv)
    began = time.perf_counter()
    torch.set_num_threads(args.train_threads)
    random.seed(args.seed)
    trained = None
    if args.teacher:
        with tempfile.TemporaryDirectory() as workdir:
            trained = load_teacher(args.teacher, Path(workdir))
    tokenizer = trained.tokenizer if trained else AutoTokenizer.from_pretrained(MODEL_DIR)
    classes = trained.info["classes"] if trained else LEXNAMES
    train_texts, train_labels = read_split("train", classes)
    train_texts, train_labels = train_texts[:args.train_limit], train_labels[:args.train_limit]
    test_texts, test_labels = read_split("test", classes)
    validation_texts, _ = read_split("validation", classes)
    encoded = tokenizer(train_texts, truncation=True, max_length=args.max_length)["input_ids"]
    labels = torch.tensor(train_labels)

    if trained:
        teacher = trained.model.float().eval()
    else:
        print(f"fine-tuning the teacher on {len(train_texts)} glosses", flush=True)
        teacher = fine_tune_teacher(args, tokenizer, encoded, labels)
    print(f"distilling a {args.student_layers}-layer student", flush=True)
    student = distill_student(args, teacher, tokenizer, encoded, labels)
    sensitivity = layer_sensitivity(student, bm.tokenize_batches(tokenizer, validation_texts, 64, args.max_length))
    keep_float = most_sensitive_layers(sensitivity, args.float_layers)
    print_sensitivity(sensitivity, keep_float)
    int8 = quantize_dynamic_int8(student, include_embeddings=True, keep_float=keep_float)

    args.out.mkdir(parents=True, exist_ok=True)
    example = bm.tokenize_batches(tokenizer, test_texts[:4], 4, args.max_length)[0]
    paths = {**export_all(student, int8, example, args.out),
             "teacher": bm.save_state_dict(teacher, args.out / "teacher.bin")}
    print(f"evaluating on {len(test_texts)} held-out glosses ({args.threads} thread(s)) "
          f"after {time.perf_counter() - began:.0f} s", flush=True)
    fns = logits_fns({"teacher": teacher, "student": student, "int8": int8}, paths, args.threads)
    with bm.cpu_threads(args.threads):
        logits = held_out_logits(fns, bm.tokenize_batches(tokenizer, test_texts, 64, args.max_length))
    checks = export_checks(logits)
    counts = {m: (total_parameters(model), non_embedding_parameters(model)) for m, model in
              (("teacher", teacher), ("student", student))}
    candidates = candidates_for(args, fns, paths, counts)
    scores = {c.name: bm.macro_f1(logits[key].argmax(-1).numpy(), test_labels) for key, c in candidates.items()}
    latency = bm.measure_latency(list(candidates.values()), tokenizer, test_texts, (1, 32), args.max_length,
                                 args.threads, args.repeats)
    reports = dict(zip(candidates, bm.build_reports(list(candidates.values()), scores, latency)))
    layer_bytes = quantized_layer_bytes(int8, student)
    result = summarize(reports, counts, layer_bytes.ratio, checks, len(keep_float))
    print_details(reports, counts, layer_bytes, checks)
    print(f"artifacts in {args.out}; total time {time.perf_counter() - began:.0f} s")
    print(json.dumps(result))
    return result


def print_sensitivity(sensitivity: list[LayerSensitivity], keep_float: list[str]) -> None:
    print("quantization sensitivity on validation (each Linear quantized alone; most sensitive first):")
    for row in sensitivity[:5]:
        kept = "  -> kept float" if row.name in keep_float else ""
        print(f"  {row.name:45s} KL {row.kl:.5f}  agreement {row.agreement:.4f}{kept}")


def print_details(reports: dict[str, bm.ModelReport], counts: dict[str, tuple[int, int]], layer_bytes: LayerBytes,
                  checks: dict[str, float]) -> None:
    print()
    print(bm.format_table(list(reports.values())))
    print(f"\nnon-embedding parameters: teacher {counts['teacher'][1]:,}, student {counts['student'][1]:,}; "
          f"total: teacher {counts['teacher'][0]:,}, student {counts['student'][0]:,}")
    print(f"int8 layers: {layer_bytes.layers} quantized, {layer_bytes.float_bytes:,} -> "
          f"{layer_bytes.quantized_bytes:,} bytes of weights")
    print(f"max |logit diff| vs PyTorch fp32: ONNX {checks['onnx_max_abs_diff']:.2e}, "
          f"TorchScript {checks['torchscript_max_abs_diff']:.2e}")
    print(f"prediction agreement with PyTorch int8: ONNX int8 {checks['onnx_int8_agreement']:.4f}, "
          f"TorchScript int8 {checks['torchscript_int8_agreement']:.4f}")


def summarize(reports: dict[str, bm.ModelReport], counts: dict[str, tuple[int, int]], layer_ratio: float,
              checks: dict[str, float], float_layers: int) -> dict[str, float]:
    """The bench's JSON figures (int8 = the torch.ao int8 student vs the fp32 student)."""
    teacher, student, int8 = reports["teacher"], reports["student"], reports["int8"]
    return {
        "teacher_f1": round(teacher.macro_f1, 4),
        "student_f1": round(student.macro_f1, 4),
        "student_params_ratio": round(counts["student"][1] / counts["teacher"][1], 4),
        "int8_speedup_b32": round(student.latency_ms[32] / int8.latency_ms[32], 3),
        "int8_layer_size_ratio": round(layer_ratio, 3),
        "int8_file_size_ratio": round(student.file_bytes / int8.file_bytes, 3),
        "int8_f1_drop": round(student.macro_f1 - int8.macro_f1, 4),
        "onnx_max_abs_diff": float(f"{checks['onnx_max_abs_diff']:.3g}"),
        "torchscript_max_abs_diff": float(f"{checks['torchscript_max_abs_diff']:.3g}"),
        "int8_agreement": round(min(checks["onnx_int8_agreement"], checks["torchscript_int8_agreement"]), 4),
        "onnx_int8_agreement": round(checks["onnx_int8_agreement"], 4),
        "onnx_int8_max_abs_diff": float(f"{checks['onnx_int8_max_abs_diff']:.3g}"),
        "int8_float_layers": float_layers,
        "torchscript_int8_agreement": round(checks["torchscript_int8_agreement"], 4),
        "student_total_params_ratio": round(counts["student"][0] / counts["teacher"][0], 4),
    }


if __name__ == "__main__":
    main()
