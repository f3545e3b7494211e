"""The dataset's tokenizer: a pretrained model's, or a byte-level BPE trained on a bounded sample.

Either way it is saved as a directory with a `tokenizer.json` (the Hugging Face `tokenizers`
format), which is all a shard task needs; its hash (over every file of the directory) goes in
the manifest so a reader can tell that the tokenizer it loads is the one the shards were cut with.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from training.data.prepare.config import PrepareSpec
from training.data.prepare.errors import PreparedDataError
from training.data.prepare.sources import BadLines, SourceFile, read_records
from training.data.tokenizer import EOS, train_bpe

if TYPE_CHECKING:
    from tokenizers import Tokenizer

TOKENIZER_JSON = "tokenizer.json"


@dataclass(frozen=True)
class TokenizerInfo:
    """What the manifest records about the tokenizer and what every shard task needs."""

    json: str
    eos_id: int | None
    vocab_size: int
    digest: str


def tokenizer_digest(directory: Path) -> str:
    """sha256 over the names and contents of every file in the tokenizer directory, in sorted order."""
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        digest.update(path.relative_to(directory).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def build_tokenizer(spec: PrepareSpec, sources: list[SourceFile], directory: Path) -> TokenizerInfo:
    """Write the tokenizer into `directory` (pretrained copy or freshly trained BPE) and describe it."""
    directory.mkdir(parents=True, exist_ok=True)
    if spec.tokenizer.pretrained:
        _save_pretrained(spec.tokenizer.pretrained, directory, spec.endpoint_url)
    else:
        texts = _sample_texts(spec, sources, int(spec.tokenizer.sample_mb * 1e6))
        train_bpe(texts, spec.tokenizer.vocab_size).save(str(directory / TOKENIZER_JSON))
    return load_tokenizer_info(directory, spec.task)


def load_tokenizer_info(directory: Path, task: str) -> TokenizerInfo:
    """Describe a saved tokenizer directory; causal LM needs an end-of-document token."""
    from tokenizers import Tokenizer

    path = directory / TOKENIZER_JSON
    if not path.is_file():
        raise PreparedDataError(f"{directory}: no {TOKENIZER_JSON}; dlaunch prepare needs a fast (Rust) tokenizer")
    text = path.read_text(encoding="utf-8")
    tokenizer = Tokenizer.from_str(text)
    eos_id = _eos_id(directory, tokenizer)
    if task == "causal_lm" and eos_id is None:
        raise PreparedDataError(f"{directory}: the tokenizer has no EOS (or SEP) token to separate documents")
    return TokenizerInfo(json=text, eos_id=eos_id, vocab_size=tokenizer.get_vocab_size(with_added_tokens=True),
                         digest=tokenizer_digest(directory))


def _eos_id(directory: Path, tokenizer: "Tokenizer") -> int | None:
    """The id of the model's EOS token (tokenizer_config.json), else SEP, else our BPE's EOS."""
    import json

    config_path = directory / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
    for key in ("eos_token", "sep_token"):
        token = config.get(key)
        token = token.get("content") if isinstance(token, dict) else token
        if isinstance(token, str) and tokenizer.token_to_id(token) is not None:
            return tokenizer.token_to_id(token)
    return tokenizer.token_to_id(EOS)


def _save_pretrained(uri: str, directory: Path, endpoint_url: str | None) -> None:
    from transformers import AutoTokenizer

    from training.models.pretrained import resolve_pretrained

    try:
        source = resolve_pretrained(uri, endpoint_url) if uri.startswith("s3://") else Path(uri.removeprefix("file://"))
        tokenizer = AutoTokenizer.from_pretrained(str(source), use_fast=True)
    except (OSError, ValueError) as exc:
        raise PreparedDataError(f"tokenizer.pretrained {uri}: cannot load a tokenizer there ({exc})") from exc
    if not tokenizer.is_fast:
        raise PreparedDataError(f"tokenizer.pretrained {uri}: has no fast tokenizer (tokenizer.json)")
    tokenizer.save_pretrained(str(directory))


def _sample_texts(spec: PrepareSpec, sources: list[SourceFile], budget: int) -> list[str]:
    """The first `budget` characters of text in source order (bad lines skipped: they fail later, named)."""
    def texts() -> Iterator[str]:
        for source in sources:
            for record in read_records(source, spec.text_field, None, BadLines(), spec.endpoint_url):
                yield record.text

    sample, used = [], 0
    for text in itertools.takewhile(lambda _: used < budget, texts()):
        sample.append(text)
        used += len(text)
    if not sample:
        raise PreparedDataError(f"inputs {spec.inputs}: contain no text to train a tokenizer on")
    return sample
