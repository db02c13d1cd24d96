"""recipes/build_demo.py's side-by-side stage runner: every command runs, at most `jobs` at once, with its share
of the cores; a failure is named with its log, the others still finish and are timed."""

from __future__ import annotations

import os
import sys

from scripts import load_script


def build_demo():
    return load_script("recipes/build_demo.py")


def test_stages_run_side_by_side_and_failures_are_named(tmp_path):
    mod = build_demo()
    marks = tmp_path / "marks"
    marks.mkdir()
    # each command writes its thread share and when it started and ended
    script = ("import os, sys, time, pathlib; t0 = time.time(); time.sleep(0.5); print('log of', sys.argv[2]); "
              "(pathlib.Path(sys.argv[1]) / sys.argv[2]).write_text(f\"{os.environ['OMP_NUM_THREADS']} {t0} {time.time()}\"); "
              "sys.exit(int(sys.argv[3]))")
    commands = {step: [sys.executable, "-c", script, str(marks), step, code]
                for step, code in (("stage1", "0"), ("stage2", "3"), ("stage3", "0"))}
    status, seconds = mod.train_stages_together(commands, tmp_path, jobs=2)
    assert sorted(seconds) == ["stage1", "stage3"] and all(s >= 0.5 for s in seconds.values())
    assert status.startswith("stage2 failed (exit 3") and str(tmp_path / "stage2.log") in status
    assert (tmp_path / "stage1.log").read_text().strip() == "log of stage1"
    runs = {p.name: p.read_text().split() for p in marks.iterdir()}
    spans = {name: (float(start), float(end)) for name, (_, start, end) in runs.items()}
    assert spans["stage1"][0] < spans["stage2"][1] and spans["stage2"][0] < spans["stage1"][1]  # side by side
    assert spans["stage3"][0] >= min(spans["stage1"][1], spans["stage2"][1])  # waited for a free slot
    share = max(1, (os.cpu_count() or 1) // 2)
    assert {threads for threads, _, _ in runs.values()} == {str(share)}
