"""Training manifests: one JSON object per line naming a video and (optionally) its music.

    {"video": "clips/0001.mp4", "audio": "music/0001.flac", "text": "calm piano", "split": "train"}

``video`` is required; ``audio`` defaults to the video's own soundtrack; ``split`` is "train" (default) or
"valid". Relative paths are relative to the manifest's folder. ``"keep_control": true`` marks an item whose
control is never dropped in training (a stage's ``control_dropout``): for pairs whose video disagrees with their
music on purpose, so that the stage learns that the control overrides the video while what it learns without a
control comes only from pairs whose video and music agree.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError

KEYS = {"video", "audio", "text", "split", "keep_control"}
SPLITS = ("train", "valid")


@dataclass(frozen=True)
class ManifestItem:
    """One video–music pair; ``key`` is a stable id used for shards and resuming.

    ``root`` is the manifest's folder. The key comes from the paths relative to it, so a corpus copied or moved
    whole (its manifest and files together) keeps its keys and is not preprocessed again.
    """

    line: int
    video: Path
    audio: Path | None
    text: str | None
    split: str
    keep_control: bool = False
    root: Path | None = None

    @property
    def key(self) -> str:
        if self.root is None:
            return self.absolute_key
        video = Path(os.path.relpath(self.video, self.root)).as_posix()
        audio = Path(os.path.relpath(self.audio, self.root)).as_posix() if self.audio else ""
        return _digest(video, audio)

    @property
    def absolute_key(self) -> str:
        """The key from the resolved paths: what data dirs written before keys were relative hold."""
        return _digest(str(self.video), str(self.audio or ""))

    def finished_entry(self, finished: dict[str, dict]) -> dict | None:
        """This item's entry among a data dir's finished ones (``shards.finished_items``), under either key."""
        return finished.get(self.key) or finished.get(self.absolute_key)

    @property
    def music_path(self) -> Path:
        """The file the music is read from: ``audio`` if given, else the video itself."""
        return self.audio if self.audio is not None else self.video


def read_manifest(path: str | os.PathLike, *, check_files: bool = True) -> list[ManifestItem]:
    """Parse and check a manifest; DataError naming the line for any bad line, an empty file, or a missing path."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: manifest not found; pass a JSONL file with one {{\"video\": ...}} per line")
    base = path.parent
    root = base.resolve()
    items: list[ManifestItem] = []
    seen: dict[str, int] = {}
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        if not raw.strip():
            continue
        where = f"{path}:{number}"
        try:
            entry = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise DataError(f"{where}: not a JSON object ({exc.msg}); each line must be like "
                            '{"video": "clip.mp4", "split": "train"}') from None
        if not isinstance(entry, dict):
            raise DataError(f"{where}: must be a JSON object, found {type(entry).__name__}")
        unknown = sorted(set(entry) - KEYS)
        if unknown:
            raise DataError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(KEYS)}")
        if not isinstance(entry.get("video"), str) or not entry["video"]:
            raise DataError(f"{where}: missing the 'video' key (a path to the video file)")
        for key in ("audio", "text"):
            if entry.get(key) is not None and not isinstance(entry[key], str):
                raise DataError(f"{where}: '{key}' must be a string, got {entry[key]!r}")
        keep_control = entry.get("keep_control", False)
        if not isinstance(keep_control, bool):
            raise DataError(f"{where}: 'keep_control' must be true or false, got {keep_control!r}")
        split = entry.get("split", "train")
        if split not in SPLITS:
            raise DataError(f"{where}: split must be one of {SPLITS}, got {split!r}")
        video = _resolve(base, entry["video"])
        audio = _resolve(base, entry["audio"]) if entry.get("audio") else None
        if check_files:
            for key, file in (("video", video), ("audio", audio)):
                if file is not None and not file.exists():
                    raise DataError(f"{where}: {key} file {file} does not exist; fix the path or remove the line")
        item = ManifestItem(number, video, audio, entry.get("text"), split, keep_control, root)
        if item.key in seen:
            raise DataError(f"{where}: the same video/audio pair as line {seen[item.key]}; remove the duplicate")
        seen[item.key] = number
        items.append(item)
    if not items:
        raise DataError(f"{path}: manifest is empty; add one JSON object per line")
    return items


def _digest(video: str, audio: str) -> str:
    return hashlib.sha1(f"{video}\0{audio}".encode()).hexdigest()[:16]


def _resolve(base: Path, name: str) -> Path:
    p = Path(name).expanduser()
    return (p if p.is_absolute() else base / p).resolve()
