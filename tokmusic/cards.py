"""Stage cards: the size and behaviour of a stage, independent of the pipeline it will serve.

A card (``stages/<kind>-<size>.json``) holds what a user chooses — widths, depths, LST fusion, pattern,
window and sampling defaults, training settings. Everything fixed by the pipeline — feature widths,
vocabularies, codebook counts, token rates — is filled in by ``stage_config`` from the pipeline's parts.

    {"kind": "coarse", "size": "small",
     "model": {"d_model": 512, "n_heads": 8, ..., "use_control": false},
     "train": {"lr": 3e-4, ...}}
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .compatibility import PipelineShape
from .errors import ConfigError
from .schema import INPUT_SWITCHES, PIPELINE_DECIDES, Field, card_fields, check, check_object
from .stage import StageConfig

DEFAULT_INPUTS = {"semantic": (True, True), "coarse": (True, False), "fine": (False, False)}


def read_card(path: str | os.PathLike) -> dict:
    """Read a stage card; ConfigError naming the file and the key if it is not one (its "train" section too)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: stage card not found; pass a JSON file like stages/semantic-tiny.json")
    try:
        card = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from None
    if isinstance(card, dict) and isinstance(card.get("model"), dict):
        clash = sorted(set(card["model"]) & set(PIPELINE_DECIDES))
        if clash:
            raise ConfigError(f"{path}: model keys {clash} come from the pipeline and cannot be set in a card")
    check_object(card, card_fields(), str(path))
    return card


def stage_config(card: dict, shape: PipelineShape, *, semantic_vocab: int | None = None,
                 semantic_rate: float | None = None, where: str = "stage card") -> StageConfig:
    """The StageConfig of ``card`` (as ``read_card`` returns it) for a pipeline of ``shape``.

    ``semantic_vocab`` / ``semantic_rate`` default to the pipeline's semantic tokenizer.
    """
    kind = card["kind"]
    model = dict(card["model"])
    default_visual, default_control = DEFAULT_INPUTS[kind]
    use_visual = model.pop("use_visual", default_visual)
    use_control = model.pop("use_control", default_control)
    for name, value in zip(INPUT_SWITCHES, (use_visual, use_control)):
        check(value, Field(bool), where, f"model.{name}")
    clash = sorted(set(model) & set(PIPELINE_DECIDES))
    if clash:
        raise ConfigError(f"{where}: {clash} come from the pipeline and cannot be set in a card")
    semantic_vocab = shape.semantic_vocab if semantic_vocab is None else semantic_vocab
    semantic_rate = shape.semantic_rate if semantic_rate is None else semantic_rate
    if kind in ("semantic", "coarse") and (semantic_vocab is None or semantic_rate is None):
        raise ConfigError(f"{where}: the pipeline has no semantic tokenizer to size the {kind!r} stage from")
    derived: dict = {
        "visual_dim": shape.visual_dim if use_visual else 0,
        "visual_fps": shape.fps if use_visual else None,
        "control_dim": (shape.control_dim or 0) if use_control else 0,
    }
    if kind == "semantic":
        derived.update(target_vocab=semantic_vocab, target_codebooks=1, target_rate=semantic_rate)
    elif kind == "coarse":
        derived.update(target_vocab=shape.codebook_size, target_codebooks=shape.n_coarse, target_rate=shape.frame_rate,
                       source_vocab=semantic_vocab, source_codebooks=1, source_rate=semantic_rate)
    else:
        derived.update(target_vocab=shape.codebook_size, target_codebooks=shape.n_fine, target_rate=shape.frame_rate,
                       source_vocab=shape.codebook_size, source_codebooks=shape.n_coarse, source_rate=shape.frame_rate)
    return StageConfig.from_dict({"kind": kind, **derived, **model}, where=where, key="model")
