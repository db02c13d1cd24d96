"""What `tokmusic eval` reads: folders of audio (or videos with soundtracks), videos, and prompts.

Clips pair across folders by name: `generated/a/b.wav`, `reference/a/b.flac` and `videos/a/b.mp4` are all
clip "a/b".
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..errors import AudioError, DataError

AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac")
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v")


def list_media(directory: str | Path, suffixes: tuple[str, ...], what: str) -> dict[str, Path]:
    """Clip name -> file for every file under `directory` with one of `suffixes`, sorted by name.

    The name is the path relative to `directory` without its suffix. Raises DataError when the folder is
    missing or holds no such file.
    """
    root = Path(directory)
    if not root.is_dir():
        raise DataError(f"{root}: {what} folder does not exist; pass a directory of {'/'.join(suffixes)} files")
    found: dict[str, Path] = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.suffix.lower() in suffixes and not path.name.startswith("."):
            found.setdefault(path.relative_to(root).with_suffix("").as_posix(), path)
    if not found:
        raise DataError(f"{root}: no {what} files found (looked for {', '.join(suffixes)})")
    return found


def load_clip(path: Path, sample_rate: int) -> torch.Tensor:
    """Mono float32 [1, N] at `sample_rate` of any file ffmpeg reads; AudioError when it cannot be decoded."""
    from ..audio import load_audio

    wave = load_audio(path, sample_rate, channels=1)
    if wave.numel() == 0:
        raise AudioError(f"{path}: holds no audio samples")
    return wave


def read_prompts(path: str | Path) -> dict[str, str]:
    """Clip name -> prompt text, from a JSON object {name: text} or JSON lines (always for *.jsonl).

    A JSON line holds "text" and a clip given as "name", "audio" or "video" (the file's stem names the clip;
    this is the training-manifest format).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: prompts file does not exist")
    text = path.read_text()
    obj = None
    if path.suffix.lower() != ".jsonl":  # a one-line JSON-lines file would also parse as one object
        try:
            obj = json.loads(text)
        except json.JSONDecodeError:
            obj = None
    if isinstance(obj, dict):
        if not all(isinstance(v, str) for v in obj.values()):
            raise DataError(f"{path}: a prompts object must map clip names to strings")
        return dict(obj)
    prompts = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{number}: not JSON ({exc.msg}); write one object per line") from None
        key = row.get("name") if isinstance(row, dict) else None
        if isinstance(row, dict) and key is None:
            source = row.get("audio") or row.get("video")
            key = Path(source).stem if isinstance(source, str) else None
        if key is None or not isinstance(row.get("text"), str):
            raise DataError(f"{path}:{number}: needs \"text\" and one of \"name\", \"audio\", \"video\"")
        prompts[str(key)] = row["text"]
    return prompts
