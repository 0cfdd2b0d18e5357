"""Build the corpus the `corpus` draft source looks up: the backbone's answers in data/distill.

    python -m shuffle_model.cli.corpus                     # data/distill -> assets/corpus/

Writes tokens.npz (every answer's token ids, one array) and corpus.json (the backbone, the
calibration of its drafts' chances, the data). The calibration is fitted on greedy answers held
out by prompt (an index of the other answers proposes along them, teacher forced); the shipped
index then holds every answer. No Spec-Bench question is a prompt of data/distill
(tests/test_data.py), so the benchmark's answers are not in it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import zlib
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..decoding.corpus import (
    DEFAULT_CORPUS_DIR,
    Corpus,
    CorpusCalibration,
    CorpusIndex,
    calibration_outcomes,
)
from ..model.backbone import DEFAULT_BACKBONE
from ..resources import REPOSITORY
from ..training.distill import load_examples

PASSAGES = "passages"  # prompts built on earlier answers: they would find their own source


def held_out(prompt_ids, every: int) -> bool:
    """Whether a prompt's answers are held out (all answers to one prompt go together)."""
    return zlib.crc32(np.asarray(prompt_ids, dtype=np.int64).tobytes()) % every == 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shuffle_model.cli.corpus", description=__doc__)
    default_data = [REPOSITORY / "data" / "distill"] if REPOSITORY else []
    parser.add_argument("--data", type=Path, nargs="*", default=default_data)
    parser.add_argument("--out", type=Path, default=DEFAULT_CORPUS_DIR)
    parser.add_argument("--heldout-every", type=int, default=20)
    parser.add_argument("--calibration-answers", type=int, default=400)
    parser.add_argument("--backbone", default=DEFAULT_BACKBONE, help="whose answers the data holds")
    parser.add_argument("--vocab-size", type=int, default=49152, help="its vocabulary size")
    args = parser.parse_args(argv)
    if not args.data:
        parser.error("no data: give --data folders of distill shards")

    examples = load_examples(args.data)
    answers = [e.answer_ids for e in examples]
    print(f"{len(examples)} answers, {sum(map(len, answers))} tokens", file=sys.stderr)

    rest = [e.answer_ids for e in examples if not held_out(e.prompt_ids, args.heldout_every)]
    test = [
        (e.prompt_ids, e.answer_ids)
        for e in examples
        if held_out(e.prompt_ids, args.heldout_every) and not e.sampled and e.source != PASSAGES
    ][: args.calibration_answers]
    index = CorpusIndex.from_answers(rest)
    rows = []
    for pair in tqdm(test, desc="calibrating", unit="answer"):
        rows += calibration_outcomes(index, [pair])
    table = np.asarray(rows, dtype=float).reshape(-1, 4)
    first = table[table[:, 1] == 1]
    report = {
        "answers": len(test),
        "outcomes": len(rows),
        "first_node": {  # the first nodes' mean share of continuations, and how many were right
            "mean_frequency": float(first[:, 2].mean()) if len(first) else 0.0,
            "accepted": float(first[:, 3].mean()) if len(first) else 0.0,
        },
    }
    calibration = CorpusCalibration.fit(rows, report=report)
    corpus = Corpus(
        index=CorpusIndex.from_answers(answers),
        calibration=calibration,
        backbone=args.backbone,
        vocab_size=args.vocab_size,
    )
    meta = {
        "data": {
            "folders": [str(d.name) for d in args.data],
            "answers": len(examples),
            "heldout_every": args.heldout_every,
            "date": dt.date.today().isoformat(),
        }
    }
    out = corpus.save(args.out, meta=meta)
    first = report["first_node"]
    print(
        f"calibrated on {len(rows)} outcomes of {len(test)} held-out answers (first node: "
        f"frequency {first['mean_frequency']:.3f}, accepted {first['accepted']:.3f}); "
        f"wrote {out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
