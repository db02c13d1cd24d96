"""Music for many videos in one run: a folder, a glob pattern or a list file, into an output folder.

    from tokmusic.batch import generate_batch
    summary = generate_batch("videos/", "music/", seed=1, num_samples=2)
    print(summary.line())            # "tokmusic: 8 written, 0 skipped (already there), 0 failed; 4 videos"

or on the command line (``tokmusic generate DIR|GLOB|LIST.txt -o OUT_DIR``), also over several processes:

    accelerate launch --multi_gpu --num_processes 2 -m tokmusic.cli generate videos/ -o music/

Rules, all of them safe to rely on when a run is repeated or interrupted:

* **Inputs.** A folder is searched recursively for video files (``VIDEO_SUFFIXES``, any case); hidden files and
  folders and the output folder itself are left out. A glob pattern (``"clips/**/*.mp4"``, quoted so the shell
  leaves it alone) takes every file it matches. A list file (``.txt``) names one video per line, relative to the
  list file's folder; blank lines and lines starting with ``#`` are ignored.
* **Outputs.** A video's output keeps its path relative to the folder it was found in (the folder given, the
  fixed part of the glob, the list file's folder) with the suffix of ``format``: ``videos/a/b.mp4`` gives
  ``OUT/a/b.wav``. With ``num_samples=N > 1`` there are N outputs ``b-1.wav … b-N.wav``; sample k uses the seed
  ``seed + k - 1`` (so ``b-1.wav`` is what ``tokmusic generate b.mp4 --seed S`` writes), or a fresh random seed
  when ``seed`` is None. The samples of a video are decoded together, one decode step for all of them
  (``Pipeline.generate_samples``), which costs far less than one after another. Two videos that would write
  the same output (``a.mp4`` and ``a.mov``) are refused before anything is generated.
* **Atomic, never overwritten.** Each output is written to a hidden temporary file beside it and renamed into
  place, so a failed or killed run leaves no half files. An output that exists is skipped unless
  ``overwrite=True``, so re-running the same command does only what is missing.
* **Failures.** A video that cannot be used (corrupt, not a video, no pictures, …) or whose generation fails is
  reported in one line naming it and the reason, and the batch goes on. Settings that are wrong for every video
  (a bad pipeline, sampling option or prompt) raise a TokmusicError before any video is tried.
* **Several processes.** Under ``accelerate launch`` (or any launcher that sets ``WORLD_SIZE``/``RANK``) the
  sorted list of videos is split round-robin by process index: process r of w takes videos r, r + w, r + 2w, …
  Each process loads the pipeline once (onto its own GPU when there is one) and writes its own outputs. When the
  launcher also sets ``MASTER_ADDR``/``MASTER_PORT`` (accelerate launch, torchrun), the processes form a group
  through accelerate's ``PartialState`` and the counts are gathered: every process returns the total, and only
  the main process prints it. With ``WORLD_SIZE``/``RANK`` alone there is no group; each process returns and
  prints its own summary, labelled ``process r/w``. On the command line a gathered batch exits 1 from process 0
  when a video of any process failed (the others exit 0); a process that reports alone exits 1 for its own.
"""

from __future__ import annotations

import glob as _glob
import os
import random
import re
import sys
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path, PurePath
from typing import Callable, Iterable, Sequence

from . import default
from .errors import CheckpointError, ConfigError, TokmusicError
from .schema import MAX_SEED

# What a folder search takes as a video (lower-case suffixes; files are matched case-insensitively).
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".wmv", ".flv", ".ts",
                  ".mts", ".m2ts", ".3gp", ".ogv")
# What a batch can write: the music alone, or the video with the music as its soundtrack.
AUDIO_FORMATS = ("wav", "flac")
VIDEO_FORMATS = ("mp4", "m4v", "mkv", "mov", "webm")
FORMATS = AUDIO_FORMATS + VIDEO_FORMATS
LIST_SUFFIXES = (".txt",)
_MAGIC = re.compile(r"[*?[]")
# A process waiting for the others to finish their share waits this long before the process group gives up.
GATHER_TIMEOUT = timedelta(days=7)


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


def _abs(path: str | os.PathLike) -> Path:
    return Path(os.path.abspath(path))  # absolute, symlinks kept (a link inside the folder is named as a link)


def _item(video: Path, base: Path) -> BatchItem:
    try:
        rel = _abs(video).relative_to(_abs(base))
    except ValueError:  # a list file may name videos outside its folder: those are named by file name alone
        rel = Path(video.name)
    return BatchItem(video, rel.with_suffix(""))


def _inside(path: Path, folder: Path | None) -> bool:
    if folder is None:
        return False
    path, folder = _abs(path), _abs(folder)
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
        if _abs(video) not in seen:  # a video listed twice is generated once
            seen.add(_abs(video))
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
            if _abs(video) not in seen:
                seen.add(_abs(video))
                items.append(BatchItem(Path(video), PurePath(Path(video).stem)))
        if not items:
            raise ConfigError("the list of videos is empty; pass at least one video path")
    else:
        raise ConfigError(f"pass a folder, a list file, a glob pattern or a list of video paths, not {source!r}")
    return sorted(items, key=lambda item: (item.name.as_posix(), str(item.video)))


def sample_seed(seed: int | None, k: int) -> int | None:
    """The seed of sample ``k`` (1-based) of a video in a batch seeded ``seed``: ``seed + k - 1`` (None stays
    None: a fresh random seed for each output)."""
    return None if seed is None else (seed + k - 1) % MAX_SEED


def output_paths(item: BatchItem, out_dir: str | os.PathLike, format: str = "wav",
                 num_samples: int = 1) -> list[Path]:
    """The output files of ``item``: ``OUT/NAME.FORMAT``, or ``OUT/NAME-1.FORMAT … OUT/NAME-N.FORMAT``."""
    base = Path(out_dir) / item.name
    if num_samples == 1:
        return [base.with_name(f"{base.name}.{format}")]
    return [base.with_name(f"{base.name}-{k}.{format}") for k in range(1, num_samples + 1)]


@dataclass
class BatchSummary:
    """What a batch did. ``written`` and ``skipped`` are output files (``skipped``: they were there already);
    ``failed`` is (video, reason) per video that failed; ``videos`` how many videos were handled. A summary
    of one process of several covers its share only unless ``gathered``."""

    videos: int = 0
    written: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    rank: int = 0
    world: int = 1
    gathered: bool = False

    @property
    def ok(self) -> bool:
        """True when no video failed."""
        return not self.failed

    @property
    def is_main(self) -> bool:
        """True for a process that prints this summary: process 0 of a gathered group; any process otherwise
        (the only one, or one of several that each report their own share)."""
        return not self.gathered or self.rank == 0

    def line(self) -> str:
        """The one-line summary: ``tokmusic: 4 written, 0 skipped (already there), 1 failed; 5 videos``."""
        label = "" if self.world == 1 or self.gathered else f"process {self.rank}/{self.world}: "
        procs = f" in {self.world} processes" if self.world > 1 and self.gathered else ""
        return (f"tokmusic: {label}{len(self.written)} written, {len(self.skipped)} skipped (already there), "
                f"{len(self.failed)} failed; {self.videos} video{'s' if self.videos != 1 else ''}{procs}")

    @classmethod
    def combine(cls, parts: Sequence["BatchSummary"], rank: int) -> "BatchSummary":
        """The summary of a whole batch from each process's summary (in process order), as seen by ``rank``."""
        total = cls(rank=rank, world=len(parts), gathered=True)
        for part in parts:
            total.videos += part.videos
            total.written += part.written
            total.skipped += part.skipped
            total.failed += part.failed
        return total


def failure_line(video: Path, reason: str) -> str:
    """The one line that reports a failed video: ``tokmusic: failed: VIDEO: REASON``."""
    return f"tokmusic: failed: {video}: {reason}"


def _reason(video: Path, exc: BaseException) -> str:
    message = (str(exc).strip().splitlines() or [""])[0]
    if not isinstance(exc, TokmusicError):  # a bug or a resource problem (out of memory): say what it was
        message = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    for shown in (str(video), str(_abs(video)), str(Path(video).resolve())):  # the reason names the file again
        if message.startswith(f"{shown}: "):
            return message[len(shown) + 2:]
    return message


def _check_plan(items: list[BatchItem], out_dir: Path, format: str, num_samples: int) -> None:
    owner: dict[Path, BatchItem] = {}
    for item in items:
        for out in output_paths(item, out_dir, format, num_samples):
            key = _abs(out)
            if key in owner:
                raise ConfigError(f"{owner[key].video} and {item.video} would both write {out}; outputs are named "
                                  "after the video without its suffix — rename one of them")
            owner[key] = item
            if key == _abs(item.video):
                raise ConfigError(f"{out}: the output would overwrite the input video; choose another -o folder")


def _environment_split() -> tuple[int, int, object | None]:
    """(rank, world, accelerate PartialState or None) of this process, from what the launcher set."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return 0, 1, None
    if os.environ.get("MASTER_ADDR") and os.environ.get("MASTER_PORT"):
        from accelerate import PartialState

        from .training.cli import distributed_cpu

        state = PartialState(cpu=distributed_cpu(), timeout=GATHER_TIMEOUT)
        return state.process_index, state.num_processes, state
    rank = int(os.environ.get("RANK", "0") or 0)
    if not 0 <= rank < world:
        raise ConfigError(f"RANK={rank} is not in [0, WORLD_SIZE={world}); check the launcher's settings")
    return rank, world, None


def generate_batch(source: str | os.PathLike | Sequence[str | os.PathLike], out_dir: str | os.PathLike,
                   prompt: str | None = None, *, pipeline=None, seed: int | None = None,
                   seconds: float | None = None, num_samples: int = 1, overwrite: bool = False,
                   format: str = "wav", progress: bool = True, rank: int | None = None, world: int | None = None,
                   report: Callable[[str], None] | None = None, **sampling) -> BatchSummary:
    """Write music for every video of ``source`` into ``out_dir``; returns a BatchSummary (see the module
    docstring for how inputs are found, how outputs are named, and what is skipped).

    source      a folder, a list file (.txt), a glob pattern, or a sequence of video paths
    out_dir     the output folder (created, with its parents, if missing)
    prompt, seed, seconds, **sampling   as for ``tokmusic.generate``, for every video (seed: see ``sample_seed``)
    pipeline    None (the default pipeline), a directory or a Pipeline; loaded once for the whole batch
    num_samples outputs per video; ``overwrite`` replaces existing outputs instead of skipping them
    format      "wav" or "flac" (the music), or "mp4", "m4v", "mkv", "mov", "webm" (the video with the music)
    progress    one progress bar over the videos (on the main process only)
    rank, world this process's share: videos rank, rank + world, …; both None: from the launcher's environment
                (accelerate launch), with the counts of all processes gathered when it formed a process group
    report      called with the one line about each failed video (default: printed to stderr)

    Raises a TokmusicError (nothing generated) for a bad output folder, a source with no videos, outputs that
    would collide, or settings no video can be generated with. A video that fails is reported and counted.
    """
    from tqdm.auto import tqdm

    from .fileio import check_output
    from .schema import check_generate_arguments

    check_generate_arguments(prompt=prompt, seed=seed, seconds=seconds, progress=progress)
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ConfigError(f"num_samples must be an integer >= 1, got {num_samples!r}")
    if not isinstance(format, str) or format.lower().lstrip(".") not in FORMATS:
        raise ConfigError(f"format {format!r} is not one of {', '.join(FORMATS)}")
    format = format.lower().lstrip(".")
    if not isinstance(out_dir, (str, os.PathLike)) or not str(out_dir):
        raise ConfigError(f"the output folder must be a path, got {out_dir!r}")
    if Path(out_dir).suffix.lower().lstrip(".") in FORMATS and not Path(out_dir).is_dir():
        raise ConfigError(f"{out_dir}: names a file, but many videos are written into a folder; pass a folder "
                          f"with -o (and the output type with --format)")
    out_dir = check_output(out_dir, "output folder", directory=True)

    state = None
    if rank is None and world is None:
        rank, world, state = _environment_split()
    elif rank is None or world is None:
        raise ConfigError("pass both rank and world (this process's share of the batch), or neither")
    if not (isinstance(world, int) and world >= 1 and isinstance(rank, int) and 0 <= rank < world):
        raise ConfigError(f"rank must be in [0, world) and world >= 1, got rank={rank!r}, world={world!r}")
    main = rank == 0

    items = find_videos(source, exclude=out_dir)
    _check_plan(items, out_dir, format, num_samples)
    out_dir.mkdir(parents=True, exist_ok=True)
    mine = items[rank::world]

    pipe = default.resolve_pipeline(pipeline, warn_missing=False)
    if state is not None and getattr(state, "device", None) is not None and state.device.type != "cpu":
        pipe.to(state.device)
    pipe.check_request(prompt, **sampling)  # a bad option is one error now, not one failure per video

    def say(line: str) -> None:
        if report is not None:
            report(line)
        else:
            tqdm.write(line, file=sys.stderr)

    summary = BatchSummary(rank=rank, world=world)
    desc = "videos" if world == 1 else f"videos (process {rank}/{world})"
    with tqdm(mine, desc=desc, unit="video", disable=not (progress and main), dynamic_ncols=True) as bar:
        for item in bar:
            summary.videos += 1
            outs = output_paths(item, out_dir, format, num_samples)
            todo = [(k, out) for k, out in enumerate(outs, 1) if overwrite or not out.exists()]
            planned = {out for _, out in todo}
            summary.skipped += [out for out in outs if out not in planned]
            if not todo:
                continue
            try:
                _write_outputs(pipe, item.video, todo, prompt=prompt, seed=seed, seconds=seconds,
                               written=summary.written, **sampling)
            except (ConfigError, CheckpointError):
                raise  # about the settings, not this video: every other video would fail the same way
            except Exception as exc:  # noqa: BLE001 — one bad video must not stop the batch
                reason = _reason(item.video, exc)
                summary.failed.append((item.video, reason))
                say(failure_line(item.video, reason))

    if state is not None:
        summary = _gather(summary, state)
    return summary


def _write_outputs(pipe, video: Path, todo: list[tuple[int, Path]], *, prompt, seed, seconds,
                   written: list[Path], **sampling) -> None:
    from .video import probe

    probe(video)  # a bad video is reported before any model runs
    seeds = [random.randrange(MAX_SEED) if seed is None else sample_seed(seed, k) for k, _ in todo]
    musics = pipe.generate_samples(video, prompt, seeds=seeds, seconds=seconds, progress=False, **sampling)
    for (_, out), music in zip(todo, musics):
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.suffix.lstrip(".") in AUDIO_FORMATS:
            music.save(out)  # atomic: temp file + rename
        else:
            music.mux(video, out)  # atomic too
        written.append(out)


def _gather(summary: BatchSummary, state) -> BatchSummary:
    """Every process's summary, combined, on every process (a collective: all processes call it)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or state.num_processes == 1:
        return summary
    parts: list = [None] * state.num_processes
    dist.all_gather_object(parts, summary)
    return BatchSummary.combine(parts, summary.rank)


__all__ = ["BatchItem", "BatchSummary", "FORMATS", "VIDEO_SUFFIXES", "find_videos", "generate_batch",
           "is_batch_source", "output_paths", "sample_seed"]
