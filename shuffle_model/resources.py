"""Where the shipped files are: the heads, example traces and fonts (`assets/`) and the
benchmark's questions (`bench/spec_bench/`).

In the repository they sit beside the packages; an installed wheel carries them inside
`shuffle_model` (pyproject.toml maps `assets/` to `shuffle_model/assets/` and
`bench/spec_bench/` to `shuffle_model/bench/spec_bench/`). DATA_ROOT is whichever of the two
holds them, so every path below reads the same in both: this is the one place that decides.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
INSTALLED = (PACKAGE / "assets").is_dir()  # a wheel's copy inside the package
DATA_ROOT = PACKAGE if INSTALLED else PACKAGE.parent
# The repository when running from one: results and caches go there, never into site-packages.
REPOSITORY: Path | None = None if INSTALLED else PACKAGE.parent

ASSETS = DATA_ROOT / "assets"
DEFAULT_HEAD_DIR = ASSETS / "default_head"  # the shipped head (the default model)
DEFAULT_FIXED_HEAD_DIR = ASSETS / "fixed_head"  # the fixed-assignment ablation, for the benchmark
SPEC_BENCH = DATA_ROOT / "bench" / "spec_bench" / "question.jsonl"
