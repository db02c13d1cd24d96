"""Evaluate a folder of generated music against a reference folder (and the videos, and the prompts).

    result = evaluate("generated/", "reference/", videos="videos/", prompts="prompts.jsonl")
    result.report        # JSON-able dict: metrics (each naming its embedder), per-clip numbers, failures

Metrics follow V2Meow / VidMuse Table 1: FAD, KL, density and coverage, text–music consistency (CLAP),
audio–visual alignment; plus weight-free structure numbers: tempo, key agreement, beats on cuts.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from ..schema import Field, check, positive, shown, size
from ..errors import ConfigError, DataError, TokmusicError
from ..metrics import MIN_SAMPLES, cosine_similarities, density_coverage, frechet_distance, kl_divergence
from .alignment import av_alignment, similarity_structure
from .embedders import AudioEmbedder, load_audio_embedder, load_classifier
from .inputs import AUDIO_SUFFIXES, VIDEO_SUFFIXES, list_media, load_clip, read_prompts
from .key import key_agreement
from .spectral import ANALYSIS_RATE
from .structure import MusicStructure, analyze_music
from .video_events import VideoStructure, analyze_video
from .visual import VideoStatsEmbedder, load_visual_embedder


@dataclass
class ClipResult:
    """Everything computed for one audio clip."""

    name: str
    path: Path
    structure: MusicStructure
    windows: torch.Tensor  # [W, D] audio-embedder windows
    probabilities: torch.Tensor  # [C] classifier output

    @property
    def embedding(self) -> torch.Tensor:
        return self.windows.mean(dim=0)


@dataclass
class Evaluation:
    """The JSON report plus the per-clip results that plots draw from."""

    report: dict
    generated: dict[str, ClipResult] = field(default_factory=dict)
    reference: dict[str, ClipResult] = field(default_factory=dict)
    videos: dict[str, VideoStructure] = field(default_factory=dict)


def _analyze_clip(name: str, path: Path, embedder: AudioEmbedder, classifier: AudioEmbedder) -> ClipResult:
    # decode once per rate needed: ffmpeg's resampler is faster than resampling long clips in torch
    waves = {rate: load_clip(path, rate) for rate in {ANALYSIS_RATE, embedder.sample_rate, classifier.sample_rate}}
    return ClipResult(name, path, analyze_music(waves[ANALYSIS_RATE], ANALYSIS_RATE),
                      embedder.embed_windows(waves[embedder.sample_rate], embedder.sample_rate),
                      classifier.embed(waves[classifier.sample_rate], classifier.sample_rate))


def _stats(values: list[float]) -> dict:
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": round(float(arr.mean()), 4), "std": round(float(arr.std()), 4), "n": int(arr.size)}


def _set_summary(clips: dict[str, ClipResult]) -> dict:
    s = [c.structure for c in clips.values()]
    keyed = [x.key for x in s if x.key is not None]
    return {
        "clips": len(s),
        "duration_s": _stats([x.duration for x in s]),
        "tempo_bpm": _stats([x.tempo for x in s if x.tempo > 0]),
        "onset_rate": _stats([x.onset_rate for x in s]),
        "loudness_db": _stats([x.loudness_db for x in s]),
        "centroid_hz": _stats([x.centroid_hz for x in s]),
        "major_fraction": round(sum(k.mode == "major" for k in keyed) / len(keyed), 4) if keyed else None,
    }


def _tempo_match(a: float, b: float, octaves: bool) -> bool:
    """MIREX-style tempo accuracy: within 4%, optionally also at double, half, triple or a third."""
    factors = (1.0, 2.0, 0.5, 3.0, 1 / 3) if octaves else (1.0,)
    return a > 0 and b > 0 and any(abs(a - f * b) <= 0.04 * f * b for f in factors)


def _paired_structure(pairs: list[tuple[ClipResult, ClipResult]]) -> dict:
    keyed = [(g.structure.key, r.structure.key) for g, r in pairs if g.structure.key and r.structure.key]
    tempos = [(g.structure.tempo, r.structure.tempo) for g, r in pairs]
    return {
        "pairs": len(pairs),
        "key_exact": round(float(np.mean([g.name == r.name for g, r in keyed])), 4) if keyed else None,
        "key_mirex": round(float(np.mean([key_agreement(g, r) for g, r in keyed])), 4) if keyed else None,
        "mode_agreement": round(float(np.mean([g.mode == r.mode for g, r in keyed])), 4) if keyed else None,
        "tempo_acc1": round(float(np.mean([_tempo_match(g, r, False) for g, r in tempos])), 4) if tempos else None,
        "tempo_acc2": round(float(np.mean([_tempo_match(g, r, True) for g, r in tempos])), 4) if tempos else None,
    }


def evaluate(generated: str | Path, reference: str | Path, *, videos: str | Path | None = None,
             prompts: str | Path | None = None, embedder: str = "spectral", classifier: str = "pitch-class",
             visual_embedder: str = "video-stats", k: int = 5, tolerance: float = 0.1,
             progress: bool = True, device: str | None = None) -> Evaluation:
    """Compute every metric that applies to these folders; see the module docstring.

    Clips pair by name across folders. Files that fail to decode are listed under "failed", not fatal.
    """
    from tqdm.auto import tqdm

    _check_arguments(locals())
    suffixes = AUDIO_SUFFIXES + VIDEO_SUFFIXES  # a video's soundtrack is music too
    gen_files = list_media(generated, suffixes, "generated audio")
    ref_files = list_media(reference, suffixes, "reference audio")
    video_files = list_media(videos, VIDEO_SUFFIXES, "video") if videos is not None else {}
    prompt_map = read_prompts(prompts) if prompts is not None else {}
    audio_emb = load_audio_embedder(embedder, device)
    clf = load_classifier(classifier, device)
    vis = load_visual_embedder(visual_embedder, device) if video_files else None
    failed: list[dict] = []
    result = Evaluation(report={})

    bar = tqdm(total=len(gen_files) + len(ref_files), desc="tokmusic eval", unit="clip", disable=not progress)
    for which, files, store in (("generated", gen_files, result.generated), ("reference", ref_files, result.reference)):
        for name, path in files.items():
            try:
                store[name] = _analyze_clip(name, path, audio_emb, clf)
            except TokmusicError as exc:
                failed.append({"set": which, "path": str(path), "error": str(exc)})
            bar.update(1)
    bar.close()
    for which, store in (("generated", result.generated), ("reference", result.reference)):
        if len(store) == 0:
            raise DataError(f"none of the {which} files could be decoded; see: {failed[0]['error']}")

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        metrics, skipped, notes = _distribution_metrics(result, audio_emb, clf, k, prompt_map)
        if video_files:
            metrics.update(_video_metrics(result, video_files, vis, audio_emb, tolerance, failed))
        if "audio_visual" not in metrics:
            skipped["audio_visual"] = ("no --videos folder given" if videos is None
                                       else "no video decoded whose name matches a clip name")

    gen, ref = result.generated, result.reference
    pairs = [(gen[n], ref[n]) for n in gen if n in ref]
    result.report = {
        "tokmusic_version": __version__,
        "inputs": {"generated": str(generated), "reference": str(reference),
                   "videos": str(videos) if videos is not None else None,
                   "prompts": str(prompts) if prompts is not None else None},
        "counts": {"generated": len(gen), "reference": len(ref), "paired_by_name": len(pairs),
                   "videos": len(result.videos), "failed": len(failed)},
        "embedders": {"audio": audio_emb.describe(), "classifier": clf.describe(),
                      "visual": vis.describe() if video_files else None},
        "metrics": metrics,
        "skipped": skipped,
        "structure": {"generated": _set_summary(gen), "reference": _set_summary(ref),
                      "paired": _paired_structure(pairs) if pairs else None},
        "failed": failed,
        "warnings": notes + sorted({str(w.message) for w in caught}),
        "clips": {
            "generated": {n: _clip_summary(c, clf) for n, c in gen.items()},
            "reference": {n: _clip_summary(c, clf) for n, c in ref.items()},
            "videos": {n: v.summary() for n, v in result.videos.items()},
        },
    }
    return result


def _check_arguments(args: dict) -> None:
    """ConfigError for an argument of ``evaluate`` of the wrong type or range (before any clip is decoded)."""
    for name in ("generated", "reference", "videos", "prompts"):
        value = args[name]
        if not isinstance(value, (str, os.PathLike)) and not (value is None and name in ("videos", "prompts")):
            raise ConfigError(f"evaluate: {name} must be a folder path, got {shown(value)}")
    for name, rule in (("embedder", Field(str)), ("classifier", Field(str)), ("visual_embedder", Field(str)),
                       ("k", size()), ("tolerance", positive()), ("progress", Field(bool)),
                       ("device", Field(str, null=True))):
        check(args[name], rule, "evaluate", name)


def _clip_summary(clip: ClipResult, classifier) -> dict:
    summary = clip.structure.summary()
    labels = getattr(classifier, "labels", None)
    if labels:
        top = torch.argsort(clip.probabilities, descending=True)[:3].tolist()
        summary["top_classes"] = {labels[i]: round(float(clip.probabilities[i]), 4) for i in top}
    return summary


def _distribution_metrics(result: Evaluation, audio_emb, clf, k: int,
                          prompts: dict[str, str]) -> tuple[dict, dict, list[str]]:
    """FAD, density/coverage, KL and text–music scores; plus notes on how far to trust them."""
    gen, ref = result.generated, result.reference
    metrics: dict = {}
    skipped: dict = {}
    notes: list[str] = []
    emb_name = audio_emb.name
    gen_w = torch.cat([c.windows for c in gen.values()])
    ref_w = torch.cat([c.windows for c in ref.values()])
    if gen_w.shape[0] >= 2 and ref_w.shape[0] >= 2:
        dim = gen_w.shape[1]
        if min(gen_w.shape[0], ref_w.shape[0]) < max(MIN_SAMPLES, dim):
            notes.append(f"fad: {ref_w.shape[0]} reference and {gen_w.shape[0]} generated windows of dimension "
                         f"{dim}; with fewer windows than dimensions FAD is biased upwards: compare FADs only "
                         "between sets of the same size, embedded by the same embedder")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # said above, in the report's own words
            fad = frechet_distance(ref_w, gen_w)
        metrics["fad"] = {"value": round(fad, 6), "embedder": emb_name,
                          "windows": {"generated": gen_w.shape[0], "reference": ref_w.shape[0]},
                          "window_seconds": audio_emb.window_seconds}
    else:
        skipped["fad"] = "needs at least 2 embedding windows in each set"
    gen_e = torch.stack([c.embedding for c in gen.values()])
    ref_e = torch.stack([c.embedding for c in ref.values()])
    k_used = min(k, ref_e.shape[0] - 1)
    if k_used >= 1:
        if ref_e.shape[0] < MIN_SAMPLES:
            notes.append(f"density/coverage: only {ref_e.shape[0]} reference clips; the neighbourhood radii "
                         f"(k={k_used}) are coarse")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            density, coverage = density_coverage(ref_e, gen_e, k=k_used)
        for key, value in (("density", density), ("coverage", coverage)):
            metrics[key] = {"value": round(value, 6), "embedder": emb_name, "k": k_used}
    else:
        skipped["density"] = skipped["coverage"] = "needs at least 2 reference clips"
    paired = [n for n in gen if n in ref]
    if paired:
        p = torch.stack([ref[n].probabilities for n in paired])
        q = torch.stack([gen[n].probabilities for n in paired])
        pairing = "by name"
    else:  # no pairs: compare the sets' mean class distributions
        p = torch.stack([c.probabilities for c in ref.values()]).mean(dim=0, keepdim=True)
        q = torch.stack([c.probabilities for c in gen.values()]).mean(dim=0, keepdim=True)
        pairing = "set means"
    metrics["kl"] = {"value": round(kl_divergence(p, q), 6), "embedder": clf.name, "pairing": pairing,
                     "pairs": len(paired), "direction": "KL(reference || generated)"}
    if not prompts:
        skipped["text_music"] = "no --prompts file given"
    elif not hasattr(audio_emb, "embed_text"):
        skipped["text_music"] = f"embedder {emb_name!r} has no text side; pass a CLAP model as --embedder"
    else:
        for which, store in (("generated", gen), ("reference", ref)):
            named = [(n, prompts.get(n, prompts.get(Path(n).name))) for n in store]
            named = [(n, t) for n, t in named if t is not None]
            if named:
                text = audio_emb.embed_text([t for _, t in named])
                audio = torch.stack([store[n].embedding for n, _ in named])
                sims = cosine_similarities(audio, text)
                metrics.setdefault("text_music", {"embedder": emb_name})[which] = {
                    "value": round(float(sims.mean()), 6), "clips": len(named)}
        if "text_music" not in metrics:
            skipped["text_music"] = "no prompt names match a clip name"
    return metrics, skipped, notes


def _video_metrics(result: Evaluation, video_files: dict[str, Path], vis, audio_emb, tolerance: float,
                   failed: list[dict]) -> dict:
    wanted = [n for n in video_files if n in result.generated or n in result.reference]
    visual: dict[str, np.ndarray] = {}
    for name in wanted:
        try:
            structure = analyze_video(video_files[name])
            visual[name] = (structure.features if isinstance(vis, VideoStatsEmbedder)
                            else vis.embed_video(video_files[name]))
            result.videos[name] = structure
        except TokmusicError as exc:
            failed.append({"set": "videos", "path": str(video_files[name]), "error": str(exc)})
    out: dict = {}
    for which, store in (("generated", result.generated), ("reference", result.reference)):
        names = [n for n in store if n in result.videos]
        if not names:
            continue
        entry = av_alignment([(store[n].structure, result.videos[n]) for n in names], tolerance)
        entry["visual_events"] = "frame differences and colour histograms (no weights)"
        if len(names) >= 3:
            audio = torch.stack([store[n].embedding for n in names]).double().numpy()
            entry["similarity_structure"] = {
                "value": round(similarity_structure(audio, np.stack([visual[n] for n in names])), 4),
                "audio_embedder": audio_emb.name, "visual_embedder": vis.name}
        out.setdefault("audio_visual", {})[which] = entry
    return out
