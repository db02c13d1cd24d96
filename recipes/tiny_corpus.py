"""Make a small synthetic corpus and a tiny random pipeline, to try the recipes end to end or measure speed.

    python recipes/tiny_corpus.py --out DIR [--items 8] [--seconds 12] [--seed 0]
    python recipes/tiny_corpus.py --out DIR --classes 2 [--segment 2] [--valid 2] [--items 24] [--seconds 8]

Writes DIR/pipeline/ (tokmusic.testing.tiny_pipeline(seed)), DIR/clips/*.mp4 and DIR/manifest.jsonl. The same
arguments give the same corpus (every clip is drawn from the seed).

Default: clips of a moving square over a changing grey background, with a soundtrack of tones whose pitch
follows the picture (one random note per second); the last item is held out ("split": "valid") when there are
more than two.

Known-answer corpus (``--classes N``, 2 <= N <= 6): each clip is cut into segments of ``--segment`` seconds;
every segment has a class k, shown as a solid background colour (``COLOURS[k]``: hue and brightness both differ,
each channel moved by up to +-JITTER per segment) under a white square that starts and moves at random, and
heard as a pure sine of ``TONES_HZ[k]`` (amplitude AMPLITUDE, phase 0 at the clip's start) for exactly that
span. So the right music for a held-out video is known: in every segment, the tone of the colour on screen;
and no held-out clip repeats a training clip. The classes of a clip's segments are a seeded permutation of a
balanced list (segment i of the list has class i mod N), so a model that ignores the video and always plays
one tone is right for 1/N of the segments. The tones are multiples of 50 Hz and the soundtrack is lossless
(ALAC, sample-exact: AAC would delay and colour it), so every 20 ms frame of the tiny codec (and 40 ms frame of
its semantic tokenizer) holds the same whole periods and each tone maps onto one nearly constant token; use a
segment length that is a multiple of 40 ms so that the tone changes on those frames' edges. The last
``--valid`` items (default: a quarter, at least one) are held out. DIR/labels.json records the classes of
every clip's segments with the tone frequencies, amplitude, colours, segment length and sample rate, for
judging what a pipeline generates (tests/token_judge.py).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from tokmusic.training.cli import RecipeParser, run
from tokmusic.training.clip_writer import write_av

SAMPLE_RATE = 16000
# Known-answer corpus: class k is background COLOURS[k] and the tone TONES_HZ[k] (multiples of 50 Hz).
COLOURS = ((20, 40, 160), (240, 220, 40), (200, 30, 30), (40, 190, 70), (150, 60, 200), (120, 120, 120))
TONES_HZ = (200.0, 300.0, 500.0, 800.0, 350.0, 1000.0)
AMPLITUDE = 0.3
JITTER = 24  # each segment's colour moves by up to this much per channel: no two clips look the same


def _square(img, i: int, size: int) -> None:
    x = (i * 3) % (size - 16)
    img[24:40, x : x + 16] = 255


def write_clip(path: Path, seconds: float, seed: int, fps: int = 8, size: int = 64,
               sample_rate: int = SAMPLE_RATE) -> None:
    """A clip of the default corpus: grey level and tone pitch follow one random note per second."""
    import numpy as np

    rng = np.random.default_rng(seed)
    notes = 220.0 * 2 ** (rng.integers(0, 12, size=int(seconds) + 1) / 12)  # one note per second

    def image(i: int):
        img = np.full((size, size, 3), int(notes[int(i / fps)]) % 256, np.uint8)
        _square(img, i, size)
        return img

    t = np.arange(int(seconds * sample_rate)) / sample_rate
    wave = 0.3 * np.sin(2 * math.pi * notes[t.astype(int)] * t).astype(np.float32)
    write_av(path, int(seconds * fps), image, wave, fps, size, sample_rate)


def segment_classes(seconds: float, segment: float, classes: int, seed: int) -> list[int]:
    """The classes of a clip's segments: a seeded permutation of [0, 1, .., N-1, 0, 1, ..] (balanced)."""
    import numpy as np

    count = max(1, math.ceil(seconds / segment - 1e-9))
    return [int(k) for k in np.random.default_rng(seed).permutation(np.arange(count) % classes)]


def write_class_clip(path: Path, labels: list[int], seconds: float, segment: float, seed: int, fps: int = 8,
                     size: int = 64, sample_rate: int = SAMPLE_RATE) -> None:
    """A clip of the known-answer corpus: segment j shows COLOURS[labels[j]] (each channel moved by up to
    +-JITTER, drawn per segment) under a white square that starts and moves at random, and sounds
    TONES_HZ[labels[j]] (a sine of amplitude AMPLITUDE, phase 0 at the clip's start)."""
    import numpy as np

    rng = np.random.default_rng([seed, 1])  # not the stream segment_classes draws the classes from
    colours = np.clip(np.asarray([COLOURS[k] for k in labels]) + rng.integers(-JITTER, JITTER + 1, (len(labels), 3)),
                      0, 255).astype(np.uint8)
    side = size // 4
    x0, y0 = rng.integers(0, size - side, 2)
    vx, vy = rng.integers(1, 4, 2) * rng.choice([-1, 1], 2)  # pixels per frame, bouncing off the edges

    def bounce(p: int) -> int:
        span = size - side
        p %= 2 * span
        return p if p <= span else 2 * span - p

    def image(i: int):
        img = np.empty((size, size, 3), np.uint8)
        img[:] = colours[min(int(i / fps / segment + 1e-9), len(labels) - 1)]
        x, y = bounce(int(x0 + vx * i)), bounce(int(y0 + vy * i))
        img[y : y + side, x : x + side] = 255
        return img

    t = np.arange(round(seconds * sample_rate)) / sample_rate
    freq = np.asarray(TONES_HZ)[np.asarray(labels)[np.minimum((t / segment + 1e-9).astype(int), len(labels) - 1)]]
    wave = (AMPLITUDE * np.sin(2 * math.pi * freq * t)).astype(np.float32)
    write_av(path, round(seconds * fps), image, wave, fps, size, sample_rate, audio_codec="alac")


def main(argv: list[str] | None = None) -> int:
    p = RecipeParser(prog="recipes/tiny_corpus.py", description=__doc__.split("\n")[1])
    p.add_argument("--out", required=True)
    p.add_argument("--items", type=int, default=8)
    p.add_argument("--seconds", type=float, default=12.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--classes", type=int, default=0,
                   help=f"known-answer corpus: N classes, 2..{len(TONES_HZ)} (colour on screen -> tone); "
                        "0: the default corpus")
    p.add_argument("--segment", type=float, default=2.0, help="known-answer corpus: seconds per class segment")
    p.add_argument("--valid", type=int, help="held-out items, the last ones (default: 1 if items > 2; with "
                                             "--classes a quarter, at least 1)")
    p.add_argument("--fps", type=int, default=8, help="video frames per second")
    args = p.parse_args(argv)
    if args.items < 1 or args.seconds < 1:
        p.error("--items and --seconds must be >= 1")
    if args.classes and not 2 <= args.classes <= len(TONES_HZ):
        p.error(f"--classes must be 0 or 2..{len(TONES_HZ)}, got {args.classes}")
    if args.classes and not 0 < args.segment <= args.seconds:
        p.error(f"--segment must be > 0 and at most --seconds, got {args.segment}")
    if args.fps < 1:
        p.error(f"--fps must be >= 1, got {args.fps}")
    valid = args.valid
    if valid is None:
        valid = max(1, args.items // 4) if args.classes else int(args.items > 2)
    if not 0 <= valid < args.items:
        p.error(f"--valid must be in 0..items-1, got {valid}")
    from tokmusic.testing import tiny_pipeline

    out = Path(args.out)
    (out / "clips").mkdir(parents=True, exist_ok=True)
    tiny_pipeline(seed=args.seed).save_pretrained(out / "pipeline")
    lines, labels = [], {}
    for i in range(args.items):
        name = f"clips/{i:04d}.mp4"
        if args.classes:
            labels[name] = segment_classes(args.seconds, args.segment, args.classes, args.seed * 1000 + i)
            write_class_clip(out / name, labels[name], args.seconds, args.segment, args.seed * 1000 + i, args.fps)
        else:
            write_clip(out / name, args.seconds, args.seed * 1000 + i, args.fps)
        lines.append({"video": name, "split": "valid" if i >= args.items - valid else "train"})
    (out / "manifest.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    if args.classes:
        (out / "labels.json").write_text(json.dumps({
            "classes": args.classes, "segment": args.segment, "seconds": args.seconds, "sample_rate": SAMPLE_RATE,
            "amplitude": AMPLITUDE,
            "tones_hz": list(TONES_HZ[: args.classes]), "colours": [list(c) for c in COLOURS[: args.classes]],
            "items": labels}) + "\n")
    print(f"wrote {args.items} clips ({valid} held out), {out / 'manifest.jsonl'} and {out / 'pipeline'}"
          + (f"; {args.classes} classes in {args.segment:g} s segments, answers in {out / 'labels.json'}"
             if args.classes else ""))
    return 0


if __name__ == "__main__":
    run(main)
