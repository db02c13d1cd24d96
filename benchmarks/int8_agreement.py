"""What int8 decoder weights (``tokmusic.quantize``) change: held-out loss, token agreement and decode time.

    python benchmarks/int8_agreement.py [--pipeline tokmusic/pretrained/demo] [--data build/demo/data]
        [--items 16] [--greedy-items 8] [--repeats 3] [--random-stage 512:8] [--json]

For each stage of the pipeline (default: the bundled demo bundle), its fp32 weights and a copy quantized by
``quantize_stage``, on the held-out ("valid") items of a data dir made for that pipeline (recipes/preprocess.py;
the demo bundle's is build/demo/data), one crop per item as long as the stage's generation window (the crop the
trainer's validation loss takes):

* ``loss``: teacher-forced cross-entropy per target token (nats), fp32 vs int8;
* ``top1``: teacher-forced top-1 agreement, the share of positions where the argmax of the int8 logits equals the
  argmax of the fp32 logits (the same inputs at every position, so no drift);
* ``greedy``: the share of identical tokens when both generate one window with temperature 0 for the same
  conditioning (the stage's own cfg_scale); after the first differing token the two continue from different
  histories, so this falls with length and is a lower bound on per-step agreement (``--json`` also gives, per
  window, the first timestep where they differ);
* ``time``: one window's generation (encoder + every decode step), fp32 and int8 alternating, best of
  ``--repeats``, with the process's default thread count.

``--random-stage WIDTH:LAYERS`` adds a timing row for a random stage of that decoder width and depth (the demo
semantic stage's inputs, d_ff = 4 * WIDTH): int8 pays where the decoder's weights do not fit in the CPU's caches.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F

from tokmusic.evaluation.teacher_forced import held_out, teacher_forced

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path("build/demo/data")


def greedy(stage, cond, timesteps: int):
    return stage.generate(cond, timesteps, params=stage.cfg.sampling().update(temperature=0.0))


def window_time(stage, cond, timesteps: int) -> float:
    start = time.perf_counter()
    greedy(stage, cond, timesteps)
    return time.perf_counter() - start


def best_times(stages: dict, cond, timesteps: int, repeats: int) -> dict[str, float]:
    """Best of ``repeats`` window times per variant, the variants alternating (a busy machine hits both)."""
    for stage in stages.values():  # warm-up
        greedy(stage, cond, min(timesteps, 8))
    best = dict.fromkeys(stages, float("inf"))
    for _ in range(repeats):
        for name, stage in stages.items():
            best[name] = min(best[name], window_time(stage, cond, timesteps))
    return best


def measure(name: str, stage, shards, items: int, greedy_items: int, repeats: int) -> dict:
    from tokmusic.quantize import quantize_stage
    from tokmusic.windows import token_count

    variants = {"fp32": stage.eval(), "int8": quantize_stage(copy.deepcopy(stage)).eval()}
    crops = held_out(stage, shards, items)
    nll = dict.fromkeys(variants, 0.0)
    tokens = agree = 0
    for cond, target, valid in crops:
        out = {k: teacher_forced(s, cond, target, valid) for k, s in variants.items()}
        labels = out["fp32"][1]
        for k, (logits, _) in out.items():
            nll[k] += float(F.cross_entropy(logits, labels, reduction="sum"))
        tokens += labels.numel()
        agree += int((out["fp32"][0].argmax(-1) == out["int8"][0].argmax(-1)).sum())
    same = total = 0
    per_window, first_diff = [], []
    for cond, target, valid in crops[:greedy_items]:
        steps = int(valid.sum())
        a, b = (greedy(s, cond, steps) for s in variants.values())
        same += int((a == b).sum())
        total += a.numel()
        per_window.append(round(float((a == b).float().mean()), 4))
        differs = (a != b).any(0).nonzero()
        first_diff.append(int(differs[0]) if len(differs) else steps)  # first timestep where they part
    cond, _, valid = crops[0]
    timesteps = token_count(stage.cfg.window, stage.cfg.target_rate)
    times = best_times(variants, cond, timesteps, repeats)
    return {
        "stage": name, "d_model": stage.cfg.d_model, "decoder_layers": stage.cfg.decoder_layers,
        "items": len(crops), "tokens": tokens,
        "loss_fp32": nll["fp32"] / tokens, "loss_int8": nll["int8"] / tokens,
        "top1_agreement": agree / tokens,
        "greedy_agreement": same / max(total, 1), "greedy_windows": per_window,
        "greedy_first_difference": first_diff,
        "window_timesteps": timesteps,
        "time_fp32_s": times["fp32"], "time_int8_s": times["int8"], "speedup": times["fp32"] / times["int8"],
    }


def random_stage_row(pipe, spec: str, shards, repeats: int) -> dict:
    from tokmusic.quantize import quantize_stage
    from tokmusic.stage import Stage
    from tokmusic.windows import token_count

    width, layers = (int(x) for x in spec.split(":"))
    base = pipe.stages["semantic"]
    cfg = replace(base.cfg, d_model=width, decoder_layers=layers, d_ff=4 * width, n_heads=max(4, width // 64))
    torch.manual_seed(0)
    stage = Stage(cfg).eval()
    variants = {"fp32": stage, "int8": quantize_stage(copy.deepcopy(stage)).eval()}
    cond = held_out(stage, shards, 1)[0][0]
    timesteps = token_count(cfg.window, cfg.target_rate)
    times = best_times(variants, cond, timesteps, repeats)
    return {"stage": f"random semantic {width}x{layers}", "d_model": width, "decoder_layers": layers,
            "window_timesteps": timesteps, "time_fp32_s": times["fp32"], "time_int8_s": times["int8"],
            "speedup": times["fp32"] / times["int8"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pipeline", default=str(ROOT / "tokmusic" / "pretrained" / "demo"))
    p.add_argument("--data", default=str(DEFAULT_DATA), help="data dir made for the pipeline (held-out items)")
    p.add_argument("--items", type=int, default=16, help="held-out items for loss and top-1 agreement")
    p.add_argument("--greedy-items", type=int, default=8, help="of them, how many windows to generate greedily")
    p.add_argument("--repeats", type=int, default=3, help="timing: best of this many alternating runs")
    p.add_argument("--stages", default="semantic,coarse,fine")
    p.add_argument("--random-stage", action="append", default=[], metavar="WIDTH:LAYERS",
                   help="also time a random stage of this decoder width and depth (repeatable)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = p.parse_args(argv)

    import tokmusic
    from tokmusic.training.shards import TokenShards, pipeline_meta

    pipe = tokmusic.Pipeline.from_pretrained(args.pipeline)
    shards = TokenShards(args.data, expected_meta=pipeline_meta(pipe))
    rows = [measure(name, pipe.stages[name], shards, args.items, args.greedy_items, args.repeats)
            for name in args.stages.split(",")]
    rows += [random_stage_row(pipe, spec, shards, args.repeats) for spec in args.random_stage]
    result = {"pipeline": args.pipeline, "data": args.data, "torch": torch.__version__,
              "threads": torch.get_num_threads(), "rows": rows}
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{args.pipeline}  (torch {torch.__version__}, {torch.get_num_threads()} threads)")
    print(f"{'stage':<24}{'loss fp32':>10}{'loss int8':>10}{'top-1 agr':>10}{'greedy agr':>11}"
          f"{'steps':>7}{'fp32 s':>8}{'int8 s':>8}{'fp32/int8':>10}")
    for r in rows:
        if "loss_fp32" in r:
            quality = (f"{r['loss_fp32']:>10.4f}{r['loss_int8']:>10.4f}{r['top1_agreement']:>10.2%}"
                       f"{r['greedy_agreement']:>11.2%}")
        else:
            quality = f"{'':>41}"
        print(f"{r['stage']:<24}{quality}{r['window_timesteps']:>7}{r['time_fp32_s']:>8.3f}"
              f"{r['time_int8_s']:>8.3f}{r['speedup']:>10.2f}")
    return 0


if __name__ == "__main__":
    from tokmusic.training.cli import run

    run(main)  # a wrong path or pipeline: one line naming it, exit 2
