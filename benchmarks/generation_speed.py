"""Generation time for a video on this machine, two comparisons side by side in one run.

    python benchmarks/generation_speed.py --seconds 60                       # threads: 1 vs torch's default
    python benchmarks/generation_speed.py --seconds 10 --samples 4 --pipeline default   # 4 samples: alone vs together
    python benchmarks/generation_speed.py --seconds 10 --videos 4 --pipeline default    # 4 videos: alone vs together

Threads: the whole generation on one CPU thread against torch's default thread count (``torch.set_num_threads``),
alternating. Samples: N pieces for one video, ``Pipeline.generate`` once per seed against one
``Pipeline.generate_samples`` call (every decode step serves all N), with a check that both give the same music.
Videos: N different videos of the same length, ``Pipeline.generate`` once per video against one
``Pipeline.generate_many`` call, with the same check (to rounding: ``max_abs_difference``).
``--pipeline tiny`` (default) is ``tokmusic.testing.tiny_pipeline(seed=0)``; ``default`` the bundled one.
Reports seconds, the real-time factor and the ratios; ``--json`` prints them as one object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import torch  # noqa: E402

from media import make_video  # noqa: E402


def timed(fn):
    """(seconds, result) of one call of ``fn``."""
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def compare_threads(pipe, video, repeats: int) -> dict:
    default_threads = torch.get_num_threads()
    single = default = float("inf")
    try:
        for _ in range(repeats):  # alternate, so both see the same machine load
            torch.set_num_threads(1)
            single = min(single, timed(lambda: pipe.generate(video, seed=0, progress=False))[0])
            torch.set_num_threads(default_threads)
            default = min(default, timed(lambda: pipe.generate(video, seed=0, progress=False))[0])
    finally:
        torch.set_num_threads(default_threads)
    return {"one_thread_s": single, "default_threads_s": default, "ratio": default / single}


def compare_samples(pipe, video, samples: int, repeats: int) -> dict:
    seeds = list(range(samples))
    t_alone = t_together = float("inf")
    for _ in range(repeats):  # alternate, so both see the same machine load
        t, alone = timed(lambda: [pipe.generate(video, seed=s, progress=False) for s in seeds])
        t_alone = min(t_alone, t)
        t, together = timed(lambda: pipe.generate_samples(video, seeds=seeds, progress=False))
        t_together = min(t_together, t)
    same = all(torch.equal(a.waveform, b.waveform) for a, b in zip(alone, together))
    return {"samples": samples, "one_by_one_s": t_alone, "together_s": t_together, "speedup": t_alone / t_together,
            "same_music": same}


def compare_videos(pipe, videos: list, repeats: int) -> dict:
    seeds = list(range(len(videos)))
    t_alone = t_together = float("inf")
    for _ in range(repeats):  # alternate, so both see the same machine load
        t, alone = timed(lambda: [pipe.generate(v, seed=s, progress=False) for v, s in zip(videos, seeds)])
        t_alone = min(t_alone, t)
        t, together = timed(lambda: pipe.generate_many(videos, seeds=seeds, progress=False))
        t_together = min(t_together, t)
    diff = max(float((a.waveform - b.waveform).abs().max()) for a, b in zip(alone, together))
    return {"videos": len(videos), "one_by_one_s": t_alone, "together_s": t_together,
            "speedup": t_alone / t_together, "max_abs_difference": diff}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="video length")
    parser.add_argument("--repeats", type=int, default=2, help="best of N runs")
    parser.add_argument("--samples", type=int, default=0, help="compare N samples alone vs together instead")
    parser.add_argument("--videos", type=int, default=0, help="compare N videos alone vs together instead")
    parser.add_argument("--pipeline", choices=["tiny", "default"], default="tiny")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.pipeline == "tiny":
        from tokmusic.testing import tiny_pipeline

        pipe = tiny_pipeline(seed=0)
    else:
        from tokmusic.default import default_pipeline

        pipe = default_pipeline()
    with tempfile.TemporaryDirectory() as tmp:
        video = make_video(Path(tmp) / "clip.mp4", args.seconds, fps=10, size=(96, 128))
        pipe.generate(video, seed=0, progress=False, seconds=2)  # warm-up
        if args.videos > 1:  # the same length, other pictures: each one turned by another quarter
            videos = [video] + [make_video(Path(tmp) / f"clip{i}.mp4", args.seconds, fps=10, size=(96, 128),
                                           rotation=90 * (i % 4)) for i in range(1, args.videos)]
            result = compare_videos(pipe, videos, args.repeats)
        elif args.samples > 1:
            result = compare_samples(pipe, video, args.samples, args.repeats)
        else:
            result = compare_threads(pipe, video, args.repeats)
    result.update(pipeline=args.pipeline, video_s=args.seconds, cpus=os.cpu_count(), torch=torch.__version__)
    if args.json:
        print(json.dumps(result))
        return 0
    head = f"{args.pipeline} pipeline, {args.seconds:.0f} s video, {os.cpu_count()} CPUs, torch {torch.__version__}"
    if args.videos > 1:
        print(f"{head}, {args.videos} videos")
        print(f"  one by one : {result['one_by_one_s']:7.2f} s")
        print(f"  together   : {result['together_s']:7.2f} s  ({result['speedup']:.2f}x faster; largest "
              f"difference {result['max_abs_difference']:.1e})")
    elif args.samples > 1:
        print(f"{head}, {args.samples} samples")
        print(f"  one by one : {result['one_by_one_s']:7.2f} s")
        print(f"  together   : {result['together_s']:7.2f} s  ({result['speedup']:.2f}x faster; same music: "
              f"{result['same_music']})")
    else:
        print(f"{head}, {torch.get_num_threads()} threads by default")
        for key, label in (("one_thread_s", "on 1 thread       "), ("default_threads_s", "on default threads")):
            print(f"  {label} : {result[key]:7.2f} s  ({args.seconds / result[key]:5.2f}x real time)")
        print(f"  ratio default / 1 thread : {result['ratio']:7.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
