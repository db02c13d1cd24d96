"""Keep transformers from drawing progress bars on stderr while tokmusic loads or saves its parts."""

from __future__ import annotations

import contextlib
from typing import Iterator


@contextlib.contextmanager
def no_progress_bars() -> Iterator[None]:
    """Silence transformers' per-load/save progress bars for the duration of the block."""
    from transformers.utils import logging as hf_logging  # imported here: transformers is slow to import

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()
