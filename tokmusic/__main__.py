"""``python -m tokmusic ...``: the same as the ``tokmusic`` command (``python -m tokmusic.cli`` works too)."""

import sys

from .cli import main

sys.exit(main())
