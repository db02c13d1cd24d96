"""PNG pictures of an evaluation: per-clip distributions of both sets, and a beat/cut timeline of one clip.

matplotlib is an optional dependency (`pip install tokmusic[eval]`); it is imported only here, through its
object-oriented API, so no global backend is switched.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError, DataError
from ..fileio import atomic_file
from .key import PITCH_CLASSES
from .report import ClipResult, Evaluation

GENERATED, REFERENCE = "#d95f02", "#1b9e77"


def _figure(width: float, height: float):
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ConfigError("plots need matplotlib: pip install 'tokmusic[eval]' (or leave out --plots)") from None
    return Figure(figsize=(width, height), dpi=110, layout="constrained")


def _save(fig, path: Path) -> Path:
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


def _nearest_distances(result: Evaluation) -> tuple[np.ndarray, np.ndarray]:
    """Per clip: distance to the nearest reference clip (leave-one-out for the references themselves)."""
    ref = torch.stack([c.embedding for c in result.reference.values()]).double()
    gen = torch.stack([c.embedding for c in result.generated.values()]).double()
    gen_d = torch.cdist(gen, ref).min(dim=1).values.numpy()
    rr = torch.cdist(ref, ref)
    rr.fill_diagonal_(float("inf"))
    ref_d = rr.min(dim=1).values.numpy() if ref.shape[0] > 1 else np.zeros(0)
    return gen_d, ref_d


def _histogram(ax, gen: list[float], ref: list[float], title: str, unit: str) -> None:
    values = np.asarray(list(gen) + list(ref), dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        ax.set_title(f"{title} (no data)")
        return
    lo, hi = float(values.min()), float(values.max())
    bins = np.linspace(lo - 0.5, hi + 0.5, 2) if hi - lo < 1e-9 else np.linspace(lo, hi, min(20, max(6, values.size // 2)) + 1)
    sets = [(np.asarray(d, dtype=np.float64), c, f"{l} (n={len(d)})")
            for d, c, l in ((gen, GENERATED, "generated"), (ref, REFERENCE, "reference")) if len(d)]
    # side-by-side bars per bin: overlapping translucent bars mix into a third colour that reads as a third set
    ax.hist([d for d, _, _ in sets], bins=bins, weights=[np.full(d.size, 1.0 / d.size) for d, _, _ in sets],
            color=[c for _, c, _ in sets], label=[l for _, _, l in sets])
    ax.set_title(title)
    ax.set_xlabel(unit)
    ax.set_ylabel("fraction of clips")


def plot_distributions(result: Evaluation, path: str | Path) -> Path:
    """Histograms of per-clip tempo, onset rate, loudness, brightness, key and nearest-reference distance."""
    fig = _figure(13, 7.5)
    axes = fig.subplots(2, 3)
    gen = [c.structure for c in result.generated.values()]
    ref = [c.structure for c in result.reference.values()]
    _histogram(axes[0, 0], [s.tempo for s in gen if s.tempo > 0], [s.tempo for s in ref if s.tempo > 0],
               "Tempo", "BPM")
    _histogram(axes[0, 1], [s.onset_rate for s in gen], [s.onset_rate for s in ref], "Onset rate", "onsets / s")
    _histogram(axes[0, 2], [s.loudness_db for s in gen], [s.loudness_db for s in ref], "Loudness", "dBFS (RMS)")
    _histogram(axes[1, 0], [s.centroid_hz for s in gen], [s.centroid_hz for s in ref], "Brightness",
               "spectral centroid (Hz)")
    ax = axes[1, 1]
    x = np.arange(12)
    for offset, structures, colour, label in ((-0.2, gen, GENERATED, "generated"), (0.2, ref, REFERENCE, "reference")):
        keys = [s.key for s in structures if s.key is not None]
        n = max(1, len(keys))
        major = np.bincount([k.tonic for k in keys if k.mode == "major"], minlength=12) / n
        minor = np.bincount([k.tonic for k in keys if k.mode == "minor"], minlength=12) / n
        ax.bar(x + offset, major, 0.4, color=colour, label=f"{label} major")
        ax.bar(x + offset, minor, 0.4, bottom=major, color=colour, alpha=0.4, hatch="//", label=f"{label} minor")
    ax.set_xticks(x, PITCH_CLASSES)
    ax.set_title("Key (tonic; hatched = minor)")
    ax.set_ylabel("fraction of clips")
    ax.legend(fontsize=7)
    gen_d, ref_d = _nearest_distances(result)
    name = result.report.get("embedders", {}).get("audio", {}).get("name", "audio embedder")
    _histogram(axes[1, 2], gen_d.tolist(), ref_d.tolist(), "Distance to nearest reference clip", f"{name} embedding")
    for a in axes.flat:
        if a.get_legend_handles_labels()[0] and a is not ax:
            a.legend(fontsize=7)
    fig.suptitle(f"Per-clip distributions: {len(gen)} generated vs {len(ref)} reference clips")
    return _save(fig, Path(path))


def plot_timeline(clip: ClipResult, path: str | Path, video=None, which: str = "generated") -> Path:
    """Onset strength with beats, onsets and section changes of one clip; with its video's cuts, motion
    curve and motion peaks underneath when `video` (a VideoStructure) is given."""
    s = clip.structure
    rows = 2 if video is not None else 1
    fig = _figure(13, 2.6 * rows + 0.6)
    axes = np.atleast_1d(fig.subplots(rows, 1, sharex=True, squeeze=False)[:, 0])
    ax = axes[0]
    t = np.arange(s.envelope.size) / s.fps
    ax.plot(t, s.envelope, color="0.45", lw=0.8, label="onset strength")
    top = float(s.envelope.max()) if s.envelope.size and s.envelope.max() > 0 else 1.0
    ax.vlines(s.beats, 0, top, color="#1f78b4", lw=1.0, label=f"beats ({len(s.beats)})")
    ax.plot(s.onsets, np.full(len(s.onsets), 1.04 * top), "v", color="0.2", ms=3, label=f"onsets ({len(s.onsets)})")
    for i, x in enumerate(s.sections):
        ax.axvline(x, color="#6a3d9a", lw=2.5, ls="--", label="section change" if i == 0 else None)
    if video is not None:
        for i, x in enumerate(video.cuts):
            ax.axvline(x, color="#e31a1c", lw=1.8, alpha=0.8, label="video cut" if i == 0 else None)
    key = s.key.name if s.key else "no key"
    fig.suptitle(f"{which} clip {clip.name!r}: {s.tempo:.1f} BPM, {key}")
    ax.set_ylabel("music: onset strength")
    ax.legend(loc="lower left", bbox_to_anchor=(0, 1.0), fontsize=7, ncol=5, frameon=False)
    if video is not None:
        ax2 = axes[1]
        ax2.plot(video.times, video.motion, color="0.35", lw=0.9, label="motion (frame difference)")
        peak_y = np.interp(video.motion_peaks, video.times, video.motion) if video.times.size else []
        ax2.plot(video.motion_peaks, peak_y, "o", color="#ff7f00", ms=4, label=f"motion peaks ({len(video.motion_peaks)})")
        for i, x in enumerate(video.cuts):
            ax2.axvline(x, color="#e31a1c", lw=1.8, alpha=0.8, label=f"cuts ({len(video.cuts)})" if i == 0 else None)
        ax2.vlines(s.beats, 0, 0.15 * max(float(video.motion.max()), 1e-6), color="#1f78b4", lw=1.0, label="beats")
        ax2.set_ylabel("video: motion")
        ax2.legend(loc="lower left", bbox_to_anchor=(0, 1.0), fontsize=7, ncol=4, frameon=False)
    axes[-1].set_xlabel("time (s)")
    axes[-1].set_xlim(0, max(s.duration, video.duration if video is not None else 0.0))
    return _save(fig, Path(path))


def write_plots(result: Evaluation, directory: str | Path, clip: str | None = None) -> list[Path]:
    """Write distributions.png and timeline.png (clip `clip`, else the first generated clip with a video,
    else the first generated clip) into `directory`; returns the paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = [plot_distributions(result, directory / "distributions.png")]
    if clip is None:
        with_video = [n for n in result.generated if n in result.videos]
        clip = with_video[0] if with_video else next(iter(result.generated))
    store, which = (result.generated, "generated") if clip in result.generated else (result.reference, "reference")
    if clip not in store:
        names = ", ".join(list(result.generated)[:5])
        raise DataError(f"--clip {clip!r}: no such clip; names are file paths without suffix, e.g. {names}")
    paths.append(plot_timeline(store[clip], directory / "timeline.png", result.videos.get(clip), which))
    return paths
