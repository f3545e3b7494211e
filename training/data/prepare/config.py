"""The data spec of `dlaunch prepare`: what to read, how to tokenize it, where to write it."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from training.errors import ConfigError


class TokenizerSpec(BaseModel):
    """The tokenizer: a pretrained model's, or a byte-level BPE trained once at prepare time."""

    model_config = ConfigDict(extra="forbid")

    pretrained: str | None = Field(
        None, description="Directory (local or s3://) of a pretrained model or tokenizer whose tokenizer to use; "
                          "unset: train a byte-level BPE on a bounded sample of the corpus.")
    vocab_size: int = Field(8192, ge=260, le=1 << 20, description="Vocabulary size of the trained BPE.")
    sample_mb: float = Field(32.0, gt=0, description="Megabytes of text (the first ones, in source order) the BPE "
                                                      "is trained on; bounded so a terabyte corpus trains in minutes.")


class PrepareSpec(BaseModel):
    """One `dlaunch prepare` job (a YAML or JSON file)."""

    model_config = ConfigDict(extra="forbid")

    inputs: list[str] = Field(description="Files, directories, globs or s3:// prefixes of .txt, .jsonl, .jsonl.gz, "
                                          ".jsonl.zst or .parquet files; read as streams, in sorted order.",
                              min_length=1)
    output: str = Field(description="Local path or s3:// prefix of the dataset; must not hold a committed dataset.")
    task: Literal["causal_lm", "classification"] = Field(
        "causal_lm", description="causal_lm: documents joined by EOS; classification: examples with labels.")
    text_field: str = Field("text", description="Field of a .jsonl record or Parquet column holding the text.")
    label_field: str = Field("label", description="Field holding the label (classification only).")
    tokenizer: TokenizerSpec = Field(default_factory=TokenizerSpec, description="The tokenizer.")
    shard_mb: float = Field(64.0, gt=0, description="Megabytes of input text per work unit; each unit becomes one "
                                                    "shard, tokenized by one Ray task and committed on its own.")
    skip_bad_lines: bool = Field(False, description="Count and skip unreadable lines (bad JSON, missing field) "
                                                    "instead of stopping at the first one.")
    num_cpus: int | None = Field(None, ge=1, description="CPUs of the local Ray started for the job (default: all).")
    engine: Literal["ray", "inline"] = Field(
        "ray", description="ray: a Ray Data job (local Ray, or the cluster's); inline: this process, for tiny corpora.")
    endpoint_url: str | None = Field(None, description="S3-compatible endpoint (else AWS_ENDPOINT_URL).")

    @field_validator("inputs")
    @classmethod
    def _non_empty(cls, value: list[str]) -> list[str]:
        if any(not item.strip() for item in value):
            raise ValueError("an input is empty: name a file, directory, glob or s3:// prefix")
        return value


def load_prepare_spec(path: str | Path) -> PrepareSpec:
    """Read a data spec (YAML or JSON); every problem is a `ConfigError` naming the field."""
    import yaml

    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the data spec ({exc.strerror})") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a data spec is a mapping with at least 'inputs' and 'output'")
    try:
        return PrepareSpec.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(top)'}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{path}: {problems}") from exc
