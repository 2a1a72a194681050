"""``python -m snapvit_core``: the command line."""

import sys

from snapvit_core.cli import main

sys.exit(main())
