"""Does each stage of a pipeline use its video, the order of its frames, and its control? Teacher-forced held-out
loss.

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

Every stage that reads a control is also asked whether it uses it
(``tokmusic.evaluation.teacher_forced.control_probe``): the loss with each crop's own control (its music's audio
embedding, as in training), another clip's, and none; when ``--cuts`` is a demo corpus's truth.json, which holds
each clip's caption, also with the caption as a prompt (``control.embed_prompt``: what a prompt saying the same
gives the stage).
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
    captions = read_captions(args.cuts) if args.cuts else {}

    import tokmusic
    from tokmusic.evaluation.teacher_forced import control_probe, event_probe, held_out, video_probe
    from tokmusic.training.shards import TokenShards, pipeline_meta

    pipe = tokmusic.Pipeline.from_pretrained(args.pipeline)
    shards = TokenShards(args.data, expected_meta=pipeline_meta(pipe))
    rows = {}
    for name, stage in pipe.stages.items():
        if not (stage.cfg.visual_dim or stage.cfg.control_dim):
            continue
        crops = held_out(stage, shards, args.items)
        rows[name] = video_probe(stage, crops) if stage.cfg.visual_dim else {"crops": len(crops)}
        if stage.cfg.control_dim and pipe.control is not None:
            texts = crop_captions(shards, len(crops), captions)
            rows[name]["control"] = control_probe(stage, crops, pipe.control.embed_prompt(texts) if texts else None)
        if cuts is not None and stage.cfg.visual_dim:
            rows[name]["near_cuts"] = event_probe(stage, shards, cuts, args.radius)
    if args.json:
        print(json.dumps({"pipeline": args.pipeline, "stages": rows}))
        return 0
    print(f"{'stage':9s} {'crops':>5s} {'true video':>10s} {'other clip':>16s} {'frames reversed':>20s}")
    for name, r in rows.items():
        if "loss_true_video" not in r:
            continue
        print(f"{name:9s} {r['crops']:5d} {r['loss_true_video']:10.4f} {r['loss_other_video']:9.4f} "
              f"({r['other_video_worse']:4.0%} worse) {r['loss_frames_reversed']:9.4f} ({r['frames_reversed_worse']:4.0%} worse)")
    if cuts is not None:
        print(f"\nwithin {args.radius:g} s of a cut, against the other tokens (true frames / reversed):")
        for name, r in rows.items():
            c = r["near_cuts"]
            print(f"{name:9s} {c['items']} clips, {c['tokens_near']} tokens near: {c['loss_near_true']:.4f} / "
                  f"{c['loss_near_reversed']:.4f}   elsewhere: {c['loss_elsewhere_true']:.4f} / "
                  f"{c['loss_elsewhere_reversed']:.4f}")
    controlled = {name: r["control"] for name, r in rows.items() if "control" in r}
    if controlled:
        print("\ncontrol: own (the crop's music, as in training) / another clip's / none / the caption as a prompt")
        for name, c in controlled.items():
            text = "-"
            if "loss_text_control" in c:
                text = f"{c['loss_text_control']:.4f} ({c['text_control_worse']:4.0%} worse)"
            print(f"{name:9s} {c['crops']:5d} {c['loss_own_control']:.4f} / {c['loss_other_control']:.4f} "
                  f"({c['other_control_worse']:4.0%} worse) / {c['loss_none_control']:.4f} "
                  f"({c['none_control_worse']:4.0%} worse) / {text}")
    return 0


def read_cuts(path: str) -> dict[str, list[float]]:
    """Video path -> cut times, from a demo corpus's truth.json or a plain mapping; DataError if unreadable."""
    from tokmusic.errors import DataError

    try:
        data = json.loads(Path(path).read_text())
        if isinstance(data, dict) and isinstance(data.get("clips"), dict):
            data = {name: clip["cuts"] for name, clip in data["clips"].items()}
        if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
            raise ValueError("expected {video path: [seconds, ...]}")
        return {str(k): [float(x) for x in v] for k, v in data.items()}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{path}: cannot read cut times ({exc}); pass a demo corpus's truth.json") from None


def read_captions(path: str) -> dict[str, str]:
    """Video path -> caption, from a demo corpus's truth.json ({} for a plain mapping of cut times)."""
    data = json.loads(Path(path).read_text())
    clips = data.get("clips") if isinstance(data, dict) else None
    if not isinstance(clips, dict):
        return {}
    return {str(name): clip["caption"] for name, clip in clips.items()
            if isinstance(clip, dict) and isinstance(clip.get("caption"), str) and clip["caption"].strip()}


def crop_captions(shards, count: int, captions: dict[str, str]) -> list[str] | None:
    """The captions of the first ``count`` held-out items (the clips ``held_out``'s crops come from), matched by
    the last components of their video paths; None unless every one has a caption."""
    from tokmusic.evaluation.teacher_forced import by_video_path

    caption_of = by_video_path(captions)
    out = [caption_of(entry["video"]) for entry in shards.entries("valid")[:count]]
    return None if None in out else out


if __name__ == "__main__":
    from tokmusic.training.cli import run

    run(main)  # a wrong path or pipeline: one line naming it, exit 2
