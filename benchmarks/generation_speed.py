"""Generation time of the tiny pipeline for a video, on this machine.

    python benchmarks/generation_speed.py --seconds 60

Compares, in one run, incremental decoding on one CPU thread (tokmusic's choice for small models) with
torch's default thread count, and reports seconds, the real-time factor and their ratio.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import torch  # noqa: E402

import tokmusic.stage  # noqa: E402
from media import make_video  # noqa: E402
from tokmusic.testing import tiny_pipeline  # noqa: E402


def timed(pipe, video, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        pipe.generate(video, seed=0, progress=False)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="video length")
    parser.add_argument("--repeats", type=int, default=2, help="best of N runs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        video = make_video(Path(tmp) / "clip.mp4", args.seconds, fps=10, size=(96, 128))
        pipe = tiny_pipeline(seed=0)
        pipe.generate(video, seed=0, progress=False, seconds=2)  # warm-up
        single = timed(pipe, video, args.repeats)
        threshold = tokmusic.stage.SINGLE_THREAD_DECODE_BELOW
        tokmusic.stage.SINGLE_THREAD_DECODE_BELOW = 0  # decode with torch's default threads
        try:
            default = timed(pipe, video, args.repeats)
        finally:
            tokmusic.stage.SINGLE_THREAD_DECODE_BELOW = threshold
    print(f"tiny pipeline, {args.seconds:.0f} s video, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads by default")
    print(f"  decode on 1 thread        : {single:7.2f} s  ({args.seconds / single:5.2f}x real time)")
    print(f"  decode on default threads : {default:7.2f} s  ({args.seconds / default:5.2f}x real time)")
    print(f"  ratio default / 1 thread  : {default / single:7.2f}")


if __name__ == "__main__":
    main()
