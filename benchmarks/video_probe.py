"""Does each stage of a pipeline use its video, and the order of its frames? Teacher-forced held-out loss.

    python benchmarks/video_probe.py [--pipeline tokmusic/pretrained/demo] [--data build/demo/data] [--items 16]
        [--cuts build/demo/corpus/truth.json] [--json]

For every stage that reads video, on the first ``--items`` held-out crops of a data dir made for the pipeline
(``recipes/preprocess.py``; ``recipes/build_demo.py --out build/demo`` writes the demo bundle's to
``build/demo/data``): the mean loss with the true video, with another held-out clip's video, and with the
window's frames played backwards, and the share of crops each change made worse
(``tokmusic.evaluation.teacher_forced.video_probe``). A stage that reads its video loses with another clip's; a
stage that lines its music up with the video in time loses with the frames reversed too. This asks the stage
directly, before sampling and the codec blur the answer.

With ``--cuts`` (a demo corpus's ``truth.json``, or any JSON object of video path -> cut times in seconds),
every held-out clip it names is also tiled into windows as generation tiles it, and the loss on the tokens within
``--radius`` seconds of a cut is reported apart from the rest, with the true frames and reversed
(``tokmusic.evaluation.teacher_forced.event_probe``). Only a stage that lines its music up with the cuts does
better near them with the true frames.
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
    parser.add_argument("--pipeline", default=str(ROOT / "tokmusic" / "pretrained" / "demo"))
    parser.add_argument("--data", default="build/demo/data", help="a preprocessed data dir with a valid split")
    parser.add_argument("--items", type=int, default=16, help="held-out crops per stage")
    parser.add_argument("--cuts", help="truth.json of a demo corpus, or {video path: [cut seconds]}")
    parser.add_argument("--radius", type=float, default=0.12, help="seconds either side of a cut (default 0.12)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    cuts = read_cuts(args.cuts) if args.cuts else None

    import tokmusic
    from tokmusic.evaluation.teacher_forced import event_probe, held_out, video_probe
    from tokmusic.training.shards import TokenShards, pipeline_meta

    pipe = tokmusic.Pipeline.from_pretrained(args.pipeline)
    shards = TokenShards(args.data, expected_meta=pipeline_meta(pipe))
    rows = {name: video_probe(stage, held_out(stage, shards, args.items))
            for name, stage in pipe.stages.items() if stage.cfg.visual_dim}
    if cuts is not None:
        for name, row in rows.items():
            row["near_cuts"] = event_probe(pipe.stages[name], shards, cuts, args.radius)
    if args.json:
        print(json.dumps({"pipeline": args.pipeline, "stages": rows}))
        return 0
    print(f"{'stage':9s} {'crops':>5s} {'true video':>10s} {'other clip':>16s} {'frames reversed':>20s}")
    for name, r in rows.items():
        print(f"{name:9s} {r['crops']:5d} {r['loss_true_video']:10.4f} {r['loss_other_video']:9.4f} "
              f"({r['other_video_worse']:4.0%} worse) {r['loss_frames_reversed']:9.4f} ({r['frames_reversed_worse']:4.0%} worse)")
    if cuts is not None:
        print(f"\nwithin {args.radius:g} s of a cut, against the other tokens (true frames / reversed):")
        for name, r in rows.items():
            c = r["near_cuts"]
            print(f"{name:9s} {c['items']} clips, {c['tokens_near']} tokens near: {c['loss_near_true']:.4f} / "
                  f"{c['loss_near_reversed']:.4f}   elsewhere: {c['loss_elsewhere_true']:.4f} / "
                  f"{c['loss_elsewhere_reversed']:.4f}")
    return 0


def read_cuts(path: str) -> dict[str, list[float]]:
    """Video path -> cut times, from a demo corpus's truth.json or a plain mapping; exits if unreadable."""
    try:
        data = json.loads(Path(path).read_text())
        if isinstance(data, dict) and isinstance(data.get("clips"), dict):
            data = {name: clip["cuts"] for name, clip in data["clips"].items()}
        if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
            raise ValueError("expected {video path: [seconds, ...]}")
        return {str(k): [float(x) for x in v] for k, v in data.items()}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SystemExit(f"{path}: cannot read cut times ({exc}); pass a demo corpus's truth.json") from None


if __name__ == "__main__":
    from tokmusic.training.cli import run

    run(main)  # a wrong path or pipeline: one line naming it, exit 2
