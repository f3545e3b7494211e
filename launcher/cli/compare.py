"""`dlaunch compare`: teacher vs student vs int8 student, on parameters, size, latency and macro-F1."""

from __future__ import annotations

import tempfile
from pathlib import Path

import click


@click.command("compare")
@click.argument("checkpoints", nargs=-1, required=True)
@click.option("--data", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Held-out JSON-lines file with text and label fields.")
@click.option("--text-field", default="text", show_default=True)
@click.option("--label-field", default="label", show_default=True)
@click.option("--no-int8", is_flag=True, help="Do not add an int8-quantized copy of the last checkpoint.")
@click.option("--threads", default=1, show_default=True, help="CPU threads for the latency measurement.")
@click.option("--endpoint-url", help="S3-compatible endpoint (else AWS_ENDPOINT_URL).")
def command(checkpoints: tuple[str, ...], data: str, text_field: str, label_field: str, no_int8: bool,
            threads: int, endpoint_url: str | None) -> None:
    """Compare classifier CHECKPOINTS (e.g. teacher then student; the last one also as int8):
    parameters, saved size, CPU latency at batch 1 and 32, and macro-F1 on --data."""
    from launcher.errors import DlaunchError
    from training.compress.benchmark import (Candidate, compare_models, format_table, save_state_dict,
                                             torch_logits_fn)
    from training.compress.distill import non_embedding_parameters, total_parameters
    from training.compress.quantize import quantize_dynamic_int8
    from training.data.sources import DataError, read_documents
    from training.models.restore import load_trained_model

    with tempfile.TemporaryDirectory() as tmp:
        candidates, loaded = [], None
        for index, uri in enumerate(checkpoints):
            try:
                loaded = load_trained_model(uri, Path(tmp) / str(index), endpoint_url)
            except (ValueError, FileNotFoundError) as exc:
                raise DlaunchError(f"cannot load {uri}: {exc}") from exc
            if not loaded.info.get("classes"):
                raise DlaunchError(f"{uri} is not a sequence classifier; compare measures classification quality")
            name = Path(uri.rstrip("/")).parts[-2] if uri.rstrip("/").endswith("checkpoints") else Path(uri).parts[-3]
            candidates.append(_candidate(name, loaded.model, Path(tmp) / f"{index}.pt", save_state_dict,
                                         torch_logits_fn, total_parameters, non_embedding_parameters))
        if not no_int8:
            float_candidate = candidates[-1]  # int8 modules pack their weights: count the float model's
            int8 = quantize_dynamic_int8(loaded.model)
            candidates.append(Candidate(name=f"{float_candidate.name}-int8", logits=torch_logits_fn(int8),
                                        file=save_state_dict(int8, Path(tmp) / "int8.pt"),
                                        parameters=float_candidate.parameters,
                                        non_embedding_parameters=float_candidate.non_embedding_parameters))
        try:
            docs = read_documents(data, text_field, label_field)
        except DataError as exc:
            raise DlaunchError(str(exc)) from exc
        index = {name: i for i, name in enumerate(loaded.info["classes"])}
        unknown = sorted({d.label for d in docs} - set(index))[:5]
        if unknown:
            raise DlaunchError(f"{data} has labels the model does not know: {unknown}")
        reports = compare_models(candidates, loaded.tokenizer, [d.text for d in docs], [index[d.label] for d in docs],
                                 max_length=loaded.info.get("seq_len", 64), threads=threads)
    click.echo(format_table(reports))


def _candidate(name, model, path, save, logits_fn, total, non_embedding):  # type: ignore[no-untyped-def]
    from training.compress.benchmark import Candidate

    return Candidate(name=name, logits=logits_fn(model), file=save(model, path), parameters=total(model),
                     non_embedding_parameters=non_embedding(model))
