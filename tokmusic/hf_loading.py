"""Loading transformers models the tokmusic way: no pickles, no progress bars, clear errors.

    with hf_loading.loading(name_or_path, "an EnCodec model") as source:
        model = EncodecModel.from_pretrained(source, use_safetensors=True)
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

from .errors import CheckpointError
from .fileio import refuse_pickles


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


@contextlib.contextmanager
def loading(name_or_path: str | os.PathLike, what: str,
            needs: str = "config.json and model.safetensors") -> Iterator[str]:
    """Yield ``name_or_path`` as transformers wants it, for the ``from_pretrained`` calls in the block.

    A local directory holding only pickled weights is refused; a file is refused; a failure to load
    becomes a CheckpointError naming the directory (or hub id) and what it should hold. ``what`` names
    the model in messages ("an EnCodec model"); ``needs`` lists the files a directory must hold.
    """
    from safetensors import SafetensorError

    path = Path(name_or_path).expanduser()
    local = path.is_dir()
    if local:
        refuse_pickles(path)
    elif path.exists():
        raise CheckpointError(f"{path}: is a file; pass the model's directory ({needs})")
    try:
        with no_progress_bars():
            yield str(path) if local else str(name_or_path)
    except (OSError, ValueError, TypeError, KeyError, SafetensorError) as exc:
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        if local:
            raise CheckpointError(
                f"{path}: cannot load {what} from this directory ({reason}); it needs {needs}"
            ) from None
        if isinstance(exc, OSError):
            raise CheckpointError(
                f"{name_or_path}: not a local directory, and the hub cannot be reached or has no such model "
                f"({reason}); download it elsewhere and pass its local directory"
            ) from None
        raise CheckpointError(f"{name_or_path}: cannot load {what} ({reason})") from None
