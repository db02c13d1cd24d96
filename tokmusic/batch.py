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
  (``Pipeline.generate_many``), which costs far less than one after another; with ``videos_together=N``
  (``--batch-size N``) so are N videos at a time, those of the same length sharing each decode step. Two
  videos that would write the same output (``a.mp4`` and ``a.mov``) are refused before anything is generated.
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

import os
import random
import sys
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Callable, Sequence

from . import default
from .errors import CheckpointError, ConfigError, TokmusicError
from .schema import MAX_SEED
from .video_sources import VIDEO_SUFFIXES, BatchItem, absolute_path, find_videos, is_batch_source

# What a batch can write: the music alone, or the video with the music as its soundtrack.
AUDIO_FORMATS = ("wav", "flac")
VIDEO_FORMATS = ("mp4", "m4v", "mkv", "mov", "webm")
FORMATS = AUDIO_FORMATS + VIDEO_FORMATS
# A process waiting for the others to finish their share waits this long before the process group gives up.
GATHER_TIMEOUT = timedelta(days=7)


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
    for shown in (str(video), str(absolute_path(video)), str(Path(video).resolve())):  # the reason names the file again
        if message.startswith(f"{shown}: "):
            return message[len(shown) + 2:]
    return message


def _check_plan(items: list[BatchItem], out_dir: Path, format: str, num_samples: int) -> None:
    owner: dict[Path, BatchItem] = {}
    for item in items:
        for out in output_paths(item, out_dir, format, num_samples):
            key = absolute_path(out)
            if key in owner:
                raise ConfigError(f"{owner[key].video} and {item.video} would both write {out}; outputs are named "
                                  "after the video without its suffix — rename one of them")
            owner[key] = item
            if key == absolute_path(item.video):
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
                   report: Callable[[str], None] | None = None, videos_together: int = 1,
                   **sampling) -> BatchSummary:
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
    videos_together   videos handed to ``Pipeline.generate_many`` at once: those of the same length share each
                decode step (faster; the music is the same up to rounding). A failure is still one video's.

    Raises a TokmusicError (nothing generated) for a bad output folder, a source with no videos, outputs that
    would collide, or settings no video can be generated with. A video that fails is reported and counted.
    """
    from tqdm.auto import tqdm

    from .fileio import check_output
    from .schema import check_generate_arguments

    check_generate_arguments(prompt=prompt, seed=seed, seconds=seconds, progress=progress)
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ConfigError(f"num_samples must be an integer >= 1, got {num_samples!r}")
    if isinstance(videos_together, bool) or not isinstance(videos_together, int) or videos_together < 1:
        raise ConfigError(f"videos_together must be an integer >= 1, got {videos_together!r}")
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
    with tqdm(total=len(mine), desc=desc, unit="video", disable=not (progress and main), dynamic_ncols=True) as bar:
        for first in range(0, len(mine), videos_together):
            chunk, jobs = mine[first : first + videos_together], []
            for item in chunk:
                summary.videos += 1
                outs = output_paths(item, out_dir, format, num_samples)
                todo = [(k, out) for k, out in enumerate(outs, 1) if overwrite or not out.exists()]
                planned = {out for _, out in todo}
                summary.skipped += [out for out in outs if out not in planned]
                if todo:
                    jobs.append((item.video, todo))
            for video, reason in _write_outputs(pipe, jobs, prompt=prompt, seed=seed, seconds=seconds,
                                                written=summary.written, **sampling):
                summary.failed.append((video, reason))
                say(failure_line(video, reason))
            bar.update(len(chunk))

    if state is not None:
        summary = _gather(summary, state)
    return summary


def _write_outputs(pipe, jobs: list[tuple[Path, list[tuple[int, Path]]]], *, prompt, seed, seconds,
                   written: list[Path], **sampling) -> list[tuple[Path, str]]:
    """Generate and write the outputs ``todo`` ([(sample number, path)]) of each (video, todo) job, all in one
    ``generate_many`` call -> [(video, reason)] of the videos that failed. Settings errors (ConfigError,
    CheckpointError) propagate: every video would fail the same way."""
    from .video import probe

    failed, ready = [], []
    for video, todo in jobs:
        try:
            probe(video)  # a bad video is reported before any model runs
            ready.append((video, todo))
        except (ConfigError, CheckpointError):
            raise
        except Exception as exc:  # noqa: BLE001 — one bad video must not stop the batch
            failed.append((video, _reason(video, exc)))
    if not ready:
        return failed
    requests = [(video, random.randrange(MAX_SEED) if seed is None else sample_seed(seed, k), out)
                for video, todo in ready for k, out in todo]
    try:
        musics = pipe.generate_many([v for v, _, _ in requests], prompt, seeds=[s for _, s, _ in requests],
                                    seconds=seconds, progress=False, **sampling)
    except (ConfigError, CheckpointError):
        raise
    except Exception as exc:  # noqa: BLE001
        if len(ready) == 1:
            return failed + [(ready[0][0], _reason(ready[0][0], exc))]
        for job in ready:  # which video failed: each one alone
            failed += _write_outputs(pipe, [job], prompt=prompt, seed=seed, seconds=seconds, written=written,
                                     **sampling)
        return failed
    broken = set()
    for (video, _, out), music in zip(requests, musics):
        if video in broken:
            continue
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            if out.suffix.lstrip(".") in AUDIO_FORMATS:
                music.save(out)  # atomic: temp file + rename
            else:
                music.mux(video, out)  # atomic too
            written.append(out)
        except Exception as exc:  # noqa: BLE001
            broken.add(video)
            failed.append((video, _reason(video, exc)))
    return failed


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
