"""Safe file handling: atomic writes, JSON configs and safetensors weights (never pickles)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .errors import CheckpointError, ConfigError

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _publish_mode(path: Path, directory: bool) -> None:
    """Give a temporary file/dir the mode a plain open()/mkdir() would have (mkstemp/mkdtemp use 0600/0700)."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it onto `path`, on failure delete it.

    The temporary name keeps the suffix of `path`, so writers that choose a format by suffix work.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        _publish_mode(tmp, directory=False)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory beside `path`; on success it replaces `path` whole."""
    path = Path(path).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        _publish_mode(tmp, directory=True)
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def check_replaceable(directory: str | os.PathLike, marker: str, what: str) -> None:
    """Refuse to replace an existing non-empty directory that does not hold ``marker`` (it is not a ``what``)."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise ConfigError(f"{directory}: is a file; choose a directory path for the {what}")
    if directory.is_dir() and any(directory.iterdir()) and not (directory / marker).is_file():
        raise ConfigError(
            f"{directory}: not empty and not a {what} (no {marker}); saving would replace everything in it. "
            "Choose a new or empty directory"
        )


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write `obj` as indented JSON, atomically."""
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path: str | os.PathLike, what: str = "config") -> dict:
    """Read a JSON object; a missing or malformed file raises CheckpointError naming it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: {what} file is missing; the directory is incomplete — save it again")
    try:
        obj = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: {what} is not valid JSON ({exc}); restore or re-save it") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: {what} must be a JSON object, found {type(obj).__name__}")
    return obj


def refuse_pickles(directory: str | os.PathLike) -> None:
    """Raise CheckpointError if `directory` holds pickled weights and no safetensors file."""
    directory = Path(directory)
    pickles = sorted(p.name for p in directory.iterdir() if p.suffix in PICKLE_SUFFIXES)
    has_safetensors = any(p.suffix == ".safetensors" for p in directory.iterdir())
    if pickles and not has_safetensors:
        raise CheckpointError(
            f"{directory}: holds pickled weights ({', '.join(pickles)}); tokmusic never unpickles. "
            "Convert them to model.safetensors (safetensors.torch.save_file) and try again"
        )


def save_tensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor]) -> None:
    """Write tensors to a .safetensors file, atomically (tied weights are stored once each)."""
    tensors = {k: v.detach().contiguous().cpu().clone() for k, v in tensors.items()}
    with atomic_file(path) as tmp:
        save_file(tensors, str(tmp))


def load_tensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a .safetensors file; a pickle, missing or corrupt file raises CheckpointError."""
    path = Path(path)
    if not path.is_file():
        for suffix in PICKLE_SUFFIXES:
            if path.with_suffix(suffix).is_file():
                raise CheckpointError(
                    f"{path.with_suffix(suffix)}: pickled weights are refused (never unpickled); "
                    f"convert them to {path.name} with safetensors"
                )
        raise CheckpointError(f"{path}: weights file is missing; the directory is incomplete — save it again")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc}); re-save it") from None


def check_keys(config: dict, allowed: set[str] | list[str], where: str) -> None:
    """Raise ConfigError for keys of `config` not in `allowed`."""
    unknown = sorted(set(config) - set(allowed))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")
