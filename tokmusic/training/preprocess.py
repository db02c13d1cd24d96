"""Preprocessing: one manifest item -> visual features, EnCodec codes, semantic ids and control embeddings.

``preprocess`` runs a process's share of a manifest (items ``rank::world``) and skips items already in the data
dir. A bad item (one that raises a ``TokmusicError``: unreadable video, no music, too short...) is recorded with
its reason, listed in ``index.json`` and skipped; anything else (a bug, out of memory, Ctrl-C) stops the run
after the finished items are written.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .manifest import ManifestItem
from .shards import ShardWriter, finished_items
from ..errors import ConfigError, DataError, TokmusicError

# Seconds of music per control embedding: a training crop is conditioned on the chunks it overlaps.
CONTROL_HOP = 1.0


def prepare_item(pipeline, item: ManifestItem, *, min_seconds: float = 1.0,
                 feature_dtype: torch.dtype = torch.float16,
                 control_hop: float = CONTROL_HOP) -> tuple[dict, dict[str, torch.Tensor]]:
    """One pair -> (info, tensors). Raises a TokmusicError (VideoError, AudioError, DataError) for a bad item.

    tensors: visual ``[T, D]`` at ``pipeline.fps``, times ``[T]`` seconds, codes Long ``[n_q, Ta]``, semantic
    Long ``[Ts]`` (if the pipeline has a semantic tokenizer), control ``[N, Dc]`` (if the pipeline has a control
    embedder: the music's audio embedding per chunk of ``control_hop`` seconds, recorded as info
    "control_hop"; see ``shards.span_control``). Everything covers the same span: the shorter of video and music.
    """
    from ..audio import load_audio
    from ..video import probe
    from ..visual_encoders import extract_features

    info = probe(item.video)
    if item.audio is None and not info.has_audio:
        raise DataError(f"{item.video}: has no soundtrack and the manifest gives no 'audio'")
    codec = pipeline.codec
    wave = load_audio(item.music_path, codec.sample_rate, codec.channels)
    duration = min(info.duration, wave.shape[-1] / codec.sample_rate)
    if duration < min_seconds:
        raise DataError(f"{item.video}: only {duration:.2f} s of video with music; the minimum is {min_seconds} s")
    wave = wave[:, : round(duration * codec.sample_rate)]
    with torch.inference_mode():
        feats = extract_features(item.video, pipeline.visual_encoder, pipeline.fps, seconds=duration)
        codes = codec.encode(wave)
        small = torch.int16 if codec.codebook_size < 2**15 else torch.int32
        tensors = {
            "visual": feats.features.to(feature_dtype),
            "times": feats.timestamps.float(),
            "codes": codes.to(small),
        }
        mono = wave.mean(0)
        if pipeline.semantic_tokenizer is not None:
            tensors["semantic"] = pipeline.semantic_tokenizer.tokenize(mono, codec.sample_rate).to(torch.int32)
        if pipeline.control is not None:
            tensors["control"] = pipeline.control.embed_audio_chunks(mono, codec.sample_rate, control_hop).float()
    meta = {"key": item.key, "line": item.line, "video": str(item.video), "video_bytes": item.video.stat().st_size,
            "split": item.split,
            "text": item.text, "duration": round(duration, 6), "frames": int(tensors["visual"].shape[0]),
            "codec_frames": int(codes.shape[-1])}
    if "control" in tensors:
        meta["control_hop"] = float(control_hop)
    if item.keep_control:
        meta["keep_control"] = True
    return meta, {k: v.contiguous() for k, v in tensors.items()}


@dataclass
class PreprocessReport:
    """What one process did: items written, skipped as already done, and failed (with reasons)."""

    done: int = 0
    skipped: int = 0
    failed: list[dict] = field(default_factory=list)


def preprocess(pipeline, items: list[ManifestItem], data_dir: Path, *, rank: int = 0, world: int = 1,
               shard_size: int = 64, min_seconds: float = 1.0, progress: bool = True,
               feature_dtype: torch.dtype = torch.float16, control_hop: float = CONTROL_HOP) -> PreprocessReport:
    """Prepare this process's share of ``items`` into shards of ``data_dir`` (which must already be opened).

    A ``TokmusicError`` from an item marks it failed; any other exception is raised once the finished items
    (and failures) are flushed to a shard.
    """
    if isinstance(control_hop, bool) or not isinstance(control_hop, (int, float)) or not 0 < control_hop < math.inf:
        raise ConfigError(f"control_hop must be a number of seconds > 0, got {control_hop!r}")
    report = PreprocessReport()
    finished = finished_items(data_dir)
    mine = items[rank::world]
    todo = []
    for item in mine:
        done = item.finished_entry(finished)
        if done is None:
            todo.append(item)
        elif "video_bytes" in done and done["video_bytes"] != item.video.stat().st_size:
            raise DataError(f"{data_dir} already holds an item with the key of line {item.line} ({item.video}) but "
                            f"from another file ({done['video']}): another corpus with the same file names was "
                            "prepared into it. Preprocess this manifest into a new --out")
    report.skipped = len(mine) - len(todo)
    writer = ShardWriter(data_dir, shard_size, prefix=f"r{rank}-{os.getpid()}")
    bar = tqdm(total=len(todo), desc="preprocess", unit="item", disable=not progress or not todo)
    try:
        for item in todo:
            start = time.perf_counter()
            try:
                info, tensors = prepare_item(pipeline, item, min_seconds=min_seconds, feature_dtype=feature_dtype,
                                             control_hop=control_hop)
            except TokmusicError as exc:  # bad data: record it and go on (a bug or OOM must stop the run)
                failure = {"key": item.key, "line": item.line, "video": str(item.video),
                           "reason": f"{type(exc).__name__}: {exc}"}
                writer.fail(failure)
                report.failed.append(failure)
            else:
                info["seconds_to_prepare"] = round(time.perf_counter() - start, 3)
                writer.add(info, tensors)
                report.done += 1
            bar.update(1)
    finally:
        writer.flush()  # keep what is finished even if interrupted
        bar.close()
    return report
