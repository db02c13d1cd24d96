"""Initialise a stage's decoder from MusicGen weights (transformers ``MusicgenForCausalLM``, safetensors), as
VidMuse initialises from MusicGen.

    MusicGen (model.decoder.layers.i.)            tokmusic (decoder.layers.i.)
      self_attn_layer_norm                          norm1
      self_attn.{q,k,v,out}_proj                    self_attn.q, self_attn.kv = [k; v], self_attn.out
      encoder_attn_layer_norm                       norm2
      encoder_attn.{q,k,v,out}_proj                 cross_attn.q, cross_attn.kv, cross_attn.out
      final_layer_norm, fc1, fc2                    norm3, ff.0, ff.3   (MusicGen has no FFN biases: zeros)
    model.decoder.layer_norm                        decoder.norm
    model.decoder.embed_tokens.k, lm_heads.k        target_emb.k, head rows of codebook k   (if vocabularies match)

The stage's codebooks are MusicGen's codebooks ``offset..offset+K-1`` (0 for coarse, n_coarse for fine).
MusicGen's sinusoidal positions have no counterpart (tokmusic uses rotary positions); the encoder, LST fusion
and everything else keep their initialisation.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from ..errors import CheckpointError
from ..fileio import load_tensors, refuse_pickles
from ..stage import Stage


def read_musicgen(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """(decoder state dict with ``model.decoder.`` / ``lm_heads.`` keys, its config or {}) from a directory or
    .safetensors file; MusicgenForConditionalGeneration checkpoints have their ``decoder.`` prefix removed."""
    path = Path(path)
    config: dict = {}
    if path.is_dir():
        refuse_pickles(path)
        files = sorted(path.glob("*.safetensors"))
        if not files:
            raise CheckpointError(f"{path}: no .safetensors weights; save the MusicGen model with "
                                  "save_pretrained(..., safe_serialization=True)")
        state: dict[str, torch.Tensor] = {}
        for file in files:
            state.update(load_tensors(file))
        if (path / "config.json").is_file():
            config = json.loads((path / "config.json").read_text())
            config = config.get("decoder", config)
    else:
        state = load_tensors(path)
    if any(k.startswith("decoder.model.decoder.") for k in state):
        state = {k.removeprefix("decoder."): v for k, v in state.items() if k.startswith("decoder.")}
    if not any(k.startswith("model.decoder.layers.") for k in state):
        raise CheckpointError(f"{path}: not MusicGen decoder weights (no 'model.decoder.layers.*' keys)")
    return state, config


def init_from_musicgen(stage: Stage, path: str | os.PathLike) -> str:
    """Copy matching MusicGen decoder weights into ``stage``; returns what was loaded (for the log).

    CheckpointError naming both values when the width, FFN width, heads or layer count differ.
    """
    state, config = read_musicgen(path)
    cfg = stage.cfg
    prefix = "model.decoder.layers"
    layers = 1 + max(int(k.split(".")[3]) for k in state if k.startswith(prefix + "."))
    width = state[f"{prefix}.0.self_attn.q_proj.weight"].shape[0]
    ffn = state[f"{prefix}.0.fc1.weight"].shape[0]
    checks = [("d_model", cfg.d_model, "hidden_size", width), ("d_ff", cfg.d_ff, "ffn_dim", ffn),
              ("decoder_layers", cfg.decoder_layers, "num_hidden_layers", layers)]
    if "num_attention_heads" in config:
        checks.append(("n_heads", cfg.n_heads, "num_attention_heads", config["num_attention_heads"]))
    bad = [f"stage {a}={x} but MusicGen {b}={y}" for a, x, b, y in checks if x != y]
    if bad:
        raise CheckpointError(f"{path}: cannot initialise the {cfg.kind!r} stage from it: " + "; ".join(bad)
                              + ". Use a card whose decoder matches the MusicGen model")
    mapped: dict[str, torch.Tensor] = {}
    for i in range(layers):
        src, dst = f"{prefix}.{i}", f"decoder.layers.{i}"
        for ours, theirs in (("self_attn", "self_attn"), ("cross_attn", "encoder_attn")):
            mapped[f"{dst}.{ours}.q.weight"] = state[f"{src}.{theirs}.q_proj.weight"]
            mapped[f"{dst}.{ours}.kv.weight"] = torch.cat([state[f"{src}.{theirs}.k_proj.weight"],
                                                           state[f"{src}.{theirs}.v_proj.weight"]])
            mapped[f"{dst}.{ours}.out.weight"] = state[f"{src}.{theirs}.out_proj.weight"]
        for ours, theirs in (("norm1", "self_attn_layer_norm"), ("norm2", "encoder_attn_layer_norm"),
                             ("norm3", "final_layer_norm")):
            for p in ("weight", "bias"):
                mapped[f"{dst}.{ours}.{p}"] = state[f"{src}.{theirs}.{p}"]
        for ours, theirs in (("ff.0", "fc1"), ("ff.3", "fc2")):
            weight = state[f"{src}.{theirs}.weight"]
            mapped[f"{dst}.{ours}.weight"] = weight
            mapped[f"{dst}.{ours}.bias"] = state.get(f"{src}.{theirs}.bias", torch.zeros(weight.shape[0]))
    for p in ("weight", "bias"):
        mapped[f"decoder.norm.{p}"] = state[f"model.decoder.layer_norm.{p}"]
    loaded = f"{layers} decoder layers"

    offset = cfg.source_codebooks if cfg.kind == "fine" else 0
    k, v = cfg.target_codebooks, cfg.target_vocab
    embeds = [state.get(f"model.decoder.embed_tokens.{offset + i}.weight") for i in range(k)]
    heads = [state.get(f"lm_heads.{offset + i}.weight") for i in range(k)]
    if all(e is not None and e.shape[0] == v + 1 for e in embeds) and all(h is not None and h.shape[0] == v for h in heads):
        for i, e in enumerate(embeds):
            mapped[f"target_emb.{i}.weight"] = e
        mapped["head.weight"] = torch.cat(heads)
        mapped["head.bias"] = torch.zeros(k * v)
        loaded += f" + embeddings and heads of codebooks {offset}..{offset + k - 1}"
    else:
        loaded += " (embeddings and heads left as initialised: the vocabularies or codebook counts differ)"
    own = stage.state_dict()
    for name, value in mapped.items():
        if own[name].shape != value.shape:
            raise CheckpointError(f"{path}: {name} has shape {tuple(value.shape)}, the stage needs "
                                  f"{tuple(own[name].shape)}")
    stage.load_state_dict(mapped, strict=False)
    return loaded
