"""Building an EnCodec-architecture codec (transformers ``EncodecModel``) and putting it into a pipeline.

    codec = new_codec(sample_rate=16000, hop_length=320, n_q=4, n_coarse=2, codebook_size=256)   # untrained
    pipeline = with_codec(pipeline, codec)          # re-sizes the coarse / fine stages when the codes change shape

``training/codec_fit.py`` trains such a codec.
"""

from __future__ import annotations

import math

import torch
from transformers import EncodecConfig, EncodecModel

from ..codec import EncodecCodec
from ..errors import ConfigError
from ..stage import Stage, StageConfig

# The default codec: 16 kHz mono, 50 frames/s, 4 codebooks of 256 (2 coarse): 1.6 kbit/s; EnCodec's strides with
# a quarter of its width (0.73 M parameters), so that a training step (8 crops of 1 s) takes ~0.6 s on one CPU
# thread: ~2000 steps in 20 minutes.
DEFAULT_ARCHITECTURE = {
    "sample_rate": 16_000,
    "hop_length": 320,
    "n_q": 4,
    "n_coarse": 2,
    "codebook_size": 256,
    "num_filters": 8,
    "hidden_size": 64,
    "num_lstm_layers": 1,
    "num_residual_layers": 1,
    "upsampling_ratios": None,  # None: hop_length factored into strides of at most 8, largest first
}


# EnCodec's own stride layouts for common hops; other hops are factored greedily.
KNOWN_RATIOS = {320: [8, 5, 4, 2], 640: [8, 5, 4, 4], 240: [8, 5, 3, 2], 256: [8, 4, 4, 2], 480: [8, 5, 4, 3]}


def _ratios(hop_length: int) -> list[int]:
    """hop_length as strides <= 8, largest first (320 -> [8, 5, 4, 2], EnCodec's)."""
    if hop_length in KNOWN_RATIOS:
        return list(KNOWN_RATIOS[hop_length])
    factors, n = [], hop_length
    for p in (2, 3, 5, 7):
        while n % p == 0:
            factors.append(p)
            n //= p
    if n > 1:
        raise ConfigError(f"hop_length={hop_length}: has a prime factor {n} > 7; pick a hop made of 2, 3, 5, 7 "
                          "(e.g. 320) or give upsampling_ratios")
    ratios = []
    for f in sorted(factors, reverse=True):  # greedy: merge into the smallest ratio that stays <= 8
        fits = [i for i, r in enumerate(ratios) if r * f <= 8]
        if fits:
            i = min(fits, key=lambda i: ratios[i])
            ratios[i] *= f
        else:
            ratios.append(f)
    return sorted(ratios, reverse=True)


def new_codec(seed: int = 0, **architecture) -> EncodecCodec:
    """A fresh, untrained EncodecCodec; keyword arguments override ``DEFAULT_ARCHITECTURE``.

    sample_rate (Hz, mono), hop_length (samples per code frame), n_q codebooks of codebook_size entries (the
    first n_coarse are the coarse ones), num_filters / hidden_size / num_lstm_layers / num_residual_layers
    (SEANet sizes), upsampling_ratios (strides whose product is hop_length). Codebooks are zero until trained.
    """
    unknown = sorted(set(architecture) - set(DEFAULT_ARCHITECTURE))
    if unknown:
        raise ConfigError(f"codec architecture: unknown key(s) {unknown}; allowed: {sorted(DEFAULT_ARCHITECTURE)}")
    a = {**DEFAULT_ARCHITECTURE, **architecture}
    for key, value in a.items():
        if key != "upsampling_ratios" and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ConfigError(f"codec architecture: {key} must be a positive integer, got {value!r}")
    ratios = a["upsampling_ratios"] or _ratios(a["hop_length"])
    if math.prod(ratios) != a["hop_length"]:
        raise ConfigError(f"codec architecture: upsampling_ratios {ratios} multiply to {math.prod(ratios)}, "
                          f"not hop_length={a['hop_length']}")
    if a["sample_rate"] % a["hop_length"]:
        raise ConfigError(f"codec architecture: sample_rate {a['sample_rate']} is not a multiple of hop_length "
                          f"{a['hop_length']}; the code frame rate must be a whole number")
    if a["codebook_size"] < 2 or a["codebook_size"] & (a["codebook_size"] - 1):
        raise ConfigError(f"codec architecture: codebook_size must be a power of two >= 2, got {a['codebook_size']}")
    # one bandwidth per codebook count: EncodecModel picks its codebooks by bandwidth
    bits = math.log2(a["codebook_size"]) * (a["sample_rate"] // a["hop_length"])
    bandwidths = [(n + 1e-6) * bits / 1000 for n in range(1, a["n_q"] + 1)]
    config = EncodecConfig(
        sampling_rate=a["sample_rate"], audio_channels=1, normalize=False, target_bandwidths=bandwidths,
        upsampling_ratios=list(ratios), num_filters=a["num_filters"], hidden_size=a["hidden_size"],
        codebook_size=a["codebook_size"], num_lstm_layers=a["num_lstm_layers"],
        num_residual_layers=a["num_residual_layers"],
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = EncodecModel(config)
    return EncodecCodec(model, a["n_coarse"], a["n_q"])


def architecture_of(codec: EncodecCodec) -> dict:
    """The ``new_codec`` keyword arguments that rebuild ``codec``'s architecture."""
    c = codec.model.config
    return {"sample_rate": codec.sample_rate, "hop_length": codec.hop_length, "n_q": codec.n_q,
            "n_coarse": codec.n_coarse, "codebook_size": codec.codebook_size, "num_filters": c.num_filters,
            "hidden_size": c.hidden_size, "num_lstm_layers": c.num_lstm_layers,
            "num_residual_layers": c.num_residual_layers, "upsampling_ratios": list(c.upsampling_ratios)}


def _resized(stage: Stage, changes: dict) -> Stage:
    """A freshly initialised stage like ``stage`` with ``changes`` (a pattern's per-codebook settings reset
    when the codebook count changes)."""
    data = {**stage.cfg.to_dict(), **changes}
    if data["target_codebooks"] != stage.cfg.target_codebooks and data["pattern"] in ("delay", "coarse_first"):
        data["pattern_kwargs"] = {}
    return Stage(StageConfig.from_dict(data)).eval()


def with_codec(pipeline, codec: EncodecCodec, seed: int = 0):
    """The pipeline with ``codec`` as its codec.

    The coarse and fine stages are re-initialised (seeded by ``seed``) when the codes they read or write
    change shape (codebook size, coarse / fine codebook counts, frame rate); otherwise they keep their weights
    (but were trained on the old codec's codes: retrain them on codes of this one).
    """
    from ..pipeline import Pipeline

    k, rate = codec.codebook_size, float(codec.frame_rate)
    wanted = {
        "coarse": {"target_vocab": k, "target_codebooks": codec.n_coarse, "target_rate": rate},
        "fine": {"source_vocab": k, "source_codebooks": codec.n_coarse, "source_rate": rate,
                 "target_vocab": k, "target_codebooks": codec.n_fine, "target_rate": rate},
    }
    stages = dict(pipeline.stages)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for name, changes in wanted.items():
            cfg = stages[name].cfg.to_dict()
            if any(not math.isclose(float(cfg[key]), float(v)) for key, v in changes.items()):
                stages[name] = _resized(stages[name], changes)
    return Pipeline(visual_encoder=pipeline.visual_encoder, codec=codec, stages=stages, control=pipeline.control,
                    semantic_tokenizer=pipeline.semantic_tokenizer, fps=pipeline.fps)
