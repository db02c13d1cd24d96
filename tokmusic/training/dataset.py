"""Training crops for a stage: random windows aligned across modalities, cut exactly as generation cuts them.

A crop of ``crop_seconds`` is a span ``[first, last)`` of the stage's target-token grid, as a generation window
is; its inputs come from ``conditioning.window_inputs`` over the item's ``Track``, the function
``Pipeline.generate`` calls for each window, and its control is the audio embedding of the crop's own music.

Sample ``n`` of a run (counting over steps, accumulation micro-steps, processes and batch rows) is fully
determined by ``(seed, n)``: which item (a fresh permutation per epoch) and where its crop starts. So a resumed
run continues from step s with exactly the batches an uninterrupted run would have seen, with any number of
DataLoader workers.
"""

from __future__ import annotations

from typing import Iterator

import torch

from ..conditioning import Track, collate_inputs, pad_stack, window_inputs
from ..errors import DataError
from ..stage import StageConfig
from ..windows import stage_windows, token_count
from .shards import TokenShards, span_control


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
        data = self.shards.load(self.entries[index])
        # the crop: a span of the target grid, from (seed, sample) alone
        total = self._total(index, data)
        length = token_count(self.crop_seconds, self.cfg.target_rate)
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + sample)
        first = int(torch.randint(0, max(0, total - length) + 1, (1,), generator=g))
        return self._crop(index, data, first, min(first + length, total))

    def windows(self, index: int) -> list[dict]:
        """Item ``index`` tiled into the windows generation would decode it in (``windows.stage_windows``: the
        stage's window and overlap, the last window moved back to full length). Each crop also says ``first`` (its
        first target token in the item) and ``new`` (how many of its tokens an earlier window already holds)."""
        data = self.shards.load(self.entries[index])
        return [{**self._crop(index, data, w.start, w.end), "first": w.start, "new": w.prompt}
                for w in stage_windows(self.cfg, self._total(index, data))]

    def _total(self, index: int, data: dict) -> int:
        target = self._streams(data)[0]
        return min(token_count(float(self.entries[index]["duration"]), self.cfg.target_rate), target.shape[-1])

    def _crop(self, index: int, data: dict, first: int, last: int) -> dict:
        cfg = self.cfg
        rate = cfg.target_rate
        target_all, source_all = self._streams(data)
        track = Track(features=data.get("visual"), times=data.get("times"), source=source_all,
                      source_rate=cfg.source_rate, control_of=self._control_of(self.entries[index], data))
        return {"target": target_all[:, first:last], **window_inputs(cfg, track, first / rate, last / rate),
                "keep_control": torch.tensor(bool(self.entries[index].get("keep_control", False)))}

    def _control_of(self, entry: dict, data: dict):
        """The crop's control: the audio embedding of the music in the crop."""
        if not self.cfg.control_dim or "control" not in data:
            return None
        chunks, hop = data["control"], entry.get("control_hop")
        return lambda t0, t1: span_control(chunks, hop, t0, t1)


def collate(samples: list[dict]) -> dict[str, torch.Tensor]:
    """Pad a list of crops into a batch: target ``[B, K, T]`` + target_valid ``[B, T]``, keep_control ``[B]``
    (the manifest's flag) and the inputs of ``conditioning.collate_inputs`` (the keys of ``Conditioning``)."""
    target, target_valid = pad_stack([s["target"] for s in samples], -1)
    keep = torch.stack([s["keep_control"] for s in samples])
    return {"target": target, "target_valid": target_valid, "keep_control": keep, **collate_inputs(samples)}


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
