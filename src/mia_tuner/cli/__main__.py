"""`python -m mia_tuner.cli` (what `accelerate launch` and `torchrun` run)."""

import sys

from . import main

sys.exit(main())
