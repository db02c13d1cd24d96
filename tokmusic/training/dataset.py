"""Training crops for a stage: random windows aligned across modalities, cut exactly as generation cuts them.

A crop of ``crop_seconds`` starts on the stage's target-token grid; its short-term frames come from
``visual_window``, its source and target tokens from ``token_window``, and its long-term frames from
``sample_long_term`` over the whole video — the same calls ``Pipeline.generate`` makes for a window.

Sample ``n`` of a run (counting over steps, accumulation micro-steps, processes and batch rows) is fully
determined by ``(seed, n)``: which item (a fresh permutation per epoch) and where its crop starts. So a resumed
run continues from step s with exactly the batches an uninterrupted run would have seen, with any number of
DataLoader workers.
"""

from __future__ import annotations

from typing import Iterator

import torch

from ..errors import DataError
from ..lst_fusion import sample_long_term
from ..sliding_window import source_window, token_count, token_window, visual_window
from ..stage import StageConfig
from .shards import TokenShards


class StageDataset(torch.utils.data.Dataset):
    """Crops of the items of one split for the stage ``cfg``; indexed by ``(item index, sample number)``."""

    def __init__(self, shards: TokenShards, cfg: StageConfig, crop_seconds: float, split: str = "train",
                 seed: int = 0):
        self.shards = shards
        self.cfg = cfg
        self.crop_seconds = float(crop_seconds)
        self.seed = int(seed)
        self.entries = shards.entries(split)
        if not self.entries:
            raise DataError(f"{shards.data_dir}: no {split!r} items; add some to the manifest and preprocess again")
        n_coarse = shards.meta["n_coarse"]
        if cfg.kind in ("semantic", "coarse") and shards.meta.get("semantic_vocab") is None:
            raise DataError(f"{shards.data_dir}: has no semantic tokens (the pipeline had no semantic tokenizer)")
        self.n_coarse = n_coarse

    def __len__(self) -> int:
        return len(self.entries)

    def _streams(self, data: dict) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(target Long [K, T], source Long [Ks, Ts] or None) of one item."""
        kind = self.cfg.kind
        if kind == "semantic":
            return data["semantic"][None], None
        if kind == "coarse":
            return data["codes"][: self.n_coarse], data["semantic"][None]
        return data["codes"][self.n_coarse :], data["codes"][: self.n_coarse]

    def __getitem__(self, ref: tuple[int, int]) -> dict:
        index, sample = ref
        entry = self.entries[index]
        data = self.shards.load(entry)
        cfg = self.cfg
        rate = cfg.target_rate
        target_all, source_all = self._streams(data)
        duration = float(entry["duration"])

        # crop start on the target grid, from (seed, sample) alone
        total = min(token_count(duration, rate), target_all.shape[-1])
        length = token_count(self.crop_seconds, rate)
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + sample)
        first = int(torch.randint(0, max(0, total - length) + 1, (1,), generator=g))
        t0 = first / rate
        t1 = min(t0 + self.crop_seconds, duration)

        out: dict[str, torch.Tensor] = {"target": token_window(target_all, rate, t0, t1)}
        if source_all is not None:
            out["source"], start = source_window(source_all, cfg.source_rate, t0, t1)
            out["source_start"] = torch.tensor(start, dtype=torch.float32)
        if cfg.visual_dim:
            out["visual"], out["visual_times"] = visual_window(data["visual"], data["times"], t0, t1)
            if cfg.lst.enabled:
                out["long"], _ = sample_long_term(data["visual"], cfg.lst.long_frames)
        if cfg.control_dim and "control" in data:
            out["control"] = data["control"]
        return out


def _pad(tensors: list[torch.Tensor], dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack along a new batch dim, zero-padding ``dim`` (of the unbatched tensors) -> (batch, valid [B, L])."""
    length = max(t.shape[dim] for t in tensors)
    out, valid = [], torch.zeros(len(tensors), length, dtype=torch.bool)
    for i, t in enumerate(tensors):
        pad = [0, 0] * (t.dim() - 1 - dim % t.dim()) + [0, length - t.shape[dim]]
        out.append(torch.nn.functional.pad(t, pad))
        valid[i, : t.shape[dim]] = True
    return torch.stack(out), valid


def collate(samples: list[dict]) -> dict[str, torch.Tensor]:
    """Pad a list of crops into a batch: target ``[B, K, T]`` + target_valid ``[B, T]``, visual ``[B, Tv, D]``,
    visual_times ``[B, Tv]``, visual_valid, long ``[B, Tl, D]``, long_valid, source ``[B, Ks, Ts]``,
    source_valid, source_start ``[B]``, control ``[B, Dc]`` + control_valid ``[B]``."""
    batch: dict[str, torch.Tensor] = {}
    batch["target"], batch["target_valid"] = _pad([s["target"] for s in samples], -1)
    if "source" in samples[0]:
        batch["source"], batch["source_valid"] = _pad([s["source"] for s in samples], -1)
        batch["source_start"] = torch.stack([s["source_start"] for s in samples])
    if "visual" in samples[0]:
        batch["visual"], batch["visual_valid"] = _pad([s["visual"] for s in samples], 0)
        batch["visual_times"], _ = _pad([s["visual_times"] for s in samples], 0)
    if "long" in samples[0]:
        batch["long"], batch["long_valid"] = _pad([s["long"] for s in samples], 0)
    if "control" in samples[0]:
        batch["control"] = torch.stack([s["control"] for s in samples])
        batch["control_valid"] = torch.ones(len(samples), dtype=torch.bool)
    return batch


class StepSampler(torch.utils.data.Sampler):
    """Endless batches of ``(item index, sample number)`` for one process, starting at ``start_step``.

    Sample number n = ((step * accum + micro) * world + rank) * batch_size + row; its item is position
    ``n % N`` of epoch ``n // N``'s permutation (seeded by seed and epoch).
    """

    def __init__(self, num_items: int, batch_size: int, *, accum: int = 1, rank: int = 0, world: int = 1,
                 seed: int = 0, start_step: int = 0):
        self.n, self.batch, self.accum, self.rank, self.world = num_items, batch_size, accum, rank, world
        self.seed, self.start_step = seed, start_step
        self._perms: dict[int, torch.Tensor] = {}

    def _item(self, sample: int) -> int:
        epoch = sample // self.n
        if epoch not in self._perms:
            self._perms = {epoch: torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + epoch))}
        return int(self._perms[epoch][sample % self.n])

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        step = self.start_step
        while True:
            for micro in range(self.accum):
                first = ((step * self.accum + micro) * self.world + self.rank) * self.batch
                yield [(self._item(s), s) for s in range(first, first + self.batch)]
            step += 1
