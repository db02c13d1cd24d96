"""Does each stage of a pipeline use its video, and the order of its frames? Teacher-forced held-out loss.

    python benchmarks/video_probe.py [--pipeline tokmusic/pretrained/demo] [--data /work/demo/data] [--items 16] [--json]

For every stage that reads video, on the first ``--items`` held-out crops of a data dir made for the pipeline
(``recipes/preprocess.py``; the demo bundle's is ``/work/demo/data``): the mean loss with the true video, with
another held-out clip's video, and with the window's frames played backwards, and the share of crops each change
made worse (``tokmusic.evaluation.teacher_forced.video_probe``). A stage that reads its video loses with another
clip's; a stage that lines its music up with the video in time loses with the frames reversed too. This asks the
stage directly, before sampling and the codec blur the answer.
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
    parser.add_argument("--data", default="/work/demo/data", help="a preprocessed data dir with a valid split")
    parser.add_argument("--items", type=int, default=16, help="held-out crops per stage")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    import tokmusic
    from tokmusic.evaluation.teacher_forced import held_out, video_probe
    from tokmusic.training.shards import TokenShards, pipeline_meta

    pipe = tokmusic.Pipeline.from_pretrained(args.pipeline)
    shards = TokenShards(args.data, expected_meta=pipeline_meta(pipe))
    rows = {name: video_probe(stage, held_out(stage, shards, args.items))
            for name, stage in pipe.stages.items() if stage.cfg.visual_dim}
    if args.json:
        print(json.dumps({"pipeline": args.pipeline, "stages": rows}))
        return 0
    print(f"{'stage':9s} {'crops':>5s} {'true video':>10s} {'other clip':>16s} {'frames reversed':>20s}")
    for name, r in rows.items():
        print(f"{name:9s} {r['crops']:5d} {r['loss_true_video']:10.4f} {r['loss_other_video']:9.4f} "
              f"({r['other_video_worse']:4.0%} worse) {r['loss_frames_reversed']:9.4f} ({r['frames_reversed_worse']:4.0%} worse)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
