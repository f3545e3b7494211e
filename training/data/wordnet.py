"""WordNet glosses labelled with their lexicographer class (45 classes), from Debian's wordnet-base.

`python -m training.data.wordnet --out data/wordnet` writes train / validation / test JSON-lines
files ({"text": gloss, "label": "noun.animal"}), a deterministic sample of every synset.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

WORDNET_DIR = Path("/usr/share/wordnet")
PARTS_OF_SPEECH = ("noun", "verb", "adj", "adv")
LEXNAMES = (
    "adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute noun.body "
    "noun.cognition noun.communication noun.event noun.feeling noun.food noun.group noun.location "
    "noun.motive noun.object noun.person noun.phenomenon noun.plant noun.possession noun.process "
    "noun.quantity noun.relation noun.shape noun.state noun.substance noun.time verb.body verb.change "
    "verb.cognition verb.communication verb.competition verb.consumption verb.contact verb.creation "
    "verb.emotion verb.motion verb.perception verb.possession verb.social verb.stative verb.weather adj.ppl"
).split()


def parse_data_line(line: str) -> dict[str, str] | None:
    """One synset line of a data.<pos> file -> {"text": gloss, "label": lexname}; None for headers."""
    if line.startswith("  ") or " | " not in line:
        return None
    fields, gloss = line.split(" | ", 1)
    lex_filenum = int(fields.split()[1])
    return {"text": gloss.strip(), "label": LEXNAMES[lex_filenum]}


def read_glosses(wordnet_dir: Path = WORDNET_DIR) -> list[dict[str, str]]:
    records = []
    for pos in PARTS_OF_SPEECH:
        path = wordnet_dir / f"data.{pos}"
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: install the Debian package wordnet-base")
        with path.open(encoding="utf-8", errors="replace") as handle:
            records.extend(r for r in map(parse_data_line, handle) if r is not None)
    return records


def write_splits(out: Path, sizes: dict[str, int], seed: int, wordnet_dir: Path = WORDNET_DIR) -> dict[str, int]:
    """Shuffle all glosses once and write disjoint splits of the requested sizes."""
    records = read_glosses(wordnet_dir)
    random.Random(seed).shuffle(records)
    out.mkdir(parents=True, exist_ok=True)
    start, written = 0, {}
    for split, size in sizes.items():
        chunk = records[start:start + size]
        start += size
        tmp = out / f".{split}.jsonl.tmp"
        tmp.write_text("".join(json.dumps(r) + "\n" for r in chunk), encoding="utf-8")
        tmp.replace(out / f"{split}.jsonl")
        written[split] = len(chunk)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("data/wordnet"))
    parser.add_argument("--train", type=int, default=8000)
    parser.add_argument("--validation", type=int, default=1000)
    parser.add_argument("--test", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    written = write_splits(args.out, {"train": args.train, "validation": args.validation, "test": args.test},
                           args.seed)
    print(json.dumps({"out": str(args.out), **written}))


if __name__ == "__main__":
    main()
