"""Knowledge distillation: build a smaller student from a teacher, and the loss that trains it.

The student is the teacher's own `transformers` class (or what `model_factory` builds) made from a
copy of its config with fewer layers and/or a narrower width; a module that only wraps a
`transformers` backbone (backbone + pooling + head) is made shallower by pruning a copy. It can start from the teacher's weights: student layer `i` copies
teacher layer `i * layer_stride` (DistilBERT's recipe), everything outside the layer stack
(embeddings, final norm, pooler, head) is copied, and when the student is narrower every tensor
keeps its leading rows and columns (whole attention heads, since the head size is kept).

The loss is Hinton et al.'s: `alpha * T^2 * KL(softmax(teacher/T) || softmax(student/T)) +
(1 - alpha) * task_loss`. The teacher runs frozen, in eval mode and in bf16 (`freeze_teacher`).

Nothing here knows about the launcher: these are functions over `nn.Module`s and tensors, so
the DeepSpeed and Ray loops (and the benchmark) call the same code. Under ZeRO-3 a partitioned
teacher is gathered while its weights are copied into the student.
"""

from __future__ import annotations

import contextlib
import copy
import re
from typing import TYPE_CHECKING, Callable, Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

if TYPE_CHECKING:
    from transformers import PretrainedConfig

# Models whose attention projections are fused into one matrix (q|k|v side by side), so slicing
# the leading columns would not keep whole heads.
FUSED_QKV_MODEL_TYPES = frozenset({"gpt2"})
ModelFactory = Callable[["PretrainedConfig"], nn.Module]


def build_student(
    teacher: "nn.Module | PretrainedConfig",
    num_layers: int | None = None,
    hidden_size: int | None = None,
    init_from_teacher: bool = True,
    layer_stride: int | None = None,
    intermediate_size: int | None = None,
    model_factory: ModelFactory | None = None,
) -> nn.Module:
    """A float32 student of the teacher's kind: `num_layers` deep, `hidden_size` wide.

    `teacher` is a `transformers` model, a module wrapping one (e.g. backbone + head), or only a
    config when `init_from_teacher=False` (random init). `layer_stride` defaults to
    `teacher_layers // num_layers`; student layer `i` starts from teacher layer `i * layer_stride`.
    `intermediate_size` narrows the feed-forward blocks. The student is built by
    `model_factory(student_config)`, by default the teacher's own `transformers` class; a wrapper
    without a factory can only be made shallower (its layer stack is pruned in a copy).
    Works for BERT-style encoders (with any head) and llama/gpt2-style causal LMs.
    """
    config = teacher if _is_config(teacher) else model_config(teacher)
    num_layers, stride = _student_depth(int(config.num_hidden_layers), num_layers, layer_stride, hidden_size,
                                        intermediate_size)
    student_config = student_config_for(config, num_layers, stride, hidden_size, intermediate_size)
    _check_initialisation(teacher, config, student_config, init_from_teacher)
    factory = model_factory or _default_factory(teacher, config, student_config, init_from_teacher)
    if factory is None:
        return pruned_copy(teacher, num_layers, stride)
    student = factory(student_config).float()
    if init_from_teacher:
        copy_teacher_weights(teacher, student, stride)
    return student


def _is_config(obj: object) -> bool:
    from transformers import PretrainedConfig

    return isinstance(obj, PretrainedConfig)


def model_config(model: nn.Module) -> "PretrainedConfig":
    """The `transformers` config of a model, or of the first submodule that has one (a backbone)."""
    for module in model.modules():
        config = getattr(module, "config", None)
        if _is_config(config):
            return config
    raise ValueError(f"{type(model).__name__} holds no transformers model (no submodule has a PretrainedConfig "
                     "`config`): build_student works on transformers models and modules that wrap one")


def _check_initialisation(teacher: object, config: "PretrainedConfig", student: "PretrainedConfig",
                          init_from_teacher: bool) -> None:
    if init_from_teacher and _is_config(teacher):
        raise ValueError(
            "build_student(init_from_teacher=True) needs the teacher model, not only its config: "
            "pass the loaded teacher, or init_from_teacher=False for a randomly initialised student"
        )
    if init_from_teacher and _narrows(config, student) and config.model_type in FUSED_QKV_MODEL_TYPES:
        raise ValueError(
            f"a narrower {config.model_type} student cannot start from the teacher's weights (its attention "
            "projection is fused, so slicing would mix query, key and value heads): pass "
            "init_from_teacher=False, or keep hidden_size and shrink only num_layers"
        )


def _default_factory(teacher: object, config: "PretrainedConfig", student: "PretrainedConfig",
                     init_from_teacher: bool) -> ModelFactory | None:
    """The teacher's transformers class; None for a wrapper that only loses layers (pruned instead)."""
    from transformers import PreTrainedModel

    if _is_config(teacher):
        return _model_class(teacher)
    if isinstance(teacher, PreTrainedModel):
        return type(teacher)
    only_shallower = (student.hidden_size == config.hidden_size and
                      getattr(student, "intermediate_size", None) == getattr(config, "intermediate_size", None))
    if init_from_teacher and only_shallower:
        return None
    raise ValueError(
        f"build_student cannot construct a {type(teacher).__name__} from a config: pass model_factory, a function "
        "from the student's PretrainedConfig to a new model, or shrink only num_layers with init_from_teacher=True"
    )


def pruned_copy(teacher: nn.Module, num_layers: int, layer_stride: int) -> nn.Module:
    """A float32 copy of the teacher that keeps only layers 0, stride, 2*stride, ... of its stack."""
    if any(hasattr(p, "ds_id") for p in teacher.parameters()):
        raise ValueError("cannot copy a teacher whose parameters ZeRO-3 has partitioned: build the student before "
                         "deepspeed.initialize / outside deepspeed.zero.Init, or pass model_factory")
    student = copy.deepcopy(teacher)
    config = model_config(student)
    parent_name, _, attribute = layer_stack_name(student, int(config.num_hidden_layers)).rpartition(".")
    parent = student.get_submodule(parent_name)
    kept = nn.ModuleList(getattr(parent, attribute)[i * layer_stride] for i in range(num_layers))
    for index, layer in enumerate(kept):
        for module in layer.modules():
            if isinstance(getattr(module, "layer_idx", None), int):
                module.layer_idx = index
    setattr(parent, attribute, kept)
    student_config = student_config_for(config, num_layers, layer_stride)
    for module in student.modules():
        if _is_config(getattr(module, "config", None)):
            module.config = student_config
    return student.float().requires_grad_(True).train()


def _student_depth(
    teacher_layers: int,
    num_layers: int | None,
    layer_stride: int | None,
    hidden_size: int | None,
    intermediate_size: int | None,
) -> tuple[int, int]:
    """Resolve (num_layers, layer_stride) and check every mapped teacher layer exists."""
    if num_layers is None and layer_stride is None and hidden_size is None and intermediate_size is None:
        raise ValueError("build_student needs num_layers, layer_stride, hidden_size or intermediate_size "
                         "to make the student smaller than the teacher")
    if num_layers is None:
        stride = layer_stride or 1
        num_layers = -(-teacher_layers // stride)
    else:
        stride = layer_stride if layer_stride is not None else max(teacher_layers // max(num_layers, 1), 1)
    if num_layers < 1 or stride < 1:
        raise ValueError(f"num_layers and layer_stride must be >= 1, got {num_layers} and {stride}")
    if (num_layers - 1) * stride >= teacher_layers:
        raise ValueError(
            f"a {num_layers}-layer student with layer_stride {stride} would copy teacher layer "
            f"{(num_layers - 1) * stride}, but the teacher has {teacher_layers} layers (0..{teacher_layers - 1}): "
            f"use at most {(teacher_layers - 1) // stride + 1} layers or a smaller stride"
        )
    return num_layers, stride


def student_config_for(
    config: "PretrainedConfig",
    num_layers: int,
    layer_stride: int = 1,
    hidden_size: int | None = None,
    intermediate_size: int | None = None,
) -> "PretrainedConfig":
    """A copy of the teacher's config with the student's depth and width (head size kept)."""
    student = copy.deepcopy(config)
    student.num_hidden_layers = num_layers
    layer_types = getattr(config, "layer_types", None)
    if isinstance(layer_types, list) and len(layer_types) == config.num_hidden_layers:
        student.layer_types = [layer_types[i * layer_stride] for i in range(num_layers)]
    if hidden_size is not None and hidden_size != config.hidden_size:
        _narrow_width(student, config, hidden_size)
    if intermediate_size is not None:
        if getattr(config, "intermediate_size", None) is None and not hasattr(config, "n_inner"):
            raise ValueError(f"{config.model_type} configs have no intermediate_size: leave it unset")
        attribute = "intermediate_size" if hasattr(config, "intermediate_size") else "n_inner"
        setattr(student, attribute, intermediate_size)
    return student


def _narrow_width(student: "PretrainedConfig", teacher: "PretrainedConfig", hidden_size: int) -> None:
    """Set hidden_size and scale heads (and the feed-forward width) so the head size stays the same."""
    heads = int(teacher.num_attention_heads)
    head_dim = int(getattr(teacher, "head_dim", None) or teacher.hidden_size // heads)
    if hidden_size % head_dim:
        raise ValueError(
            f"hidden_size {hidden_size} is not a multiple of the teacher's head size {head_dim}: "
            f"pick a multiple of {head_dim} so whole attention heads can be kept"
        )
    new_heads = hidden_size // head_dim
    kv_heads = getattr(teacher, "num_key_value_heads", None)
    if kv_heads is not None:
        if (kv_heads * new_heads) % heads:
            raise ValueError(f"hidden_size {hidden_size} gives {new_heads} heads, which cannot keep the teacher's "
                             f"ratio of {heads} query to {kv_heads} key/value heads: pick another width")
        student.num_key_value_heads = kv_heads * new_heads // heads
    student.hidden_size = hidden_size
    student.num_attention_heads = new_heads
    if getattr(teacher, "intermediate_size", None):
        student.intermediate_size = teacher.intermediate_size * hidden_size // teacher.hidden_size


def _narrows(teacher: "PretrainedConfig", student: "PretrainedConfig") -> bool:
    return student.hidden_size != teacher.hidden_size


def _model_class(teacher: "PretrainedConfig") -> type:
    """The first architecture a config names, as a transformers class."""
    import transformers

    names = list(getattr(teacher, "architectures", None) or [])
    model_class = getattr(transformers, names[0], None) if names else None
    if model_class is None:
        raise ValueError(
            f"cannot tell which model class to build from this {teacher.model_type} config "
            f"(architectures={names}): pass the teacher model instead of its config"
        )
    return model_class


def layer_stack_name(model: nn.Module, num_layers: int) -> str:
    """The dotted name of the `nn.ModuleList` holding the model's transformer layers."""
    found = [name for name, module in model.named_modules()
             if isinstance(module, nn.ModuleList) and len(module) == num_layers]
    if len(found) != 1:
        raise ValueError(
            f"expected exactly one nn.ModuleList of {num_layers} layers in {type(model).__name__}, found "
            f"{found or 'none'}: build_student supports models with a single stack of transformer layers"
        )
    return found[0]


def copy_teacher_weights(teacher: nn.Module, student: nn.Module, layer_stride: int) -> None:
    """Copy every student tensor from the teacher (layer i from teacher layer i*stride, leading slice)."""
    student_stack = layer_stack_name(student, int(model_config(student).num_hidden_layers))
    teacher_stack = layer_stack_name(teacher, int(model_config(teacher).num_hidden_layers))
    if student_stack != teacher_stack:
        raise ValueError(f"teacher layers live in '{teacher_stack}' but the student's in '{student_stack}'")
    pattern = re.compile(rf"^{re.escape(student_stack)}\.(\d+)\.")
    with _gathered(teacher):
        source = teacher.state_dict()
        with torch.no_grad():
            for key, target in student.state_dict().items():
                match = pattern.match(key)
                teacher_key = (pattern.sub(f"{student_stack}.{int(match.group(1)) * layer_stride}.", key, count=1)
                               if match else key)
                if teacher_key not in source:
                    raise ValueError(f"the teacher has no tensor '{teacher_key}' for the student's '{key}'")
                target.copy_(_leading_slice(source[teacher_key], target.shape))


def _leading_slice(tensor: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    if tensor.dim() != len(shape) or any(t < s for t, s in zip(tensor.shape, shape)):
        raise ValueError(f"cannot initialise a {tuple(shape)} student tensor from a {tuple(tensor.shape)} teacher tensor")
    return tensor[tuple(slice(0, size) for size in shape)]


@contextlib.contextmanager
def _gathered(model: nn.Module) -> Iterator[None]:
    """Gather ZeRO-3 partitioned parameters for reading; a no-op for ordinary modules."""
    params = [p for p in model.parameters() if hasattr(p, "ds_id")]
    if not params:
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
        yield


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor | None = None,
    temperature: float = 2.0,
    alpha: float = 0.5,
    task_loss: torch.Tensor | None = None,
    ignore_index: int = -100,
) -> torch.Tensor:
    """`alpha * T^2 * KL(teacher/T || student/T) + (1 - alpha) * task_loss`, averaged over rows.

    Logits may be (batch, classes) or (batch, seq, vocab); labels align with them position by
    position (shift them first for causal LMs) and rows labelled `ignore_index` are left out.
    `task_loss` defaults to cross-entropy against `labels`; pass the model's own loss to reuse it.
    """
    _check_distillation_args(student_logits, teacher_logits, labels, temperature, alpha, task_loss)
    classes = student_logits.shape[-1]
    student = student_logits.float().reshape(-1, classes)
    teacher = teacher_logits.detach().float().reshape(-1, classes)
    keep = labels.reshape(-1) != ignore_index if labels is not None else None
    kl_rows = F.kl_div(F.log_softmax(student / temperature, dim=-1), F.log_softmax(teacher / temperature, dim=-1),
                       reduction="none", log_target=True).sum(-1)
    soft = (kl_rows[keep] if keep is not None else kl_rows).mean() * temperature**2
    if alpha == 1.0:
        return soft
    if task_loss is None:
        task_loss = F.cross_entropy(student, labels.reshape(-1), ignore_index=ignore_index)
    return alpha * soft + (1.0 - alpha) * task_loss


def _check_distillation_args(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor | None,
    temperature: float,
    alpha: float,
    task_loss: torch.Tensor | None,
) -> None:
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student logits {tuple(student_logits.shape)} and teacher logits "
                         f"{tuple(teacher_logits.shape)} differ: both models must share the label set / vocabulary")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if alpha < 1.0 and labels is None and task_loss is None:
        raise ValueError("alpha < 1 mixes in the task loss: pass labels or task_loss (or use alpha=1.0)")


def freeze_teacher(model: nn.Module, dtype: torch.dtype = torch.bfloat16) -> nn.Module:
    """Put the teacher in eval mode, without gradients, in `dtype` (bf16 halves its memory)."""
    model.eval()
    model.requires_grad_(False)
    return model.to(dtype=dtype)


def _numel(param: torch.Tensor) -> int:
    """Element count, including parameters partitioned away by ZeRO-3 (which report 0 locally)."""
    return int(getattr(param, "ds_numel", param.numel()))


def total_parameters(model: nn.Module) -> int:
    """All parameters, each shared tensor counted once."""
    return sum(_numel(p) for p in model.parameters())


def non_embedding_parameters(model: nn.Module) -> int:
    """Parameters outside `nn.Embedding` tables (token, position, type), each shared tensor once.

    An output projection tied to the token embeddings is the same tensor, so it is excluded too.
    """
    embedding_ids = {id(p) for module in model.modules() if isinstance(module, nn.Embedding)
                     for p in module.parameters(recurse=False)}
    return sum(_numel(p) for p in model.parameters() if id(p) not in embedding_ids)
