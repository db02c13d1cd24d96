"""Fitting the semantic tokenizer: sample frames of its feature model over a corpus, k-means them, and put the
centroids into a pipeline (resizing the stages that read or write semantic ids)."""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from ..stage import Stage, StageConfig
from .manifest import ManifestItem


def collect_frames(tokenizer, items: list[ManifestItem], frames_per_item: int, *, seed: int = 0,
                   progress: bool = False) -> tuple[torch.Tensor, list[dict]]:
    """Up to ``frames_per_item`` random feature frames of each item's music -> (``[N, D]``, failures).

    A file that cannot be read is listed in failures ({"line", "video", "reason"}) and skipped.
    """
    from ..audio import load_audio

    frames, failed = [], []
    for item in tqdm(items, desc="features", unit="item", disable=not progress):
        try:
            wave = load_audio(item.music_path, tokenizer.sample_rate, 1)
            feats = tokenizer.features(wave, tokenizer.sample_rate).cpu()
        except Exception as exc:  # one bad file must not stop the fit
            failed.append({"line": item.line, "video": str(item.video), "reason": f"{type(exc).__name__}: {exc}"})
            continue
        g = torch.Generator().manual_seed(seed * 1_000_003 + item.line)
        pick = torch.randperm(feats.shape[0], generator=g)[:frames_per_item]
        frames.append(feats[pick.sort().values])
    dim = tokenizer.dim
    return (torch.cat(frames) if frames else torch.zeros(0, dim)), failed


def _resized(stage: Stage, **changes) -> Stage:
    """A freshly initialised stage like ``stage`` with some vocabulary fields changed."""
    cfg = StageConfig.from_dict({**stage.cfg.to_dict(), **changes})
    return Stage(cfg).eval()


def with_centroids(pipeline, centroids: torch.Tensor, seed: int = 0):
    """The pipeline with its semantic tokenizer's centroids replaced by ``centroids [K, D]``.

    If K changes, the semantic stage (its target) and the coarse stage (its source) no longer fit their old
    weights: they are re-initialised at the new size, ready to be trained.
    """
    from ..pipeline import Pipeline

    tokenizer = pipeline.semantic_tokenizer.with_centroids(centroids.float())
    stages = dict(pipeline.stages)
    k = tokenizer.vocab_size
    with torch.random.fork_rng(devices=[]):  # seeded re-initialisation; the caller's random state is untouched
        torch.manual_seed(seed)
        if stages["semantic"].cfg.target_vocab != k:
            stages["semantic"] = _resized(stages["semantic"], target_vocab=k)
        if stages["coarse"].cfg.source_vocab and stages["coarse"].cfg.source_vocab != k:
            stages["coarse"] = _resized(stages["coarse"], source_vocab=k)
    return Pipeline(visual_encoder=pipeline.visual_encoder, codec=pipeline.codec, stages=stages,
                    control=pipeline.control, semantic_tokenizer=tokenizer, fps=pipeline.fps)
