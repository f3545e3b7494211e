"""The prepare job: plan units, tokenize them as a Ray Data job, commit shards, then the manifest.

`python -m training.data.prepare.run JOB.json` runs it (the data spec as JSON): that is the
entrypoint a KubeRay RayJob runs, where `RAY_ADDRESS` points Ray at the cluster; on this
machine `ray.init` starts a local Ray instead. The commit discipline is the checkpoints'
(`training.checkpoint.commit`): shards are uploaded and listed with their sha256 in
`progress.json`, one by one, and `manifest.json` comes last; a committed dataset is never rewritten.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from training.checkpoint.errors import ObjectNotFoundError
from training.checkpoint.storage import Storage, join_uri, storage_for
from training.data.prepare.config import PrepareSpec
from training.data.prepare.errors import PreparedDataError
from training.data.prepare.progress import Progress
from training.data.prepare.shards import ShardJob, Unit, optimal_dtype, plan_units, unit_from_json, unit_to_json, write_shard
from training.data.prepare.sources import SourceFile, list_sources
from training.data.prepare.tokenize import TokenizerInfo, build_tokenizer, load_tokenizer_info

MANIFEST = "manifest.json"
PROGRESS = "progress.json"
TOKENIZER_DIR = "tokenizer"
FORMAT = "dlaunch-prepared/1"

Report = Callable[[str], None]


def prepare(spec: PrepareSpec, report: Report = lambda line: print(line, file=sys.stderr)) -> dict[str, Any]:
    """Run the whole job and return the committed manifest."""
    storage = storage_for(spec.output, endpoint_url=spec.endpoint_url)
    manifest_uri = join_uri(spec.output, MANIFEST)
    if storage.isfile(manifest_uri):
        raise PreparedDataError(f"{spec.output} already holds a committed dataset ({manifest_uri}); a committed "
                                f"dataset is never overwritten: choose another output or delete it first")
    started = time.time()
    sources = list_sources(spec.inputs, spec.endpoint_url)
    progress = _read_progress(storage, spec.output)
    tokenizer = _tokenizer(spec, storage, sources, progress)
    progress.setdefault("tokenizer_sha256", tokenizer.digest)
    progress.setdefault("shards", {})
    units = plan_units(sources, spec.shard_mb, _content_key(spec, tokenizer))
    todo = [u for u in units if not _committed(storage, spec.output, progress["shards"].get(u.name), u)]
    report(f"prepare: {len(sources)} files, {sum(s.size for s in sources) / 1e6:.1f} MB, {len(units)} shards "
           f"({len(units) - len(todo)} already committed) -> {spec.output}")
    meter = Progress(todo, report)
    for record in _run_units(spec, todo, _shard_job(spec, tokenizer)):
        progress["shards"][record["name"]] = record
        storage.write_bytes(join_uri(spec.output, PROGRESS), json.dumps(progress, indent=1, sort_keys=True).encode())
        meter.done(record)
    manifest = build_manifest(spec, sources, tokenizer, [progress["shards"][u.name] for u in units], started)
    storage.write_bytes(manifest_uri, json.dumps(manifest, indent=1, sort_keys=True).encode())
    meter.summary(manifest)
    return manifest


def _read_progress(storage: Storage, output: str) -> dict[str, Any]:
    try:
        return json.loads(storage.read_bytes(join_uri(output, PROGRESS)))
    except ObjectNotFoundError:
        return {}
    except json.JSONDecodeError as exc:
        raise PreparedDataError(f"{join_uri(output, PROGRESS)}: not valid JSON; delete it to start over") from exc


def _tokenizer(spec: PrepareSpec, storage: Storage, sources: list[SourceFile],
               progress: dict[str, Any]) -> TokenizerInfo:
    """The tokenizer of an interrupted run when there is one (so its shards stay valid), else a new one."""
    remote = join_uri(spec.output, TOKENIZER_DIR)
    with tempfile.TemporaryDirectory(prefix="dlaunch-tokenizer-") as tmp:
        local = Path(tmp) / TOKENIZER_DIR
        if progress.get("tokenizer_sha256") and storage.exists(remote):
            storage.download_dir(remote, local)
            info = load_tokenizer_info(local, spec.task)
            if info.digest == progress["tokenizer_sha256"]:
                return info
            progress.clear()  # the tokenizer changed under the progress file: nothing of it is reusable
        info = build_tokenizer(spec, sources, local)
        storage.delete_prefix(remote)
        storage.upload_dir(local, remote)
        return info


def _content_key(spec: PrepareSpec, tokenizer: TokenizerInfo) -> str:
    """What besides the files decides a shard's bytes: task, fields, tokenizer."""
    return json.dumps([spec.task, spec.text_field, spec.label_field, spec.skip_bad_lines, tokenizer.digest])


def _committed(storage: Storage, output: str, record: dict[str, Any] | None, unit: Unit) -> bool:
    """A unit is done when its progress record matches its fingerprint and every file has the listed size."""
    if record is None or record.get("fingerprint") != unit.fingerprint:
        return False
    try:
        return all(storage.size(join_uri(output, "shards", name)) == meta["size"]
                   for name, meta in record["files"].items())
    except ObjectNotFoundError:
        return False


def _shard_job(spec: PrepareSpec, tokenizer: TokenizerInfo) -> ShardJob:
    return ShardJob(output=spec.output, task=spec.task, text_field=spec.text_field, label_field=spec.label_field,
                    skip_bad_lines=spec.skip_bad_lines, tokenizer_json=tokenizer.json, eos_id=tokenizer.eos_id,
                    dtype=optimal_dtype(tokenizer.vocab_size), endpoint_url=spec.endpoint_url)


def _run_units(spec: PrepareSpec, units: list[Unit], job: ShardJob) -> Iterator[dict[str, Any]]:
    """Progress records of the units as they finish: in this process, or as a Ray Data job."""
    if not units:
        return
    if spec.engine == "inline":
        for unit in units:
            yield write_shard(unit, job)
        return
    yield from _ray_units(spec, units, job)


def _ray_units(spec: PrepareSpec, units: list[Unit], job: ShardJob) -> Iterator[dict[str, Any]]:
    """One Ray Data map task per unit (one CPU each, one tokenizer thread each)."""
    import ray
    import ray.data

    if not ray.is_initialized():
        ray.init(**ray_init_args(spec.num_cpus, os.environ))
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    items = [{"unit": unit_to_json(u)} for u in units]
    dataset = ray.data.from_items(items, override_num_blocks=len(items))
    dataset = dataset.map(_ray_task, fn_kwargs={"job": json.dumps(asdict(job))}, num_cpus=1)
    for row in dataset.iter_rows():
        yield json.loads(row["record"])


def ray_init_args(num_cpus: int | None, environ: Mapping[str, str]) -> dict[str, Any]:
    """`ray.init`'s arguments: join the cluster `RAY_ADDRESS` names, else start a local Ray.

    On Kubernetes the RayJob's submitter runs `ray job submit --address <dashboard> -- <entrypoint>`
    (KubeRay ray-operator/controllers/ray/common/job.go, `BuildJobSubmitCommand`), and Ray's job
    supervisor starts the entrypoint inside the cluster (on the head) with `RAY_ADDRESS` set to the
    cluster's GCS address (ray python/ray/dashboard/modules/job/job_supervisor.py,
    `JobSupervisor._get_driver_env_vars`). An address is passed explicitly rather than left to
    `ray.init`'s own reading of RAY_ADDRESS, so the choice is visible and testable here.
    Joining a cluster takes neither `num_cpus` (`ray.init` refuses it: the cluster's nodes say
    what they have) nor `include_dashboard` (the head runs its own)."""
    env = {"env_vars": {"RAYON_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}}
    common: dict[str, Any] = {"runtime_env": env, "log_to_driver": False, "logging_level": "ERROR"}
    address = environ.get("RAY_ADDRESS")
    if address:
        return {"address": address, **common}
    return {"num_cpus": num_cpus, "include_dashboard": False, **common}


def _ray_task(row: dict[str, Any], job: str) -> dict[str, str]:
    """Ray Data's map function: one unit in, its progress record (as JSON) out."""
    return {"record": json.dumps(write_shard(unit_from_json(row["unit"]), ShardJob(**json.loads(job))))}


def build_manifest(spec: PrepareSpec, sources: list[SourceFile], tokenizer: TokenizerInfo,
                   records: list[dict[str, Any]], started: float) -> dict[str, Any]:
    """The manifest: everything a reader needs, and nothing that differs between equal runs but `timings`."""
    shards, tokens, documents = [], 0, 0
    for record in records:
        shards.append({"name": record["name"], "documents": record["documents"], "tokens": record["tokens"],
                       "first_document": documents, "first_token": tokens, "files": record["files"],
                       "label_names": record["label_names"]})
        tokens, documents = tokens + record["tokens"], documents + record["documents"]
    labels = sorted({name for r in records for name in r["label_names"]})
    elapsed = max(time.time() - started, 1e-9)
    return {
        "format": FORMAT, "task": spec.task, "documents": documents, "tokens": tokens,
        "sources": [{"uri": s.uri, "size": s.size} for s in sources],
        "tokenizer": {"sha256": tokenizer.digest, "eos_id": tokenizer.eos_id, "vocab_size": tokenizer.vocab_size,
                      "dir": TOKENIZER_DIR},
        "dtype": optimal_dtype(tokenizer.vocab_size), "shards": shards, "label_map": labels,
        "bad_lines": sum(r["bad_lines"] for r in records),
        "timings": {"seconds": round(elapsed, 3), "tokens_per_s": round(tokens / elapsed, 1),
                    "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
    }


def main(argv: list[str] | None = None) -> int:
    """`python -m training.data.prepare.run JOB.json`: the data spec as JSON (what a RayJob runs)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m training.data.prepare.run JOB.json", file=sys.stderr)
        return 2
    from training.data.prepare.config import load_prepare_spec

    try:
        prepare(load_prepare_spec(args[0]))
    except PreparedDataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
