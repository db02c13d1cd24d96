"""Make a small synthetic corpus and a tiny random pipeline, to try the recipes end to end or measure speed.

    python recipes/tiny_corpus.py --out DIR [--items 8] [--seconds 12]

Writes DIR/pipeline/ (tokmusic.testing.tiny_pipeline), DIR/clips/*.mp4 (a moving square over a changing
background, with a soundtrack of tones whose pitch follows the picture) and DIR/manifest.jsonl.
"""

from __future__ import annotations

import json
import math
from fractions import Fraction
from pathlib import Path

from tokmusic.training.cli import RecipeParser, run


def write_clip(path: Path, seconds: float, seed: int, fps: int = 8, size: int = 64, sample_rate: int = 16000) -> None:
    import av
    import numpy as np

    rng = np.random.default_rng(seed)
    notes = 220.0 * 2 ** (rng.integers(0, 12, size=int(seconds) + 1) / 12)  # one note per second
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=fps)
        video.width = video.height = size
        video.pix_fmt = "yuv420p"
        video.options = {"preset": "ultrafast"}
        audio = container.add_stream("aac", rate=sample_rate)
        audio.layout = "mono"
        for i in range(int(seconds * fps)):
            second = int(i / fps)
            img = np.full((size, size, 3), int(notes[second]) % 256, np.uint8)
            x = (i * 3) % (size - 16)
            img[24:40, x : x + 16] = 255
            for packet in video.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in video.encode(None):
            container.mux(packet)
        t = np.arange(int(seconds * sample_rate)) / sample_rate
        wave = 0.3 * np.sin(2 * math.pi * notes[t.astype(int)] * t).astype(np.float32)
        frame = av.AudioFrame.from_ndarray(wave[None], format="fltp", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = sample_rate, 0, Fraction(1, sample_rate)
        resampler = av.AudioResampler(format=audio.codec_context.format, layout="mono", rate=sample_rate,
                                      frame_size=audio.codec_context.frame_size or 1024)
        for out in resampler.resample(frame) + resampler.resample(None):
            out.pts = None
            for packet in audio.encode(out):
                container.mux(packet)
        for packet in audio.encode(None):
            container.mux(packet)


def main(argv: list[str] | None = None) -> int:
    p = RecipeParser(prog="recipes/tiny_corpus.py", description=__doc__.split("\n")[1])
    p.add_argument("--out", required=True)
    p.add_argument("--items", type=int, default=8)
    p.add_argument("--seconds", type=float, default=12.0)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.items < 1 or args.seconds < 1:
        p.error("--items and --seconds must be >= 1")
    from tokmusic.testing import tiny_pipeline

    out = Path(args.out)
    (out / "clips").mkdir(parents=True, exist_ok=True)
    tiny_pipeline(seed=args.seed).save_pretrained(out / "pipeline")
    lines = []
    for i in range(args.items):
        write_clip(out / "clips" / f"{i:04d}.mp4", args.seconds, args.seed * 1000 + i)
        lines.append({"video": f"clips/{i:04d}.mp4", "split": "valid" if i == args.items - 1 and args.items > 2 else "train"})
    (out / "manifest.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    print(f"wrote {args.items} clips, {out / 'manifest.jsonl'} and {out / 'pipeline'}")
    return 0


if __name__ == "__main__":
    run(main)
