"""How long should the music chunks behind a stage's control be? Caption accuracy of one chunk, per length.

    python benchmarks/control_hop.py MANIFEST.jsonl [--pipeline tokmusic/pretrained/demo] [--hops 1 4 8]
        [--words fast moderate slow] [--items 150] [--json]

A stage that reads a control is trained on its crop's music embedded in chunks of ``--control-hop`` seconds
(``recipes/preprocess.py``), and the prompt prior sends a prompt to the mean of its captions' chunks
(``recipes/fit_control.py``): the control can only carry what one chunk tells. For each length in ``--hops``,
each caption's centroid is taken from the chunks of the manifest's first ``--items`` captioned "train" items,
and every chunk of its captioned "valid" items is given the caption of the nearest centroid
(``tokmusic.training.control_fit.chunk_accuracy``): the share given their own caption, against chance, and with
``--words``, the share that keep their caption's word (a tempo word, say: does one chunk hear the tempo?). The
centroids are the prompt prior's at that chunk length. Unreadable items are skipped and listed.
On the demo corpus (``recipes/build_demo.py --out build/demo``: ``build/demo/corpus/manifest.jsonl``, pipeline
``build/demo/pipeline``) the demo bundle's defaults are its answer.
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("manifest", help="JSONL manifest with captioned 'train' and 'valid' items")
    p.add_argument("--pipeline", help="pipeline whose control embeds the music (default: tokmusic's bundled default)")
    p.add_argument("--hops", type=float, nargs="+", default=[1.0, 4.0, 8.0], help="chunk lengths in seconds")
    p.add_argument("--words", nargs="*", default=["fast", "moderate", "slow"],
                   help="caption words scored apart (default: the demo corpus's tempo words)")
    p.add_argument("--items", type=int, default=150, help="train items the centroids are taken from")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = p.parse_args(argv)
    if any(not 0 < h < float("inf") for h in args.hops):
        p.error(f"--hops must be seconds > 0, got {args.hops}")
    if args.items < 1:
        p.error(f"--items must be >= 1, got {args.items}")

    import tokmusic
    from tokmusic.default import default_pipeline
    from tokmusic.errors import ConfigError, DataError
    from tokmusic.training.control_fit import chunk_accuracy, load_corpus
    from tokmusic.training.manifest import read_manifest

    pipe = tokmusic.Pipeline.from_pretrained(args.pipeline) if args.pipeline else default_pipeline()
    control = pipe.control
    if control is None:
        raise ConfigError(f"{args.pipeline or 'the default pipeline'} has no control to measure")
    items = read_manifest(args.manifest)
    *train, failed = load_corpus([i for i in items if i.split == "train"][: args.items], control.sample_rate)
    *test, failed_valid = load_corpus([i for i in items if i.split == "valid"], control.sample_rate)
    failed += failed_valid
    if len(set(train[1])) < 2 or not test[0]:
        raise DataError(f"{args.manifest}: needs captioned 'train' items of two captions or more, and captioned "
                        "'valid' items")
    rows, start = [], time.perf_counter()
    for hop in args.hops:
        rows.append(chunk_accuracy(control, train, test, hop, tuple(args.words)))
    result = {"manifest": str(args.manifest), "pipeline": str(args.pipeline or "default"), "train_items": len(train[0]),
              "valid_items": len(test[0]), "failed": failed, "words": args.words, "rows": rows,
              "seconds": round(time.perf_counter() - start, 1)}
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    for f in failed:
        print(f"skipped {args.manifest} line {f['line']} ({f['video']}): {f['reason']}")
    print(f"{result['train_items']} train / {result['valid_items']} valid captioned items, {rows[0]['captions']} "
          f"captions (chance {rows[0]['chance']:.0%}); words scored apart: {' '.join(args.words) or '-'}")
    print("| chunk | chunks | caption right | word right | centroid cosine |")
    print("|---|---|---|---|---|")
    for r in rows:
        word = f"{r['word']:.0%}" if "word" in r else "-"
        print(f"| {r['hop']:g} s | {r['chunks']} | {r['caption']:.0%} | {word} | {r['centroid_cosine']:.2f} |")
    return 0


if __name__ == "__main__":
    from tokmusic.training.cli import run

    run(main)  # a wrong path or pipeline: one line naming it, exit 2
