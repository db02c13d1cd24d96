"""Train an EnCodec-architecture codec from scratch on a corpus's music and write a pipeline that uses it.

    python recipes/fit_codec.py MANIFEST.jsonl --pipeline DIR --out NEW_PIPELINE_DIR --steps 3000

The manifest's "train" items' music (the "audio" file, else the video's soundtrack) is decoded once, mono at the
codec's sample rate, and kept in memory; each step trains on random crops of it (see
tokmusic/training/codec_fit.py for the losses). The codec is `--config FILE` (a JSON object of
tokmusic.training.codec_build.new_codec arguments, e.g. {"codebook_size": 512}) over the defaults: 16 kHz mono,
50 frames/s, 4 codebooks of 256 (2 coarse). If its codebook size, counts or frame rate differ from the input
pipeline's codec, the coarse and fine stages are re-initialised at the new size (train them next, after
recipes/preprocess.py: the codes depend on the codec).

Checkpoints go to --run (default: NEW_PIPELINE_DIR + ".codec-run") every --save-every steps; re-running the
same command resumes (bit for bit); a larger --steps continues a finished run. At the end the mel distance and
SI-SNR of the codec's reconstructions of the "valid" items are printed, before and after training.
One process: the model is small, and a CPU is best used by one process with its threads.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from tokmusic.training.cli import RecipeParser, run


def main(argv: list[str] | None = None) -> int:
    p = RecipeParser(prog="recipes/fit_codec.py", description=__doc__.split("\n")[1])
    p.add_argument("manifest", help="JSONL manifest ('train' items train, 'valid' items are measured)")
    p.add_argument("--pipeline", required=True, help="pipeline whose codec is replaced")
    p.add_argument("--out", required=True, help="where to write the pipeline with the trained codec")
    p.add_argument("--run", help="checkpoint directory (default: OUT.codec-run)")
    p.add_argument("--config", help="JSON file: codec architecture (new_codec arguments) over the defaults")
    p.add_argument("--steps", type=int, default=3000, help="optimisation steps in all (a resumed run continues)")
    p.add_argument("--batch-size", type=int, default=8, help="crops per step")
    p.add_argument("--crop-seconds", type=float, default=1.0, help="length of each crop")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save-every", type=int, default=500, help="steps between checkpoints")
    p.add_argument("--device", default="cpu", help="where the codec trains, e.g. cuda")
    p.add_argument("--eval-seconds", type=float, default=30.0, help="seconds of each valid item measured")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    for name in ("steps", "batch_size", "save_every"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if not args.crop_seconds > 0 or not args.lr > 0 or not args.eval_seconds > 0:
        p.error("--crop-seconds, --lr and --eval-seconds must be > 0")
    if args.seed < 0:
        p.error(f"--seed must be >= 0, got {args.seed}")

    from tokmusic.errors import ConfigError
    from tokmusic.fileio import check_output, check_replaceable
    from tokmusic.pipeline import Pipeline
    from tokmusic.training.codec_build import new_codec, with_codec
    from tokmusic.training.codec_fit import CodecTrainer, TrainSettings, evaluate_codec, load_waves
    from tokmusic.training.checkpoints import checkpoint_dirs
    from tokmusic.training.manifest import read_manifest

    architecture = {}
    if args.config:
        path = Path(args.config)
        try:
            architecture = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{path}: not a readable JSON file ({exc}); pass a codec architecture such as "
                              '{"codebook_size": 256, "n_q": 4}') from None
        if not isinstance(architecture, dict):
            raise ConfigError(f"{path}: must hold a JSON object of codec settings")
    out = check_output(args.out, "pipeline directory", directory=True)
    check_replaceable(out, "pipeline.json", "pipeline directory")
    run_dir = Path(args.run) if args.run else out.with_name(out.name + ".codec-run")

    items = read_manifest(args.manifest)
    train = [i for i in items if i.split == "train"]
    valid = [i for i in items if i.split == "valid"]
    pipeline = Pipeline.from_pretrained(args.pipeline)
    codec = new_codec(seed=args.seed, **architecture)
    try:
        codec.to(args.device)
    except (RuntimeError, ValueError) as exc:
        raise ConfigError(f"--device {args.device}: not usable here ({exc})") from None
    say = (lambda *a: None) if args.quiet else print
    waves, failed = load_waves(train, codec.sample_rate, progress=not args.quiet)
    valid_waves, valid_failed = load_waves(valid, codec.sample_rate)
    for failure in failed + valid_failed:
        print(f"  skipped line {failure['line']}: {failure['video']}: {failure['reason']}")
    seconds = sum(w.numel() for w in waves) / codec.sample_rate
    say(f"fit_codec: {len(waves)} train items ({seconds / 60:.1f} min), {len(valid_waves)} valid items; "
        f"checkpoints in {run_dir}")

    settings = TrainSettings(steps=args.steps, batch_size=args.batch_size, crop_seconds=args.crop_seconds,
                             lr=args.lr, seed=args.seed, save_every=args.save_every)
    trainer = CodecTrainer(codec, waves, settings)
    if not checkpoint_dirs(run_dir):
        trainer.init_codebooks()  # the untrained codec, measured with its k-means codebooks
        trainer.state["before"] = evaluate_codec(codec, valid_waves, args.eval_seconds)
    started = time.perf_counter()
    trainer.run(run_dir, progress=not args.quiet)
    rate = (trainer.step - trainer.first_step) / max(time.perf_counter() - started, 1e-9)
    after = evaluate_codec(codec, valid_waves, args.eval_seconds)
    with_codec(pipeline, codec.to("cpu"), seed=args.seed).save_pretrained(out)
    before = trainer.state.get("before")
    if valid_waves:
        for name, key in (("mel distance", "mel_distance"), ("SI-SNR dB", "si_snr"),
                          ("chroma agreement", "chroma_agreement"),
                          ("coarse-only mel distance", "coarse_mel_distance"),
                          ("coarse-only SI-SNR dB", "coarse_si_snr")):
            was = f"{before[key]:.3f} -> " if before and key in before else ""
            print(f"  valid {name}: {was}{after[key]:.3f}")
    else:
        print("  no 'valid' items in the manifest: nothing held out to measure")
    print(f"fit_codec: {trainer.step} steps ({rate:.2f} steps/s in this run); wrote {out}")
    return 0


if __name__ == "__main__":
    run(main)
