"""Generation's inner loop, for ``Pipeline``: requests (video, prompt, seed) -> the three stages' tokens.

Each video is read once and each prompt embedded once; requests whose music has as many tokens at every stage
are decoded together, one decode step serving all of them (``Pipeline.generate_samples``,
``Pipeline.generate_many``). Each sample draws from its own generator per stage (``stage_seed``), so it is the
music it would be alone, up to the rounding of matrix products over more rows.
"""

from __future__ import annotations

import hashlib
import os

import torch
from tqdm.auto import tqdm

from .conditioning import Conditioning, Track, collate_inputs, window_inputs
from .sampling import SamplingParams
from .sliding_window import generate_long_batch
from .stage import STAGES
from .windows import token_count, total_steps


def request_tokens(pipe, requests: list[tuple], seconds, progress: bool, sampling: dict,
                   given: dict[str, torch.Tensor] | None = None) -> list[dict]:
    """The tokens of each (video, prompt, seed) request to ``pipe``. Each video is read and each prompt embedded
    once; requests whose music has the same number of tokens at every stage are decoded together. ``given``
    maps a stage name to the tokens to use instead of generating them."""
    from .video import probe
    from .visual_encoders import extract_features

    params = pipe._sampling(sampling)
    controls = {prompt: pipe._embed_prompt(prompt) for prompt in dict.fromkeys(p for _, p, _ in requests)}
    videos: dict[str, dict] = {}  # path -> the video's track fields and duration
    with torch.inference_mode():
        for video, _, _ in requests:
            info = probe(video)  # VideoError for anything but a readable video (cached: once per video)
            key = os.fspath(video)
            if key in videos:
                continue
            duration = info.duration if seconds is None else min(float(seconds), info.duration)
            feats = extract_features(video, pipe.visual_encoder, pipe.fps, seconds=duration, progress=progress)
            videos[key] = dict(features=feats.features.float().cpu(), times=feats.timestamps.float(),
                               duration=duration)
    groups: dict[tuple, list[int]] = {}  # token counts at every stage -> the requests of that length
    for i, (video, _, _) in enumerate(requests):
        duration = videos[os.fspath(video)]["duration"]
        lengths = tuple(token_count(duration, pipe.stages[name].cfg.target_rate) for name in STAGES)
        groups.setdefault(lengths, []).append(i)
    out: list[dict] = [{} for _ in requests]
    for members in groups.values():
        tracks = []
        for i in members:
            video, prompt, _ = requests[i]
            fields = videos[os.fspath(video)]
            tracks.append(dict(features=fields["features"], times=fields["times"], control=controls[prompt],
                               duration=fields["duration"]))
        seeds = [requests[i][2] for i in members]
        for i, tokens in zip(members, decode_together(pipe.stages, tracks, seeds, params, progress, given)):
            out[i] = tokens
    return out

def decode_together(stages: dict, inputs: list[dict], seeds: list[int], params: dict[str, SamplingParams],
                    progress: bool, given: dict[str, torch.Tensor] | None) -> list[dict]:
    """Tokens for samples of the same length (``inputs``: each one's features, times, control and duration),
    decoded together stage after stage; samples of one video and prompt share one conditioning."""
    duration = inputs[0]["duration"]
    same = all(x["features"] is inputs[0]["features"] and x["control"] is inputs[0]["control"] for x in inputs)
    video_tracks = [{k: v for k, v in x.items() if k != "duration"} for x in (inputs[:1] if same else inputs)]
    samples: list[dict] = [{"duration": x["duration"]} for x in inputs]
    with torch.inference_mode():
        tracks = [Track(**fields) for fields in video_tracks]  # batch 1 when every sample reads the same
        for name in STAGES:
            stage = stages[name]
            weight = stage.segment.weight

            def condition(t0: float, t1: float, stage=stage, tracks=tracks, weight=weight) -> Conditioning:
                batch = collate_inputs([window_inputs(stage.cfg, track, t0, t1) for track in tracks])
                return Conditioning(**batch).to(weight.device, weight.dtype)

            generators = [torch.Generator(weight.device).manual_seed(stage_seed(seed, name)) for seed in seeds]
            total = token_count(duration, stage.cfg.target_rate)
            if given and name in given:
                out = [given[name][..., :total].to(weight.device) for _ in seeds]
            else:
                with tqdm(total=total_steps(stage, total), desc=name, unit="step", disable=not progress,
                          leave=False) as bar:
                    out = generate_long_batch(stage, total, condition, params[name], generators, bar.update)
            for sample, tokens in zip(samples, out):
                sample[name] = tokens
            # the next stage reads this one's output: semantic -> coarse, coarse -> fine
            fields = video_tracks * len(out) if same else video_tracks
            rate = stage.cfg.target_rate
            tracks = [Track(**f, source=tokens, source_rate=rate) for f, tokens in zip(fields, out)]
    return samples


def stage_seed(seed: int, name: str) -> int:
    """The seed of stage ``name``'s sampling for a generation seeded ``seed``: independent streams per stage
    (``seed + index`` would make seed 1's coarse stream seed 2's semantic stream)."""
    digest = hashlib.sha256(f"tokmusic:{seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1
