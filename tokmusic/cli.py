"""The ``tokmusic`` command.

    tokmusic generate VIDEO [--prompt TEXT] [-o OUT.wav|OUT.flac|OUT.mp4] [--pipeline DIR] [--seed N] [--seconds S]
    tokmusic eval --generated DIR --reference DIR [...] -o report.json

A user error prints one line ``tokmusic: error: ...`` and exits 2.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

from .errors import ConfigError, TokmusicError

AUDIO_SUFFIXES = (".wav", ".flac")
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mkv", ".mov", ".webm")  # what audio.mux writes


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, no usage dump
        raise ConfigError(f"{message} (see `{self.prog} --help`)")


def _generate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("video", help="video file (anything ffmpeg reads)")
    p.add_argument("--prompt", help="text describing the music, e.g. 'slow melancholic piano'")
    p.add_argument("-o", "--output", help="OUT.wav / OUT.flac (the music) or OUT.mp4 / .mkv / .mov / .webm "
                   "(the video with the music); default: VIDEO's name with .wav")
    p.add_argument("--pipeline", help="pipeline directory (default: the bundled default pipeline)")
    p.add_argument("--seed", type=int, help="random seed; the same seed gives the same music")
    p.add_argument("--seconds", type=float, help="only the first SECONDS of the video")
    p.add_argument("--temperature", type=float, help="sampling temperature for every stage")
    p.add_argument("--top-k", type=int, dest="top_k", help="sample from the K most likely tokens")
    p.add_argument("--top-p", type=float, dest="top_p", help="nucleus sampling mass")
    p.add_argument("--cfg-scale", type=float, dest="cfg_scale", help="classifier-free guidance scale for the prompt")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _run_generate(args: argparse.Namespace) -> int:
    from .fileio import check_output
    from .default import BUNDLE_DIR, DEFAULT_PIPELINE_NOTE, NO_BUNDLE_NOTE, generate
    from .video import probe

    video = Path(args.video)
    out = Path(args.output) if args.output else video.with_suffix(".wav")
    suffix = out.suffix.lower()
    if suffix not in AUDIO_SUFFIXES + VIDEO_SUFFIXES:
        raise ConfigError(f"{out}: unsupported output type; use one of {', '.join(AUDIO_SUFFIXES + VIDEO_SUFFIXES)}")
    if out.resolve() == video.resolve():
        raise ConfigError(f"{out}: the output would overwrite the input video; choose another -o")
    check_output(out, "output (-o)", AUDIO_SUFFIXES + VIDEO_SUFFIXES)  # now, not after minutes of generation
    sampling = {k: getattr(args, k) for k in ("temperature", "top_k", "top_p", "cfg_scale") if getattr(args, k) is not None}
    probe(video)  # a bad video is reported before anything else
    if args.pipeline is None:
        note = DEFAULT_PIPELINE_NOTE if (BUNDLE_DIR / "pipeline.json").is_file() else NO_BUNDLE_NOTE
        print(f"tokmusic: note: {note}; --pipeline DIR uses another", file=sys.stderr)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="the default pipeline's bundle is missing")
        music = generate(video, args.prompt, pipeline=args.pipeline, seed=args.seed, seconds=args.seconds,
                         progress=not args.quiet, **sampling)
    if suffix in AUDIO_SUFFIXES:
        music.save(out)
    else:
        music.mux(video, out)
    print(f"wrote {out} ({music.duration:.2f} s of music at {music.sample_rate} Hz)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tokmusic", description="Music for a video.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    gen = sub.add_parser("generate", help="write music for a video", description="Write music for a video.")
    _generate_arguments(gen)
    gen.set_defaults(run=_run_generate)
    ev = sub.add_parser("eval", help="compare generated music with references",
                        description="Compare generated music with reference music (FAD, KL, density/coverage, ...).")
    try:
        from .evaluation import command as eval_command
    except ImportError:  # the evaluation extras are optional
        eval_command = None
    if eval_command is not None:
        eval_command.add_arguments(ev)
        ev.set_defaults(run=eval_command.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``tokmusic`` command; returns the exit status."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if not hasattr(args, "run"):
            raise ConfigError(f"`tokmusic {args.command}` is not available in this installation")
        return int(args.run(args) or 0)
    except TokmusicError as exc:
        print(f"tokmusic: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tokmusic: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
