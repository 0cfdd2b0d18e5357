"""Calibrated acceptance: what a draft's keep probability means.

The head's keep logit was trained to say whether a slot's token is right at its matched
offset. The block-length rule needs something else: p_i, the chance that the draft at offset i
is accepted *given that the drafts before it were*. `Calibration` maps the one to the other,
per offset, by isotonic regression on held-out positions (`python -m shuffle_model.cli.calibrate`),
maps the slots' probabilities of their next-best tokens (the alternatives that trees check) to
their acceptance, and holds the prior acceptance of context drafts by match length and depth. It
is stored beside the head as calibration.json; a head without one uses its keep probabilities as
they are.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from scipy.optimize import isotonic_regression

CALIBRATION_FILE = "calibration.json"
KNOTS = 48  # points kept of each fitted isotonic map
MAX_MATCH = 4  # context matches of 4 tokens or more share one estimate
# Context-draft acceptance before any calibration: by match length, first draft / later drafts
DEFAULT_CONTEXT_PRIOR = {"1": (0.15, 0.5), "2": (0.3, 0.6), "3": (0.45, 0.7), "4": (0.55, 0.8)}


@dataclass
class IsotonicMap:
    """A non-decreasing piecewise-linear map from a raw probability to a calibrated one."""

    x: list[float]  # knots, increasing raw probabilities
    y: list[float]  # calibrated probability at each knot, non-decreasing

    def __call__(self, raw) -> np.ndarray:
        return np.interp(np.asarray(raw, dtype=float), self.x, self.y)

    @classmethod
    def fit(cls, raw, outcome, *, knots: int = KNOTS) -> IsotonicMap:
        """Isotonic regression of 0/1 outcomes on raw probabilities, kept as `knots` points."""
        raw, outcome = np.asarray(raw, dtype=float), np.asarray(outcome, dtype=float)
        order = np.argsort(raw, kind="stable")
        raw, outcome = raw[order], outcome[order]
        fitted = isotonic_regression(outcome, increasing=True).x
        groups = np.array_split(np.arange(len(raw)), min(knots, len(raw)))
        x = [float(raw[g].mean()) for g in groups if len(g)]
        y = [float(fitted[g].mean()) for g in groups if len(g)]
        return cls(x=x, y=list(np.maximum.accumulate(y)))


@dataclass
class Calibration:
    """Acceptance estimates for head drafts (per offset) and context drafts (per match)."""

    head: list[IsotonicMap] = field(default_factory=list)  # offset i uses head[i - 1]; [] = raw
    context: dict[str, tuple[float, float]] = field(
        default_factory=lambda: dict(DEFAULT_CONTEXT_PRIOR)
    )  # match length "1".."4" -> (first draft, later drafts) acceptance
    # "offset/place" (place 2: a slot's second-best token) -> map from the slot's probability of
    # that token to its acceptance given the chain before it was; {} = estimated from the chain
    alternatives: dict[str, IsotonicMap] = field(default_factory=dict)
    report: dict = field(default_factory=dict)  # data, counts, calibration error before/after

    def head_probs(self, keep_probs, offsets) -> list[float]:
        """Calibrated acceptance of head drafts with these keep probs at these offsets."""
        if not self.head:
            return [float(p) for p in keep_probs]
        return [
            float(self.head[min(offset, len(self.head)) - 1](p))
            for p, offset in zip(keep_probs, offsets, strict=True)
        ]

    def alternative_prob(self, offset: int, place: int, prob: float) -> float | None:
        """Calibrated acceptance of the token a slot ranks `place` (2, 3, ...) at `offset`, from
        the slot's probability of it; None where this calibration has no map for it."""
        fitted = self.alternatives.get(alternative_key(offset, place))
        return None if fitted is None else float(fitted(prob))

    def context_prior(self, match_length: int, depth: int) -> float:
        first, later = self.context[str(min(max(match_length, 1), MAX_MATCH))]
        return first if depth == 1 else later

    def to_dict(self) -> dict:
        return {
            "head": [asdict(m) for m in self.head],
            "context": {k: list(v) for k, v in self.context.items()},
            "alternatives": {k: asdict(m) for k, m in self.alternatives.items()},
            "report": self.report,
        }

    @classmethod
    def from_dict(cls, data: dict) -> Calibration:
        context = dict(DEFAULT_CONTEXT_PRIOR)
        context.update({str(k): (float(v[0]), float(v[1])) for k, v in data["context"].items()})
        return cls(
            head=[IsotonicMap(x=list(m["x"]), y=list(m["y"])) for m in data.get("head", [])],
            context=context,
            alternatives={
                k: IsotonicMap(x=list(m["x"]), y=list(m["y"]))
                for k, m in data.get("alternatives", {}).items()
            },
            report=dict(data.get("report", {})),
        )

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> Calibration:
        return cls.from_dict(json.loads(Path(path).read_text()))

    @classmethod
    def beside(cls, directory: str | Path) -> Calibration:
        """The calibration saved with a head, or the uncalibrated default."""
        path = Path(directory) / CALIBRATION_FILE
        return cls.load(path) if path.is_file() else cls()


def alternative_key(offset: int, place: int) -> str:
    """Calibration.alternatives' key of the token ranked `place` by the slot at `offset`."""
    return f"{offset}/{place}"


def expected_calibration_error(predicted, outcome, *, bins: int = 10) -> float:
    """Mean |predicted - observed| over equal-width probability bins, weighted by their size."""
    predicted, outcome = np.asarray(predicted, dtype=float), np.asarray(outcome, dtype=float)
    if predicted.size == 0:
        return 0.0
    which = np.minimum((predicted * bins).astype(int), bins - 1)
    error = 0.0
    for b in range(bins):
        chosen = which == b
        if chosen.any():
            error += chosen.sum() * abs(predicted[chosen].mean() - outcome[chosen].mean())
    return float(error / predicted.size)
