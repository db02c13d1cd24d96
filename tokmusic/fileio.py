"""Safe file handling: atomic writes, JSON configs and safetensors weights (never pickles)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from .errors import CheckpointError, ConfigError, TokmusicError
from .schema import check_transformers_config

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


def tensor_shapes(path: str | os.PathLike) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor in a .safetensors file, from its header (nothing is loaded)."""
    path = Path(path)
    if not path.is_file():
        load_tensors(path)  # raises the CheckpointError for a missing file or a pickle beside it
    try:
        with safe_open(str(path), "pt") as f:
            return {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc}); re-save it") from None


def check_tensor_shapes(path: str | os.PathLike, expected: Mapping[str, tuple[int, ...]],
                        config: str | os.PathLike) -> None:
    """CheckpointError unless ``path`` holds exactly the tensors ``expected`` (name -> shape, what ``config`` makes).

    Run before loading, so a config that claims a huge model fails here instead of allocating it.
    """
    found = tensor_shapes(path)
    missing, unexpected = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{path}: weights do not match {config} (missing {missing[:4]}, unexpected "
                              f"{unexpected[:4]}); re-export them, or restore the config they were saved with")
    for name, shape in expected.items():
        if tuple(found[name]) != tuple(shape):
            raise CheckpointError(
                f"{path}: tensor {name!r} is {list(found[name])} but {config} makes it {list(shape)}; the config "
                "does not describe these weights — restore the config they were saved with, or re-export both"
            )


@contextlib.contextmanager
def fitting_pretrained(model_class: Any, source: str | os.PathLike) -> Iterator[None]:
    """Turn what transformers raises for a local model directory whose config.json does not build, or does not fit
    its weights, into a CheckpointError naming the file (and the first tensor that does not fit).

        with loading(path, "an EnCodec model") as source, fitting_pretrained(EncodecModel, source):
            model = EncodecModel.from_pretrained(source, use_safetensors=True)
    """
    if Path(source).is_dir() and (Path(source) / "config.json").is_file():
        check_transformers_config(Path(source) / "config.json")
    try:
        yield
    except (TokmusicError, OSError, ValueError, TypeError, KeyError, SafetensorError):
        raise  # hf_loading.loading words these
    except Exception as exc:  # noqa: BLE001 — transformers raises about anything for a malformed config.json
        directory = Path(source)
        if not directory.is_dir():
            raise
        reason = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        config = directory / "config.json"
        expected = _pretrained_shapes(model_class, directory)
        if expected is None:
            raise CheckpointError(f"{config}: cannot build the model it describes ({reason}); restore the file or "
                                  "save the model again") from None
        for weights in sorted(directory.glob("*.safetensors")):
            found = tensor_shapes(weights)
            for name in sorted(set(found) & set(expected)):
                if tuple(found[name]) != expected[name]:
                    raise CheckpointError(
                        f"{weights}: tensor {name!r} is {list(found[name])} but {config} makes it "
                        f"{list(expected[name])}; the config does not describe these weights — restore it or save "
                        "the model again") from None
        raise CheckpointError(f"{directory}: cannot load the model ({reason}); save it again") from None


def _pretrained_shapes(model_class: Any, directory: Path) -> dict[str, tuple[int, ...]] | None:
    """Tensor shapes of ``model_class`` built (on the meta device: nothing allocated) from directory/config.json;
    None if the config does not build."""
    try:
        if hasattr(model_class, "config_class"):
            config = model_class.config_class.from_pretrained(str(directory))
            build = model_class
        else:  # an Auto class
            from transformers import AutoConfig

            config, build = AutoConfig.from_pretrained(str(directory)), model_class.from_config
        with torch.device("meta"):
            model = build(config)
        return {name: tuple(t.shape) for name, t in model.state_dict().items()}
    except Exception:  # noqa: BLE001 — any failure means the same thing: the config does not build a model
        return None


def check_output(path: Any, what: str, suffixes: Sequence[str] = (), *, directory: bool = False) -> Path:
    """The output ``path`` as a Path, or ConfigError (naming it and the fix) if it cannot be written.

    Called before the work that produces the output. A file's folder must exist; a directory may be new, and so
    may its parents (they are created), but the nearest existing one must be a writable folder. ``suffixes``: the
    allowed file types.
    """
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise ConfigError(f"{what}: the output must be a file path (a string or pathlib.Path), got {path!r}")
    path = Path(path)
    if suffixes and path.suffix.lower() not in suffixes:
        raise ConfigError(f"{path}: cannot write {path.suffix or 'a file without suffix'!r} as the {what}; "
                          f"name it *{', *'.join(suffixes)}")
    if directory:
        if path.exists() and not path.is_dir():
            raise ConfigError(f"{path}: is a file; choose a directory path for the {what}")
        folder = path
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
    else:
        if path.is_dir():
            raise ConfigError(f"{path}: is a directory; name a file for the {what}")
        folder = path.parent
        if not folder.exists():
            raise ConfigError(f"{path}: the folder {folder} does not exist; create it first, or choose another path "
                              f"for the {what}")
    if not folder.is_dir():
        raise ConfigError(f"{path}: {folder} is a file, not a folder; choose another path for the {what}")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(f"{path}: the folder {folder} is not writable; choose another path for the {what}")
    return path
