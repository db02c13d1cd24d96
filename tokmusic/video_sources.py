"""Where a batch's videos come from: a folder, a glob pattern, a list file or a sequence of paths -> BatchItems.

    items = find_videos("videos/", exclude=Path("music"))   # [BatchItem(video=..., name=PurePath("a/b.mp4")), ...]

A folder is searched recursively for video files (``VIDEO_SUFFIXES``, any case); hidden files and folders and
``exclude`` (the output folder) are left out. A glob pattern (``"clips/**/*.mp4"``) takes every file it matches.
A list file (``.txt``) names one video per line, relative to the list file's folder; blank lines and lines
starting with ``#`` are ignored. Each item keeps its path relative to the folder it was found in, which names
its output (``tokmusic.batch.output_paths``).
"""

from __future__ import annotations

import glob as _glob
import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Iterable, Sequence

from .errors import ConfigError

# What a folder search takes as a video (lower-case suffixes; files are matched case-insensitively).
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".wmv", ".flv", ".ts",
                  ".mts", ".m2ts", ".3gp", ".ogv")
LIST_SUFFIXES = (".txt",)
_MAGIC = re.compile(r"[*?[]")


def is_batch_source(source: str | os.PathLike) -> bool:
    """True if ``source`` names many videos: an existing folder, a list file (``.txt``) or a glob pattern that
    is not itself an existing file. A plain file path is one video (``tokmusic generate VIDEO``)."""
    path = Path(source)
    if path.is_dir() or path.suffix.lower() in LIST_SUFFIXES:
        return True
    return not path.exists() and bool(_MAGIC.search(str(source)))


@dataclass(frozen=True)
class BatchItem:
    """One video of a batch: ``video`` as found, and ``name``, its output path relative to the output folder
    without suffix (``a/b`` for ``videos/a/b.mp4``)."""

    video: Path
    name: PurePath


def absolute_path(path: str | os.PathLike) -> Path:
    return Path(os.path.abspath(path))  # absolute, symlinks kept (a link inside the folder is named as a link)


def _item(video: Path, base: Path) -> BatchItem:
    try:
        rel = absolute_path(video).relative_to(absolute_path(base))
    except ValueError:  # a list file may name videos outside its folder: those are named by file name alone
        rel = Path(video.name)
    return BatchItem(video, rel.with_suffix(""))


def _inside(path: Path, folder: Path | None) -> bool:
    if folder is None:
        return False
    path, folder = absolute_path(path), absolute_path(folder)
    return path == folder or folder in path.parents


def _scan_folder(folder: Path, exclude: Path | None) -> list[BatchItem]:
    items = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not _inside(Path(root, d), exclude))
        for name in sorted(files):
            if not name.startswith(".") and Path(name).suffix.lower() in VIDEO_SUFFIXES:
                items.append(_item(Path(root, name), folder))
    if not items:
        raise ConfigError(f"{folder}: no video files found in this folder or below (looked for "
                          f"{', '.join(VIDEO_SUFFIXES)}); pass a folder of videos, a glob pattern or a list file")
    return items


def _read_list(list_file: Path) -> list[BatchItem]:
    if not list_file.is_file():
        raise ConfigError(f"{list_file}: no such list file; a list file names one video per line")
    try:
        lines = list_file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{list_file}: cannot read the list file ({exc}); it must be UTF-8 text with one "
                          "video path per line") from None
    base, items, seen = list_file.parent, [], set()
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        video = Path(line) if Path(line).is_absolute() else base / line
        if absolute_path(video) not in seen:  # a video listed twice is generated once
            seen.add(absolute_path(video))
            items.append(_item(video, base))
    if not items:
        raise ConfigError(f"{list_file}: the list file names no videos; write one video path per line "
                          "(relative to the list file's folder)")
    return items


def _glob_base(pattern: str) -> Path:
    """The fixed folder a glob pattern starts from: ``clips/2024`` for ``clips/2024/**/*.mp4``."""
    parts = Path(pattern).parts
    fixed = []
    for part in parts[:-1]:
        if _MAGIC.search(part):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else Path(".")


def _expand_glob(pattern: str, exclude: Path | None) -> list[BatchItem]:
    base = _glob_base(pattern)
    matches = sorted(Path(p) for p in _glob.glob(pattern, recursive=True))
    items = [_item(p, base) for p in matches if p.is_file() and not _inside(p, exclude)]
    if not items:
        raise ConfigError(f"{pattern}: the pattern matches no files; check it (quote it, so the shell does not "
                          "expand it) or pass a folder or a list file")
    return items


def find_videos(source: str | os.PathLike | Sequence[str | os.PathLike], *,
                exclude: str | os.PathLike | None = None) -> list[BatchItem]:
    """The videos of a batch, sorted by output name: ``source`` is a folder, a list file (``.txt``), a glob
    pattern, or a sequence of video paths (each named by its file name). Files under ``exclude`` (the output
    folder) are left out of folder and glob searches. Raises ConfigError when nothing is found.

    The listed files are not opened here: a missing or unreadable one fails when its turn comes.
    """
    exclude = Path(exclude) if exclude is not None else None
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir():
            items = _scan_folder(path, exclude)
        elif path.suffix.lower() in LIST_SUFFIXES:
            items = _read_list(path)
        elif not path.exists() and _MAGIC.search(str(source)):
            items = _expand_glob(str(source), exclude)
        elif not path.exists():
            raise ConfigError(f"{path}: no such folder, list file or video; check the path")
        else:
            raise ConfigError(f"{path}: not a folder, a list file (.txt) or a glob pattern; pass one of those "
                              "to generate many videos, or one video with `tokmusic generate VIDEO -o OUT.wav`")
    elif isinstance(source, Iterable):
        items, seen = [], set()
        for video in source:
            if not isinstance(video, (str, os.PathLike)):
                raise ConfigError(f"videos must be given as paths (str or os.PathLike), got {video!r}")
            if absolute_path(video) not in seen:
                seen.add(absolute_path(video))
                items.append(BatchItem(Path(video), PurePath(Path(video).stem)))
        if not items:
            raise ConfigError("the list of videos is empty; pass at least one video path")
    else:
        raise ConfigError(f"pass a folder, a list file, a glob pattern or a list of video paths, not {source!r}")
    return sorted(items, key=lambda item: (item.name.as_posix(), str(item.video)))
