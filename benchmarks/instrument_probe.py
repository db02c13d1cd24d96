"""Does a pipeline's semantic stage choose the instrument its video shows? Semantic tokens only, no codec.

    python benchmarks/instrument_probe.py --corpus CORPUS --data BUILD/data
        [--pipeline tokmusic/pretrained/demo] [--clips 32] [--seeds 0 1] [--colour piano|organ] [--json]

The demo corpus grades a piano clip warm and an organ clip cool (``recipes/demo_corpus.py``). For each held-out
clip of ``--corpus`` (its truth.json says the instrument) the semantic stage generates its tokens from the video,
once per seed, as ``generate`` would before the coarse stage. Each semantic token is called piano or organ by the
instrument it mostly comes with in the training split of ``--data`` (a data dir made for the pipeline by
``recipes/preprocess.py`` from a demo corpus; the demo tokenizer's tokens nearly all belong to one instrument), and
the clip's sample by the majority of its tokens. That is the instrument the rest of the chain will play: the
known-answer benchmark's full run (``known_answer.py``) takes half an hour, this a minute.

``--colour piano`` (or organ) replaces the colour channels of every clip's features (a ``colour`` member of the
visual encoder) by their mean over the training clips graded for that instrument: a stage that reads the colour
then plays that instrument on every clip; one that reads the instrument elsewhere does not.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
INSTRUMENTS = ("piano", "organ")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", required=True, help="a demo corpus (recipes/demo_corpus.py) with held-out clips")
    parser.add_argument("--data", required=True, help="a data dir made for the pipeline from a demo corpus")
    parser.add_argument("--pipeline", default=str(ROOT / "tokmusic" / "pretrained" / "demo"))
    parser.add_argument("--clips", type=int, default=32, help="held-out clips (default %(default)s)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--colour", choices=INSTRUMENTS, help="show every clip in this instrument's colour")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    import torch

    import tokmusic
    from tokmusic.errors import DataError
    from tokmusic.evaluation.feature_probe import channel_groups
    from tokmusic.evaluation.known_answer import read_truth
    from tokmusic.evaluation.teacher_forced import by_video_path
    from tokmusic.training.shards import TokenShards, pipeline_meta
    from tokmusic.visual_encoders import extract_features

    corpus = Path(args.corpus)
    clips = read_truth(corpus / "truth.json", need=("instrument",))
    held_out = [(name, clip) for name, clip in clips.items() if clip.get("split") == "valid"][: args.clips]
    if not held_out:
        raise DataError(f"{corpus / 'truth.json'} has no held-out clips; make the corpus with --valid N")
    pipe = tokmusic.Pipeline.from_pretrained(args.pipeline)
    shards = TokenShards(args.data, expected_meta=pipeline_meta(pipe))
    trained_on = read_truth(data_truth(shards, args.data), need=("instrument",))
    # the music's instrument for the token table; the video's for the colour a clip is shown in
    played_in = by_video_path({name: clip["instrument"] for name, clip in trained_on.items()})
    shown_in = by_video_path({name: clip.get("video_instrument", clip["instrument"]) for name, clip in trained_on.items()})
    vocab = pipe.shape().semantic_vocab
    counts = torch.zeros(len(INSTRUMENTS), vocab)
    colour_sum, colour_rows = None, 0
    colour = next(((a, b) for kind, a, b in channel_groups(pipe.visual_encoder) if kind == "colour"), None)
    if args.colour and colour is None:
        raise DataError(f"{args.pipeline}'s visual encoder has no colour member; drop --colour")
    for entry in shards.entries("train"):
        item = shards.load(entry)
        played = played_in(entry["video"])
        if played in INSTRUMENTS:
            tokens = item["semantic"].long().flatten().clamp(0, vocab - 1)
            counts[INSTRUMENTS.index(played)] += torch.bincount(tokens, minlength=vocab).float()
        if args.colour and shown_in(entry["video"]) == args.colour:
            rows = item["visual"].float()[:, colour[0]:colour[1]]
            colour_sum = rows.sum(0) if colour_sum is None else colour_sum + rows.sum(0)
            colour_rows += rows.shape[0]
    if counts.sum() == 0:
        raise DataError(f"{args.data} has no training items of a demo corpus; pass the data dir made from one")
    piano_token = counts[0] > counts[1]
    shown = None if colour_sum is None else colour_sum / colour_rows
    if args.colour and shown is None:
        raise DataError(f"{args.data} has no training clip graded for {args.colour}")
    rows, right = [], 0
    for name, clip in held_out:
        video = corpus / name
        feats = extract_features(video, pipe.visual_encoder, pipe.fps, progress=False)
        features = feats.features.float()
        if shown is not None:
            features[:, colour[0]:colour[1]] = shown
        shares = [piano_share(pipe, features, feats.timestamps.float(), feats.duration, seed, piano_token)
                  for seed in args.seeds]
        truth = clip.get("video_instrument", clip["instrument"])
        right += sum((share > 0.5) == (truth == "piano") for share in shares)
        rows.append({"clip": name, "instrument": truth, "piano_share": [round(s, 3) for s in shares]})
    accuracy = right / (len(rows) * len(args.seeds))
    result = {"pipeline": args.pipeline, "corpus": args.corpus, "seeds": args.seeds, "colour": args.colour,
              "clips": len(rows), "accuracy": round(accuracy, 4),
              "chance": round(max(p := sum(r["instrument"] == "piano" for r in rows) / len(rows), 1 - p), 4),
              "per_clip": rows}
    if args.json:
        print(json.dumps(result))
        return 0
    for r in rows:
        print(f"{r['clip']:24s} {r['instrument']:6s} piano share {' '.join(f'{s:.2f}' for s in r['piano_share'])}")
    shown_as = f", every clip shown in {args.colour}'s colour" if args.colour else ""
    print(f"instrument the semantic stage chose = the video's: {accuracy:.3f} of {len(rows)} clips x "
          f"{len(args.seeds)} seeds{shown_as} (always the commoner instrument: {result['chance']:.3f})")
    return 0


def piano_share(pipe, features, times, duration: float, seed: int, piano_token) -> float:
    """The share of the semantic tokens the pipeline generates for these features that are piano tokens."""
    import torch

    from tokmusic.generation import decode_together
    from tokmusic.windows import token_count

    given = {}  # the later stages are not run: their tokens are given (empty), only the semantic stage samples
    for name in ("coarse", "fine"):
        cfg = pipe.stages[name].cfg
        given[name] = torch.zeros(cfg.target_codebooks, token_count(duration, cfg.target_rate), dtype=torch.long)
    track = dict(features=features, times=times, control=None, duration=duration)
    tokens = decode_together(pipe.stages, [track], [seed], pipe._sampling({}), False, given)[0]["semantic"]
    return piano_token[tokens.flatten()].float().mean().item()


def data_truth(shards, data) -> Path:
    """The truth.json of the corpus a data dir was made from: beside its training videos' clips/ folder."""
    from tokmusic.errors import DataError

    entries = shards.entries("train")
    if not entries:
        raise DataError(f"{data} has no training items")
    path = Path(entries[0]["video"]).parent.parent / "truth.json"
    if not path.is_file():
        raise DataError(f"{data} was not made from a demo corpus ({path} is missing)")
    return path


if __name__ == "__main__":
    from tokmusic.training.cli import run

    run(main)  # a wrong path or pipeline: one line naming it, exit 2
