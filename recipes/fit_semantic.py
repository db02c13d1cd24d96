"""Fit the semantic tokenizer's k-means centroids on a corpus and write a pipeline that uses them.

    accelerate launch recipes/fit_semantic.py MANIFEST.jsonl --pipeline DIR --out NEW_PIPELINE_DIR --clusters 1024

Each process extracts features (hidden states of the tokenizer's SSL model) for its share of the manifest's
training items and keeps a random sample of frames; the main process fits mini-batch k-means on all of them.
If --clusters differs from the pipeline's vocabulary, the semantic and coarse stages are re-initialised at the
new size (train them next). Run this before recipes/preprocess.py: the semantic ids depend on the centroids.
"""

from __future__ import annotations

from pathlib import Path

from tokmusic.training.cli import RecipeParser, distributed_cpu, run


def main(argv: list[str] | None = None) -> int:
    p = RecipeParser(prog="recipes/fit_semantic.py", description=__doc__.split("\n")[1])
    p.add_argument("manifest", help="JSONL manifest (its 'train' items are used)")
    p.add_argument("--pipeline", required=True, help="pipeline whose semantic tokenizer is fitted")
    p.add_argument("--out", required=True, help="where to write the pipeline with the new centroids")
    p.add_argument("--clusters", type=int, default=1024, help="k, the semantic vocabulary size (V2Meow: K_s)")
    p.add_argument("--frames-per-item", type=int, default=2000, help="feature frames sampled from each item")
    p.add_argument("--iterations", type=int, default=300, help="mini-batch k-means iterations")
    p.add_argument("--batch-size", type=int, default=8192, help="frames per k-means mini-batch")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    for name in ("clusters", "frames_per_item", "iterations", "batch_size"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")

    import torch
    from accelerate import PartialState
    from accelerate.utils import gather, pad_across_processes

    from tokmusic.errors import ConfigError
    from tokmusic.pipeline import Pipeline
    from tokmusic.training.kmeans import fit_kmeans, inertia
    from tokmusic.training.manifest import read_manifest
    from tokmusic.training.semantic_fit import collect_frames, with_centroids

    state = PartialState(cpu=distributed_cpu())
    items = [i for i in read_manifest(args.manifest) if i.split == "train"]
    pipeline = Pipeline.from_pretrained(args.pipeline)
    if pipeline.semantic_tokenizer is None:
        raise ConfigError(f"{args.pipeline}: the pipeline has no semantic tokenizer to fit")
    tokenizer = pipeline.semantic_tokenizer.to(state.device)
    frames, failed = collect_frames(tokenizer, items[state.process_index :: state.num_processes],
                                    args.frames_per_item, seed=args.seed,
                                    progress=state.is_main_process and not args.quiet)
    if state.num_processes > 1:
        counts = gather(torch.tensor([frames.shape[0]], device=state.device)).cpu()
        padded = gather(pad_across_processes(frames.to(state.device), dim=0)).cpu()
        width = padded.shape[0] // state.num_processes
        frames = torch.cat([padded[i * width : i * width + int(n)] for i, n in enumerate(counts)])
    if state.is_main_process:
        for failure in failed:
            print(f"  skipped line {failure['line']}: {failure['video']}: {failure['reason']}")
        centroids = fit_kmeans(frames, args.clusters, iterations=args.iterations, batch_size=args.batch_size,
                               seed=args.seed)
        with_centroids(pipeline, centroids.cpu(), seed=args.seed).save_pretrained(Path(args.out))
        print(f"fit_semantic: {args.clusters} centroids from {frames.shape[0]} frames "
              f"(inertia {inertia(frames, centroids):.4g}); wrote {args.out}")
    state.wait_for_everyone()
    return 0


if __name__ == "__main__":
    run(main)
