"""Preprocess a manifest of video–music pairs into token shards.

    accelerate launch recipes/preprocess.py MANIFEST.jsonl --pipeline DIR --out DATA_DIR

Every process takes every N-th item; re-running skips finished items (and items that failed before, unless
--retry-failed). Bad items (unreadable, no music, too short) are listed in DATA_DIR/index.json under "failed"
and skipped; if every item this run tried failed, it ends with an error (exit 2). Any other failure (a bug, out
of memory) stops the job; what was finished is kept and a re-run goes on from there.
"""

from __future__ import annotations

from pathlib import Path

import torch

from tokmusic.training.cli import RecipeParser, distributed_cpu, run
from tokmusic.training.preprocess import CONTROL_HOP


def main(argv: list[str] | None = None) -> int:
    p = RecipeParser(prog="recipes/preprocess.py", description=__doc__.split("\n")[1])
    p.add_argument("manifest", help="JSONL manifest: {\"video\": ..., \"audio\": ..., \"text\": ..., \"split\": ...}")
    p.add_argument("--pipeline", required=True, help="pipeline directory whose parts tokenize the data")
    p.add_argument("--out", required=True, help="data directory to write (created, or resumed)")
    p.add_argument("--shard-size", type=int, default=64, help="items per shard file")
    p.add_argument("--min-seconds", type=float, default=1.0, help="skip pairs shorter than this")
    p.add_argument("--feature-dtype", choices=("float16", "float32"), default="float16")
    p.add_argument("--control-hop", type=float, default=CONTROL_HOP,
                   help="seconds of music per control embedding (default %(default)s); a training crop is "
                        "conditioned on the embeddings of the chunks it overlaps")
    p.add_argument("--retry-failed", action="store_true", help="try the items that failed before again")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    if args.shard_size < 1:
        p.error(f"--shard-size must be >= 1, got {args.shard_size}")
    if not 0 < args.control_hop < float("inf"):
        p.error(f"--control-hop must be > 0 seconds, got {args.control_hop}")

    from accelerate import PartialState

    from tokmusic.errors import DataError
    from tokmusic.pipeline import Pipeline
    from tokmusic.training.manifest import read_manifest
    from tokmusic.training.preprocess import preprocess
    from tokmusic.training.shards import build_index, finished_items, open_data_dir, pipeline_meta

    state = PartialState(cpu=distributed_cpu())
    items = read_manifest(args.manifest)  # every process checks: a bad line stops all before any work
    pipeline = Pipeline.from_pretrained(args.pipeline)
    pipeline.to(state.device)
    out = Path(args.out)
    if state.is_main_process:
        open_data_dir(out, pipeline_meta(pipeline))
        if args.retry_failed:
            _drop_failures(out)
        before = finished_items(out)  # what this run leaves alone; the rest it tries
    state.wait_for_everyone()
    open_data_dir(out, pipeline_meta(pipeline))
    report = preprocess(pipeline, items, out, rank=state.process_index, world=state.num_processes,
                        shard_size=args.shard_size, min_seconds=args.min_seconds,
                        progress=state.is_main_process and not args.quiet,
                        feature_dtype=getattr(torch, args.feature_dtype),
                        control_hop=args.control_hop)
    state.wait_for_everyone()
    error = None
    if state.is_main_process:
        index = build_index(out)
        print(f"preprocess: {len(index['items'])} items ready, {len(index['failed'])} failed "
              f"(this run on process 0: {report.done} done, {report.skipped} already there)")
        for failure in index["failed"]:
            print(f"  line {failure['line']}: {failure['video']}: {failure['reason']}")
        tried = {item.key for item in items if item.finished_entry(before) is None}
        failed = [f for f in index["failed"] if f["key"] in tried]
        if tried and len(failed) == len(tried):
            first = failed[0]
            error = DataError(f"all {len(tried)} items this run tried failed (first: line {first['line']}: "
                              f"{first['video']}: {first['reason']}); every reason is under \"failed\" in "
                              f"{out / 'index.json'}. Fix them and re-run with --retry-failed")
    state.wait_for_everyone()
    if error is not None:
        raise error
    return 0


def _drop_failures(out: Path) -> None:
    """Remove the failure records (not the finished items) so failed items are tried again."""
    import json

    from tokmusic.fileio import write_json

    for sidecar in (out / "shards").glob("*.json"):
        info = json.loads(sidecar.read_text())
        if info.get("failed"):
            if info.get("items"):
                write_json(sidecar, {"items": info["items"], "failed": []})
            else:
                sidecar.unlink()


if __name__ == "__main__":
    run(main)
