"""`tokmusic eval`: compare generated music with reference music (and its videos, and its prompts).

    tokmusic eval --generated gen/ --reference ref/ --videos videos/ --prompts prompts.jsonl \\
        -o report.json --plots plots/ [--embedder spectral|DIR] [--classifier pitch-class|DIR]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import ConfigError, DataError
from ..fileio import check_output, write_json

DESCRIPTION = (
    "Compare generated music with reference music: FAD, density/coverage and KL (each naming its embedder), "
    "text-music consistency (CLAP), tempo/key/beat structure, and alignment with video cuts and motion. "
    "Clips pair across folders by file name."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the `tokmusic eval` options to `parser`."""
    parser.add_argument("--generated", required=True, type=Path, metavar="DIR",
                        help="folder of generated music (audio files, or videos whose soundtrack is the music)")
    parser.add_argument("--reference", required=True, type=Path, metavar="DIR",
                        help="folder of reference music (e.g. the videos' original soundtracks)")
    parser.add_argument("--videos", type=Path, metavar="DIR", help="folder of the videos, for audio-visual scores")
    parser.add_argument("--prompts", type=Path, metavar="FILE",
                        help="JSON {clip: text} or JSON lines with text, for text-music consistency (needs CLAP)")
    parser.add_argument("-o", "--output", required=True, type=Path, metavar="REPORT.json", help="report to write")
    parser.add_argument("--embedder", default="spectral", metavar="NAME_OR_DIR",
                        help="audio embedder for FAD and density/coverage: 'spectral' (no weights, default) or "
                             "a transformers model directory / hub id (CLAP also gives text-music scores)")
    parser.add_argument("--classifier", default="pitch-class", metavar="NAME_OR_DIR",
                        help="class probabilities for KL: 'pitch-class' (no weights, default) or an "
                             "AutoModelForAudioClassification directory / hub id")
    parser.add_argument("--visual-embedder", default="video-stats", metavar="NAME_OR_DIR",
                        help="video embedder for the similarity-structure score: 'video-stats' (no weights, "
                             "default) or a CLIP (any transformers image model) directory / hub id")
    parser.add_argument("--plots", type=Path, metavar="DIR", help="also write PNG plots into DIR")
    parser.add_argument("--clip", metavar="NAME", help="clip for the beat/cut timeline plot (default: the first "
                                                       "generated clip with a video)")
    parser.add_argument("-k", type=int, default=5, help="neighbours for density/coverage (default 5)")
    parser.add_argument("--tolerance", type=float, default=0.1, metavar="SECONDS",
                        help="how near a beat or onset must be to a cut or motion peak to count (default 0.1)")
    parser.add_argument("--device", default=None, help="torch device for learned embedders (default: cuda if present)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Evaluate, write the JSON report (and plots); return 0. User errors raise TokmusicError subclasses."""
    from .inputs import AUDIO_SUFFIXES, VIDEO_SUFFIXES, list_media
    from .report import evaluate

    if args.k < 1:
        raise ConfigError(f"-k {args.k}: needs at least 1 neighbour")
    if args.tolerance <= 0:
        raise ConfigError(f"--tolerance {args.tolerance}: must be a positive number of seconds")
    if args.output.suffix.lower() != ".json":
        raise ConfigError(f"-o {args.output}: the report is JSON; name it *.json")
    # unwritable outputs fail now, not after the whole evaluation
    check_output(args.output, "report (-o)", (".json",))
    if args.plots is not None:
        check_output(args.plots, "plots folder (--plots)", directory=True)
    if args.clip is not None:
        suffixes = AUDIO_SUFFIXES + VIDEO_SUFFIXES
        names = set(list_media(args.generated, suffixes, "generated audio"))
        names |= set(list_media(args.reference, suffixes, "reference audio"))
        if args.clip not in names:
            raise DataError(f"--clip {args.clip!r}: no such clip; clip names are file paths without suffix "
                            f"relative to the folder, e.g. {', '.join(sorted(names)[:5])}")
    if args.plots is not None:
        from .plots import _figure

        _figure(1, 1)  # fail now, not after the whole evaluation, when matplotlib is missing
    result = evaluate(args.generated, args.reference, videos=args.videos, prompts=args.prompts,
                      embedder=args.embedder, classifier=args.classifier, visual_embedder=args.visual_embedder,
                      k=args.k, tolerance=args.tolerance, progress=not args.no_progress, device=args.device)
    if args.plots is not None:
        from .plots import write_plots

        result.report["plots"] = [str(p) for p in write_plots(result, args.plots, args.clip)]
    write_json(args.output, result.report)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point (`python -m tokmusic.evaluation.command`), same behaviour as `tokmusic eval`."""
    import sys

    from ..errors import TokmusicError

    parser = argparse.ArgumentParser(prog="tokmusic eval", description=DESCRIPTION)
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except TokmusicError as exc:
        print(f"tokmusic: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
