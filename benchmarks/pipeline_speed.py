"""How generation time and memory grow with the video's length, on the tiny pipeline.

    python benchmarks/pipeline_speed.py                    # 10 s, 60 s and 600 s videos
    python benchmarks/pipeline_speed.py --lengths 10 60 --json

Each length runs in a fresh process (so its peak resident memory is its own): it writes a synthetic video,
generates music for all of it with ``tiny_pipeline(seed=0)`` and reports wall time, seconds of music per second
of wall time and peak RSS. The checks the summary prints: cost grows linearly (time(600 s) / time(60 s) <= 11)
and memory stays flat (peak RSS(600 s) <= 1.2 x peak RSS(60 s)).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def child(seconds: float) -> dict:
    """Generate for a ``seconds`` video in this process; wall time of ``generate`` and this process's peak RSS."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    import torch

    from media import make_video
    from tokmusic.testing import tiny_pipeline

    with tempfile.TemporaryDirectory() as tmp:
        video = make_video(Path(tmp) / "clip.mp4", seconds, fps=10, size=(96, 128))
        pipe = tiny_pipeline(seed=0)
        pipe.generate(video, seed=0, seconds=2.0, progress=False)  # warm-up
        start = time.perf_counter()
        music = pipe.generate(video, seed=0, progress=False)
        wall = time.perf_counter() - start
    return {"seconds": seconds, "music_seconds": music.duration, "wall_s": wall,
            "music_per_wall_s": music.duration / wall,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "torch_threads": torch.get_num_threads()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=float, nargs="+", default=[10.0, 60.0, 600.0], help="video seconds")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--child", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        print(json.dumps(child(args.child)))
        return 0
    rows = []
    for seconds in args.lengths:
        out = subprocess.run([sys.executable, __file__, "--child", str(seconds)], check=True, capture_output=True,
                             text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    by_length = {row["seconds"]: row for row in rows}
    summary = {"device": f"CPU, {os.cpu_count()} cores", "runs": rows}
    if 60.0 in by_length and 600.0 in by_length:
        summary["time_ratio_600_60"] = by_length[600.0]["wall_s"] / by_length[60.0]["wall_s"]
        summary["rss_ratio_600_60"] = by_length[600.0]["peak_rss_mib"] / by_length[60.0]["peak_rss_mib"]
    if args.json:
        print(json.dumps(summary))
        return 0
    print(f"tiny pipeline, {summary['device']}")
    for row in rows:
        print(f"  {row['seconds']:6.0f} s video: {row['wall_s']:7.1f} s wall, {row['music_per_wall_s']:5.2f} s of music "
              f"per second, peak RSS {row['peak_rss_mib']:.0f} MiB")
    if "time_ratio_600_60" in summary:
        print(f"  time(600 s) / time(60 s) = {summary['time_ratio_600_60']:.2f} (linear: 10; target <= 11)")
        print(f"  peak RSS(600 s) / peak RSS(60 s) = {summary['rss_ratio_600_60']:.2f} (target <= 1.2)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
