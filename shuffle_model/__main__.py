"""python -m shuffle_model generate "prompt" [options] | python -m shuffle_model cost
(the command lives in cli/generate.py)."""

import sys

from .cli.generate import main

if __name__ == "__main__":
    sys.exit(main())
