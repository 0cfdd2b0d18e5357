"""Command-line entry points; each module is `python -m shuffle_model.cli.<name>`:

    generate   generate text and print step statistics; show this machine's cost curve
    distill    answer prompts with the backbone into committed shards (data/distill)
    train      train a shuffle head on cached backbone features
    calibrate  fit what a draft's keep probability means, beside a head
    evaluate   compare trained heads (real generation, teacher-forced replay)
    lossless   measure the near-tie bound of verified decoding

The benchmark is its own package: `python -m shuffle_model.bench`.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable

from ..model.backbone import BackboneNotFound


def one_line_errors(main: Callable[..., int | None]) -> Callable[..., int]:
    """A command's main(argv): a model or backbone that cannot be loaded (BackboneNotFound, and
    HeadFolderError, a head folder that holds no loadable head) ends it with its one-line message
    on stderr and exit status 2 instead of a traceback; otherwise main's status (None: 0)."""

    @functools.wraps(main)
    def run(argv=None) -> int:
        try:
            return main(argv) or 0
        except BackboneNotFound as error:
            print(f"error: {error}", file=sys.stderr)
            return 2

    return run
