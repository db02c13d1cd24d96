"""Which of a pipeline's visual channels show a clip's property on held-out photographs? A linear probe per group.

    python benchmarks/feature_probe.py --data BUILD/data --truth BUILD/corpus/truth.json
        [--pipeline tokmusic/pretrained/demo] [--field instrument] [--every 4] [--json]

On a data dir made for the pipeline (``recipes/preprocess.py``) from a demo corpus (``recipes/demo_corpus.py``,
whose ``truth.json`` says each clip's ``--field``; an unpaired clip's ``video_<field>``, what its video shows,
is used where it has one): a logistic probe per frame is fitted on the training clips' visual features and scored
on the held-out clips', whose photographs no training clip uses — once for each member of the visual encoder
(EfficientNet-Lite0, motion, colour, ...) and once for all channels together
(``tokmusic.evaluation.feature_probe``). A stage can only learn a correspondence its features show for pictures
it has not seen: the demo corpus grades a piano clip warm and an organ clip cool, and a network trained to name
what is in a picture sees that grade only entangled with the picture. ``--every N`` keeps every Nth frame.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="a preprocessed data dir with train and valid splits")
    parser.add_argument("--truth", required=True, help="the demo corpus's truth.json")
    parser.add_argument("--pipeline", default=str(ROOT / "tokmusic" / "pretrained" / "demo"))
    parser.add_argument("--field", default="instrument", help="a two-valued field of truth.json (default %(default)s)")
    parser.add_argument("--every", type=int, default=4, help="keep every Nth frame (default %(default)s)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.every < 1:
        parser.error(f"--every must be >= 1, got {args.every}")

    import torch

    import tokmusic
    from tokmusic.errors import DataError
    from tokmusic.evaluation.feature_probe import channel_groups, linear_probe
    from tokmusic.evaluation.teacher_forced import by_video_path
    from tokmusic.training.shards import TokenShards, pipeline_meta

    table, values = read_labels(args.truth, args.field)
    label_of = by_video_path(table)
    pipe = tokmusic.Pipeline.from_pretrained(args.pipeline)
    shards = TokenShards(args.data, expected_meta=pipeline_meta(pipe))
    frames, labels = {}, {}
    for split in ("train", "valid"):
        xs, ys = [], []
        for entry in shards.entries(split):
            label = label_of(entry["video"])
            if label is None:
                raise DataError(f"{args.truth} says nothing of {entry['video']}; pass the truth.json of the corpus "
                                f"{args.data} was made from")
            visual = shards.load(entry)["visual"].float()[:: args.every]
            xs.append(visual)
            ys.append(torch.full((visual.shape[0],), label))
        if not xs:
            raise DataError(f"{args.data} has no {split} items; preprocess a manifest with a valid split")
        frames[split], labels[split] = torch.cat(xs), torch.cat(ys)
    groups = channel_groups(pipe.visual_encoder)
    if len(groups) > 1:
        groups.append(("all channels", 0, groups[-1][2]))
    rows = {}
    for name, first, last in groups:
        try:
            probe = linear_probe(frames["train"][:, first:last], labels["train"], frames["valid"][:, first:last],
                                 labels["valid"])
        except DataError as exc:  # name the files it came from
            raise DataError(f"{args.data} labelled by {args.truth}: {exc}") from None
        rows[name] = {"channels": [first, last], **probe}
    if args.json:
        print(json.dumps({"pipeline": args.pipeline, "data": args.data, "field": args.field, "values": values,
                          "groups": rows}))
        return 0
    print(f"telling {values[0]} from {values[1]} ({args.field}) frame by frame, held-out photographs "
          f"(chance {rows[groups[0][0]]['chance']:.2f}):")
    print(f"{'channels':22s} {'train':>6s} {'held out':>9s}")
    for name, r in rows.items():
        print(f"{name + ' ' + str(r['channels']):22s} {r['train_accuracy']:6.3f} {r['held_out_accuracy']:9.3f}")
    return 0


def read_labels(path: str, field: str) -> tuple[dict[str, float], list[str]]:
    """({clip path: 0 or 1}, the field's two values, sorted) from a demo corpus's truth.json: each clip's
    ``video_<field>`` where it has one, else ``<field>``, as its value's place among the two. DataError unless the
    field takes exactly two values."""
    from tokmusic.errors import DataError
    from tokmusic.evaluation.known_answer import read_truth

    clips = read_truth(path)
    missing = [name for name, clip in clips.items() if field not in clip and f"video_{field}" not in clip]
    if missing:
        raise DataError(f"{path}: clip {missing[0]} has no {field!r}; pass a demo corpus's truth.json and one of its "
                        "fields, e.g. --field instrument")
    raw = {name: clip.get(f"video_{field}", clip.get(field)) for name, clip in clips.items()}
    values = sorted(set(map(str, raw.values())))
    if len(values) != 2:
        raise DataError(f"{path}: {field!r} takes {len(values)} values ({', '.join(values[:5])}); the probe tells "
                        "two apart, e.g. --field instrument")
    return {name: float(values.index(str(value))) for name, value in raw.items()}, values


if __name__ == "__main__":
    from tokmusic.training.cli import run

    run(main)  # a wrong path or pipeline: one line naming it, exit 2
