"""The ``tokmusic`` command.

    tokmusic generate VIDEO [--prompt TEXT] [-o OUT.wav|OUT.flac|OUT.mp4] [--pipeline DIR] [--seed N] [--seconds S]
        [--weights fp32|int8]
    tokmusic generate DIR|GLOB|LIST.txt -o OUT_DIR [--num-samples N] [--batch-size N] [--overwrite]
        [--format wav|mp4]  (batch; also under `accelerate launch -m tokmusic.cli generate ...`, see tokmusic.batch)
    tokmusic app [--pipeline DIR] [--host 127.0.0.1] [--port N] [--max-seconds S] [--weights fp32|int8]
    tokmusic eval --generated DIR --reference DIR [...] -o report.json

A user error prints one line ``tokmusic: error: ...`` and exits 2; a batch in which some video failed exits 1.
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
WEIGHT_MODES = ("fp32", "int8")  # tokmusic.quantize.WEIGHT_MODES (not imported here: it loads torch)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, no usage dump
        raise ConfigError(f"{message} (see `{self.prog} --help`)")


def _generate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("video", help="video file (anything ffmpeg reads); or, for many videos, a folder, a quoted glob "
                   "pattern ('clips/*.mp4') or a list file (.txt, one video path per line)")
    p.add_argument("--prompt", help="text describing the music, e.g. 'slow melancholic piano'")
    p.add_argument("-o", "--output", help="OUT.wav / OUT.flac (the music) or OUT.mp4 / .mkv / .mov / .webm "
                   "(the video with the music); default: VIDEO's name with .wav. For many videos: the output "
                   "folder (required)")
    p.add_argument("--pipeline", help="pipeline directory (default: the bundled default pipeline)")
    p.add_argument("--seed", type=int, help="random seed; the same seed gives the same music")
    p.add_argument("--seconds", type=float, help="only the first SECONDS of the video")
    p.add_argument("--temperature", type=float, help="sampling temperature for every stage")
    p.add_argument("--top-k", type=int, dest="top_k", help="sample from the K most likely tokens")
    p.add_argument("--top-p", type=float, dest="top_p", help="nucleus sampling mass")
    p.add_argument("--cfg-scale", type=float, dest="cfg_scale",
                   help="classifier-free guidance scale: the prompt, and the video in stages trained with visual_dropout")
    _weights_argument(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    batch = p.add_argument_group("many videos (a folder, glob or list file)")
    batch.add_argument("--num-samples", type=int, dest="num_samples", metavar="N",
                       help="outputs per video: NAME-1 ... NAME-N, seeds SEED ... SEED+N-1 (default 1: NAME)")
    batch.add_argument("--batch-size", type=int, dest="batch_size", metavar="N",
                       help="videos decoded together: those of the same length share each decode step, which is "
                            "faster (default 1)")
    batch.add_argument("--overwrite", action="store_true", default=None,
                       help="replace outputs that exist (default: skip them, so a re-run does only what is missing)")
    batch.add_argument("--format", choices=("wav", "flac", "mp4", "m4v", "mkv", "mov", "webm"),
                       help="what to write per video: the music (wav, flac) or the video with it (mp4, ...); "
                            "default wav")


def _weights_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", choices=WEIGHT_MODES, default="fp32",
                   help="int8: the stages' decoders and output heads with int8 weights (tokmusic/quantize.py: "
                        "faster only for decoders too large for the CPU's caches; the tokens may differ); "
                        "default %(default)s")


def _pipeline(args: argparse.Namespace):
    """What ``pipeline=`` gets: ``--pipeline`` as given (None: the default pipeline) for fp32 weights; with
    ``--weights int8``, that pipeline loaded and quantized (a copy of the default's stages: the process-wide
    default pipeline stays fp32)."""
    if args.weights == "fp32":
        return args.pipeline
    import copy

    from .default import resolve_pipeline

    pipe = resolve_pipeline(args.pipeline, warn_missing=False)
    if args.pipeline is None:
        pipe = copy.copy(pipe)
        pipe.stages = {name: copy.deepcopy(stage) for name, stage in pipe.stages.items()}
    return pipe.quantize(args.weights)


def _sampling(args: argparse.Namespace) -> dict:
    """The sampling options given on the command line."""
    return {k: getattr(args, k) for k in ("temperature", "top_k", "top_p", "cfg_scale") if getattr(args, k) is not None}


def _note_default_pipeline(args: argparse.Namespace) -> None:
    """Without --pipeline: one line on stderr saying what the default pipeline is (or that its bundle is missing)."""
    if args.pipeline is None:
        from .default import BUNDLE_DIR, DEFAULT_PIPELINE_NOTE, NO_BUNDLE_NOTE

        note = DEFAULT_PIPELINE_NOTE if (BUNDLE_DIR / "pipeline.json").is_file() else NO_BUNDLE_NOTE
        print(f"tokmusic: note: {note}; --pipeline DIR uses another", file=sys.stderr)


def _run_generate(args: argparse.Namespace) -> int:
    from .batch import is_batch_source

    if is_batch_source(args.video):
        return _run_batch(args)
    batch_only = [flag for flag, value in (("--num-samples", args.num_samples), ("--batch-size", args.batch_size),
                                          ("--overwrite", args.overwrite), ("--format", args.format))
                  if value is not None]
    if batch_only:
        raise ConfigError(f"{' and '.join(batch_only)} {'is' if len(batch_only) == 1 else 'are'} for many videos "
                          f"(a folder, glob or list file); for the one video {args.video}, name the output with "
                          "-o OUT.wav or -o OUT.mp4")
    from .fileio import check_output
    from .default import generate
    from .video import probe

    video = Path(args.video)
    out = Path(args.output) if args.output else video.with_suffix(".wav")
    suffix = out.suffix.lower()
    if suffix not in AUDIO_SUFFIXES + VIDEO_SUFFIXES:
        raise ConfigError(f"{out}: unsupported output type; use one of {', '.join(AUDIO_SUFFIXES + VIDEO_SUFFIXES)}")
    if out.resolve() == video.resolve():
        raise ConfigError(f"{out}: the output would overwrite the input video; choose another -o")
    check_output(out, "output (-o)", AUDIO_SUFFIXES + VIDEO_SUFFIXES)  # now, not after minutes of generation
    sampling = _sampling(args)
    probe(video)  # a bad video is reported before anything else
    _note_default_pipeline(args)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="the default pipeline's bundle is missing")
        music = generate(video, args.prompt, pipeline=_pipeline(args), seed=args.seed, seconds=args.seconds,
                         progress=not args.quiet, **sampling)
    if suffix in AUDIO_SUFFIXES:
        music.save(out)
    else:
        music.mux(video, out)
    print(f"wrote {out} ({music.duration:.2f} s of music at {music.sample_rate} Hz)")
    return 0


def _run_batch(args: argparse.Namespace) -> int:
    """``tokmusic generate DIR|GLOB|LIST.txt -o OUT_DIR``: see tokmusic.batch. Exit 1 if any video failed."""
    from .batch import generate_batch

    if not args.output:
        raise ConfigError(f"{args.video}: many videos need an output folder; add -o OUT_DIR")
    sampling = _sampling(args)
    if os.environ.get("RANK", "0") in ("", "0"):  # the main process only
        _note_default_pipeline(args)
    summary = generate_batch(args.video, args.output, args.prompt, pipeline=_pipeline(args), seed=args.seed,
                             seconds=args.seconds, num_samples=1 if args.num_samples is None else args.num_samples,
                             overwrite=bool(args.overwrite), format=args.format or "wav", progress=not args.quiet,
                             videos_together=1 if args.batch_size is None else args.batch_size, **sampling)
    _leave_process_group()
    if not summary.is_main:
        return 0  # process 0 of the group reports the batch: its summary and exit status cover every process
    print(summary.line(), flush=True)
    return 0 if summary.ok else 1


def _leave_process_group() -> None:
    """Tear down the process group the batch gathered its counts over, all processes together, so that none exits
    while another still holds a connection to it (gloo then aborts the late one at exit)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def _run_app(args: argparse.Namespace) -> int:
    """``tokmusic app``: the local web page (tokmusic.app); needs the ``app`` extra (gradio)."""
    from .app import require_gradio, serve

    require_gradio()  # before the pipeline loads: one line saying what to install
    if args.max_seconds is not None and not 0 < args.max_seconds < float("inf"):
        raise ConfigError(f"--max-seconds must be a number of seconds > 0, got {args.max_seconds:g}")
    _note_default_pipeline(args)
    kwargs = {} if args.max_seconds is None else {"max_seconds": args.max_seconds}
    return serve(_pipeline(args), host=args.host, port=args.port, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tokmusic", description="Music for a video.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    gen = sub.add_parser("generate", help="write music for a video", description="Write music for a video.")
    _generate_arguments(gen)
    gen.set_defaults(run=_run_generate)
    app = sub.add_parser("app", help="a local web page: upload a video, get it back with music",
                         description="A local web page: upload a video, get it back with music (needs "
                                     "pip install \"tokmusic[app]\").")
    app.add_argument("--pipeline", help="pipeline directory (default: the bundled default pipeline)")
    app.add_argument("--host", default="127.0.0.1",
                     help="address to listen on (default %(default)s: this computer only; 0.0.0.0: every network)")
    app.add_argument("--port", type=int, help="port (default: 7860, or the next free one)")
    app.add_argument("--max-seconds", type=float, dest="max_seconds",
                     help="longest stretch of video (the whole video, or Seconds on the page) it scores "
                          "(default 120)")
    _weights_argument(app)
    app.set_defaults(run=_run_app)
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
