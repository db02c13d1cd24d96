"""Token shards: the preprocessed corpus on disk.

    DATA_DIR/
      meta.json                      what made it: the pipeline's widths, vocabularies and rates
      shards/<name>.safetensors      tensors of many items: "<key>.visual" [T, D], "<key>.times" [T],
                                     "<key>.codes" [n_q, Ta], "<key>.semantic" [Ts], "<key>.control" [N, Dc]
      shards/<name>.json             the shard's items (and the items that failed) — written last, so a shard
                                     without its .json never counts and its items are redone
      index.json                     every finished item and every failure, built when preprocessing ends

Each process writes its own shards, so N processes never touch the same file.

``control`` holds the music's audio embedding per chunk of ``control_hop`` seconds (item meta): row i covers
``[i * hop, (i + 1) * hop)``, so a crop is conditioned on its own music (``span_control``), not the whole track's.
Data dirs made before that hold one whole-track vector ``[Dc]`` and no ``control_hop``; they stay readable
(``span_control`` returns that vector for any span).
"""

from __future__ import annotations

import math
import os
import uuid
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open

from ..errors import DataError
from ..fileio import read_json, save_tensors, write_json

FORMAT_VERSION = 1
FIELDS = ("visual", "times", "codes", "semantic", "control")


def span_control(chunks: torch.Tensor, hop: float | None, t0: float, t1: float) -> torch.Tensor:
    """The control of the span ``[t0, t1)`` seconds: the chunks it overlaps, weighted by overlap -> ``[Dc]``.

    chunks: ``[N, Dc]`` L2-normalised embeddings, row i covering ``[i * hop, (i + 1) * hop)``; the first row also
    covers everything before 0 and the last everything after ``N * hop``, so any span gets a control. An empty
    span (``t1 <= t0``) takes the chunk at ``t0``. A 1-D ``[Dc]`` vector, or ``hop`` None (data dirs made before
    per-chunk controls), is one chunk covering everything. The result is re-normalised to unit length.
    """
    if chunks.dim() == 1:
        return F.normalize(chunks.float(), dim=-1)
    if chunks.dim() != 2 or chunks.shape[0] == 0:
        raise DataError(f"control embeddings must be [N, Dc] with N >= 1, got shape {tuple(chunks.shape)}")
    n = chunks.shape[0]
    if hop is None:
        if n != 1:
            raise DataError(f"{n} control chunks but no control_hop in the item's meta; preprocess it again")
        return F.normalize(chunks[0].float(), dim=-1)
    if not hop > 0:
        raise DataError(f"control_hop must be > 0 seconds, got {hop!r}")
    if t1 <= t0:
        return F.normalize(chunks[min(max(int(t0 // hop), 0), n - 1)].float(), dim=-1)
    # chunk bounds [N]; the outer chunks reach to -inf / +inf
    starts = torch.arange(n, dtype=torch.float64) * hop
    ends = starts + hop
    starts[0], ends[-1] = -math.inf, math.inf
    weights = (ends.clamp(max=t1) - starts.clamp(min=t0)).clamp(min=0)
    mean = (weights[:, None] * chunks.double()).sum(0)
    return F.normalize(mean, dim=-1).float()


def pipeline_meta(pipeline) -> dict:
    """What a data dir must agree on with the pipeline that trains on it."""
    shape = pipeline.shape()
    return {
        "format_version": FORMAT_VERSION,
        "fps": pipeline.fps,
        "sample_rate": pipeline.codec.sample_rate,
        "visual_dim": shape.visual_dim,
        "control_dim": shape.control_dim,
        "codebook_size": shape.codebook_size,
        "n_q": pipeline.codec.n_q,
        "n_coarse": shape.n_coarse,
        "frame_rate": shape.frame_rate,
        "semantic_vocab": shape.semantic_vocab,
        "semantic_rate": shape.semantic_rate,
    }


def check_meta(found: dict, expected: dict, where: str) -> None:
    """DataError listing every field where a data dir and a pipeline disagree."""
    diffs = []
    for key, value in expected.items():
        other = found.get(key)
        same = (math.isclose(float(other), float(value), rel_tol=1e-6)
                if isinstance(value, float) and isinstance(other, (int, float)) else other == value)
        if not same:
            diffs.append(f"{key}: data has {other!r}, pipeline has {value!r}")
    if diffs:
        raise DataError(f"{where}: made with another pipeline ({'; '.join(diffs)}); preprocess the manifest again "
                        "with this pipeline into a new data dir")


def open_data_dir(data_dir: str | os.PathLike, meta: dict) -> Path:
    """Create ``data_dir`` for ``meta`` or check that an existing one was made with the same pipeline."""
    data_dir = Path(data_dir)
    (data_dir / "shards").mkdir(parents=True, exist_ok=True)
    meta_path = data_dir / "meta.json"
    if meta_path.exists():
        check_meta(read_json(meta_path, "data dir description"), meta, str(data_dir))
    else:
        write_json(meta_path, meta)
    return data_dir


def finished_items(data_dir: Path) -> dict[str, dict]:
    """The entries of items already done (written or failed) in committed shards, by key."""
    entries: dict[str, dict] = {}
    for sidecar in sorted((data_dir / "shards").glob("*.json")):
        info = read_json(sidecar, "shard index")
        for entry in info.get("items", []) + info.get("failed", []):
            entries.setdefault(entry["key"], entry)
    return entries


class ShardWriter:
    """Buffers finished items and writes them ``shard_size`` at a time into new shards of ``data_dir``."""

    def __init__(self, data_dir: Path, shard_size: int = 64, prefix: str = "s"):
        self.data_dir = Path(data_dir)
        self.shard_size = shard_size
        self.prefix = prefix
        self.tensors: dict[str, torch.Tensor] = {}
        self.items: list[dict] = []
        self.failed: list[dict] = []

    def add(self, info: dict, tensors: dict[str, torch.Tensor]) -> None:
        """Add one item: ``info`` (JSON-able, with "key") and its tensors (FIELDS)."""
        for name, value in tensors.items():
            self.tensors[f"{info['key']}.{name}"] = value
        self.items.append(info)
        if len(self.items) >= self.shard_size:
            self.flush()

    def fail(self, info: dict) -> None:
        """Record an item that could not be prepared (kept in the report, skipped on re-runs)."""
        self.failed.append(info)
        if len(self.failed) >= self.shard_size:
            self.flush()

    def flush(self) -> None:
        if not self.items and not self.failed:
            return
        name = f"{self.prefix}-{uuid.uuid4().hex[:12]}"
        shards = self.data_dir / "shards"
        if self.items:
            save_tensors(shards / f"{name}.safetensors", self.tensors)
        write_json(shards / f"{name}.json", {"items": self.items, "failed": self.failed})
        self.tensors, self.items, self.failed = {}, [], []


def build_index(data_dir: Path) -> dict:
    """Merge the shards' sidecars into ``index.json``; returns it."""
    items, failed, seen = [], [], set()
    for sidecar in sorted((data_dir / "shards").glob("*.json")):
        info = read_json(sidecar, "shard index")
        for entry in info.get("items", []):
            if entry["key"] not in seen:
                seen.add(entry["key"])
                items.append({**entry, "shard": sidecar.stem})
        failed += info.get("failed", [])
    failed = [f for f in failed if f["key"] not in seen]
    index = {"format_version": FORMAT_VERSION, "items": sorted(items, key=lambda e: e["line"]),
             "failed": sorted(failed, key=lambda e: e["line"])}
    write_json(data_dir / "index.json", index)
    return index


class TokenShards:
    """Read access to a data dir: ``entries(split)`` and ``load(entry)`` (tensors read lazily from shards)."""

    def __init__(self, data_dir: str | os.PathLike, expected_meta: dict | None = None):
        self.data_dir = Path(data_dir)
        if not (self.data_dir / "index.json").is_file():
            raise DataError(f"{self.data_dir}: no index.json; run recipes/preprocess.py to make this data dir")
        self.meta = read_json(self.data_dir / "meta.json", "data dir description")
        if expected_meta is not None:
            check_meta(self.meta, expected_meta, str(self.data_dir))
        self.index = read_json(self.data_dir / "index.json", "data index")
        self._handles: dict[str, object] = {}

    def entries(self, split: str = "train") -> list[dict]:
        return [e for e in self.index["items"] if e["split"] == split]

    def load(self, entry: dict) -> dict[str, torch.Tensor]:
        """The tensors of one item (visual float32, times float32, codes/semantic Long, control float32 [N, Dc]
        or, in data dirs made before per-chunk controls, [Dc]: pass it through ``span_control``)."""
        shard = entry["shard"]
        handle = self._handles.get(shard)
        if handle is None:
            path = self.data_dir / "shards" / f"{shard}.safetensors"
            if not path.is_file():
                raise DataError(f"{path}: shard listed in index.json is missing; re-run preprocessing")
            handle = self._handles[shard] = safe_open(str(path), framework="pt")
        out = {}
        for name in FIELDS:
            key = f"{entry['key']}.{name}"
            if key in handle.keys():
                value = handle.get_tensor(key)
                out[name] = value.long() if name in ("codes", "semantic") else value.float()
        return out

    def visual_statistics(self, split: str = "train", max_items: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel mean and standard deviation ``[Dv]`` of the visual features of up to ``max_items`` items
        of ``split`` spread evenly over it (every frame of each), accumulated in float64."""
        entries = self.entries(split)
        if not entries:
            raise DataError(f"{self.data_dir}: no {split!r} items to measure visual features on")
        if len(entries) > max_items:
            entries = [entries[round(i * (len(entries) - 1) / max(1, max_items - 1))] for i in range(max_items)]
        total = square = 0.0
        frames = 0
        for entry in entries:
            visual = self.load(entry).get("visual")
            if visual is None:
                raise DataError(f"{self.data_dir}: item {entry['key']} has no visual features")
            x = visual.double()
            total, square, frames = total + x.sum(0), square + (x * x).sum(0), frames + x.shape[0]
        mean = total / frames
        var = (square / frames - mean * mean).clamp_min(0)
        return mean.float(), var.sqrt().float()

    def __getstate__(self):  # DataLoader workers open their own handles
        return {**self.__dict__, "_handles": {}}

