"""Beat tracking, tempo and key of tokmusic.evaluation against rendered chorales' ground truth.

    .venv/bin/python benchmarks/music_structure.py /tmp/chorales_b    # made by benchmarks/render_chorales.py
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from tokmusic.evaluation.events import event_f1, pooled_f1
from tokmusic.evaluation.inputs import load_clip
from tokmusic.evaluation.key import Key, key_agreement
from tokmusic.evaluation.structure import analyze_music

SAMPLE_RATE = 22050
TOLERANCE = 0.07  # seconds, for beat F1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="directory with truth.json, piano/ and organ/")
    args = parser.parse_args()
    truth = json.loads((args.root / "truth.json").read_text())
    for instrument in ("piano", "organ"):
        scores, acc1, acc2, exact, mirex, seconds, start = [], [], [], [], [], 0.0, time.time()
        for item in truth:
            result = analyze_music(load_clip(args.root / instrument / f"{item['name']}.wav", SAMPLE_RATE), SAMPLE_RATE)
            seconds += result.duration
            scores.append(event_f1(item["beats"], result.beats, TOLERANCE))
            ratio = result.tempo / item["bpm"]
            acc1.append(abs(ratio - 1) <= 0.04)
            acc2.append(any(abs(ratio / m - 1) <= 0.04 for m in (1, 2, 0.5, 3, 1 / 3)))
            reference = Key(item["key_tonic"], item["key_mode"])
            found = result.key
            exact.append(found is not None and (found.tonic, found.mode) == (reference.tonic, reference.mode))
            mirex.append(key_agreement(found, reference) if found else 0.0)
        pooled = pooled_f1(scores)
        print(f"{instrument}: {len(truth)} chorales, {seconds:.0f} s of audio in {time.time() - start:.1f} s | "
              f"beat F1 ({TOLERANCE * 1000:.0f} ms) mean {np.mean([s.f1 for s in scores]):.3f} pooled {pooled.f1:.3f} "
              f"| tempo acc1 {np.mean(acc1):.3f} acc2 {np.mean(acc2):.3f} | key exact {np.mean(exact):.3f} "
              f"MIREX {np.mean(mirex):.3f}")


if __name__ == "__main__":
    main()
