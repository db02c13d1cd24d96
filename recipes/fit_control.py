"""Train the sentence_audio control (frozen MiniLM text, trained audio tower) on captions and write a pipeline.

    python recipes/fit_control.py MANIFEST.jsonl --pipeline DIR --out NEW_PIPELINE_DIR --steps 1000

The manifest's training items with a "text" caption are used (their music: "audio", or the video's own sound),
decoded once into memory. The audio tower learns, by symmetric InfoNCE, to embed random crops of each item's
music near the MiniLM embedding of its caption. If the pipeline's control is not a sentence_audio one, a fresh
one replaces it (stages reading a control of another width are re-initialised: train them next). Prints the
retrieval figures of the "valid" captioned items before and after. Run before recipes/preprocess.py: the
training data holds the control's audio embeddings.

Then it fits the control's prompt prior (tokmusic/sentence_control.py: a prompt is mapped to the mean audio
embedding of the training captions it matches, the space the stages were trained in; ``--no-prior`` skips it),
embedding the music in chunks of ``--control-hop`` seconds, as preprocess.py embeds each training crop's.
``--steps 0`` keeps a trained audio tower as it is and fits only the prior: the stages need no retraining, as
the audio embeddings they were trained on do not change.
"""

from __future__ import annotations

from pathlib import Path

from tokmusic.sentence_control import PRIOR_TEMPERATURE
from tokmusic.training.cli import RecipeParser, run
from tokmusic.training.preprocess import CONTROL_HOP


def main(argv: list[str] | None = None) -> int:
    p = RecipeParser(prog="recipes/fit_control.py", description=__doc__.split("\n")[1])
    p.add_argument("manifest", help="JSONL manifest (its captioned 'train' items train, 'valid' items evaluate)")
    p.add_argument("--pipeline", required=True, help="pipeline whose control is trained (or replaced)")
    p.add_argument("--out", required=True, help="where to write the pipeline with the trained control")
    p.add_argument("--steps", type=int, default=1000, help="optimisation steps (0: keep the tower, fit the prior)")
    p.add_argument("--prior-temperature", type=float, default=PRIOR_TEMPERATURE,
                   help="softmax temperature of the prompt prior over caption similarities (default %(default)s)")
    p.add_argument("--control-hop", type=float, default=CONTROL_HOP,
                   help="seconds of music per embedding the prior averages: the --control-hop the data is "
                        f"preprocessed with (default {CONTROL_HOP:g}, as there)")
    p.add_argument("--no-prior", action="store_true", help="no prompt prior: prompts reach the stages as text")
    p.add_argument("--crop-seconds", type=float, default=10.0, help="longest crop of music per example")
    p.add_argument("--min-crop-seconds", type=float, default=1.0, help="shortest crop (lengths vary per step)")
    p.add_argument("--batch-size", type=int, default=32, help="crops per step (one per item)")
    p.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate")
    p.add_argument("--sample-rate", type=int, default=16_000, help="audio rate of a fresh control's tower")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    if args.steps < 0:
        p.error(f"--steps must be >= 0, got {args.steps}")
    if args.steps == 0 and args.no_prior:
        p.error("--steps 0 with --no-prior would change nothing")
    for name in ("batch_size", "sample_rate"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    for name in ("crop_seconds", "min_crop_seconds", "lr", "prior_temperature"):
        if not getattr(args, name) > 0:
            p.error(f"--{name.replace('_', '-')} must be > 0, got {getattr(args, name)}")
    if not 0 < args.control_hop < float("inf"):
        p.error(f"--control-hop must be > 0 seconds, got {args.control_hop}")
    if args.min_crop_seconds > args.crop_seconds:
        p.error(f"--min-crop-seconds {args.min_crop_seconds} is longer than --crop-seconds {args.crop_seconds}")

    import torch

    from tokmusic.errors import ConfigError, DataError
    from tokmusic.fileio import check_output, check_replaceable
    from tokmusic.pipeline import Pipeline
    from tokmusic.sentence_control import SentenceAudioControl, sentence_audio_control
    from tokmusic.training.control_fit import (fit_audio_tower, fit_prompt_prior, load_corpus, retrieval,
                                               with_control)
    from tokmusic.training.manifest import read_manifest

    out = check_output(args.out, "pipeline directory", directory=True)
    check_replaceable(out, "pipeline.json", "pipeline directory")
    items = read_manifest(args.manifest)
    pipeline = Pipeline.from_pretrained(args.pipeline)
    control = pipeline.control
    if not isinstance(control, SentenceAudioControl) and args.steps == 0:
        raise ConfigError(f"{args.pipeline}: --steps 0 keeps the pipeline's sentence_audio control, but it has "
                          f"{'no control' if control is None else 'another kind'}; train one (--steps N)")
    if not isinstance(control, SentenceAudioControl):
        kind = "no control" if control is None else f"a {control.to_config()['type']!r} control"
        print(f"fit_control: {args.pipeline} has {kind}; starting a fresh sentence_audio control at "
              f"{args.sample_rate} Hz")
        control = sentence_audio_control(args.sample_rate, seed=args.seed)
    control.to("cuda" if torch.cuda.is_available() else "cpu")
    progress = not args.quiet
    train, train_captions, failed = load_corpus([i for i in items if i.split == "train"], control.sample_rate,
                                                progress=progress)
    valid, valid_captions, failed_valid = load_corpus([i for i in items if i.split == "valid"],
                                                      control.sample_rate, progress=progress)
    for failure in failed + failed_valid:
        print(f"  skipped line {failure['line']}: {failure['video']}: {failure['reason']}")
    if not train:
        raise DataError(f"{args.manifest}: no 'train' item with a \"text\" caption and readable audio; the control "
                        "learns from captions")
    seconds = sum(w.shape[0] for w in train) / control.sample_rate
    print(f"fit_control: {len(train)} captioned train items ({seconds / 60:.1f} min of music, "
          f"{len(set(train_captions))} distinct captions), {len(valid)} valid items")
    before = retrieval(control, valid, valid_captions) if valid and args.steps else None
    if args.steps:
        losses = fit_audio_tower(control, train, train_captions, steps=args.steps, batch_size=args.batch_size,
                                 crop_seconds=args.crop_seconds, min_crop_seconds=args.min_crop_seconds, lr=args.lr,
                                 seed=args.seed, progress=progress)
        tail = losses[-max(1, len(losses) // 20):]
        print(f"fit_control: loss {losses[0]:.3f} -> {sum(tail) / len(tail):.3f} (mean of the last {len(tail)} "
              "steps)")
    else:
        print("fit_control: --steps 0: the audio tower is kept as it is")
    control.prior = None
    if not args.no_prior:
        control.prior = fit_prompt_prior(control, train, train_captions, temperature=args.prior_temperature,
                                         hop=args.control_hop, progress=progress)
        print(f"fit_control: prompt prior over {len(control.prior.captions)} distinct captions "
              f"(temperature {args.prior_temperature:g}, {args.control_hop:g} s chunks)")
    if before is not None:
        after = retrieval(control, valid, valid_captions)
        for name, result in (("before", before), ("after", after)):
            print(f"  valid {name}: audio->text top-1 {result['audio_to_text']:.1%}, text->audio top-1 "
                  f"{result['text_to_audio']:.1%} (chance {result['chance']:.1%}, {result['captions']} captions, "
                  f"{result['items']} items); cosine right {result['right_cosine']:.3f} vs wrong "
                  f"{result['wrong_cosine']:.3f}")
    elif not valid:
        print("  no captioned 'valid' items: no held-out retrieval figure")
    with_control(pipeline, control.to("cpu"), seed=args.seed).save_pretrained(Path(out))
    print(f"fit_control: wrote {out}")
    return 0


if __name__ == "__main__":
    run(main)
