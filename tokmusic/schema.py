"""What each JSON file tokmusic reads may hold: the type and range of every key, checked in one place.

    pipeline.json               pipeline_fields(): format, rates, one entry per part, where the stages live
      part entries              a Registry per part kind ("codec", "visual encoder", ...) knows each "type"
    <stage>/config.json         {"tokmusic_stage": StageConfig fields (nested "lst": LSTConfig fields)}
    stages/<kind>-<size>.json   card_fields(): kind, size, model (StageConfig fields), train (TrainConfig fields)

Field types come from the dataclasses' type hints, so a field added to StageConfig, LSTConfig or TrainConfig is
checked as soon as it exists; RULES add ranges by field name. Every size has a cap, so a huge value is an error
here instead of an out-of-memory later. Errors name the file and the key:

    …/coarse/config.json: tokmusic_stage.d_model must be a positive integer (at most 1000000), got "abc"
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from .errors import CheckpointError, ConfigError

MAX_SIZE = 1_000_000  # widths, heads, vocabularies, frames: beyond this is a typo
MAX_LAYERS = 1024  # layers and codebooks: each is a module built in a loop, so a huge count never finishes
MAX_NUMBER = 1e9  # any other number: steps, rates, seconds
MAX_TRANSFORMERS_NUMBER = 1e7  # any number in a transformers config.json (widths, layers, positions, rates)
MAX_SEED = 2**62


@dataclass(frozen=True)
class Field:
    """One JSON value: its type (bool, int, float, str, list or dict) and what else it must satisfy.

    ``low``/``high`` bound numbers (``above``/``below``: exclusive); ``choices`` lists allowed strings; ``null``
    allows null; ``required``: the key must be present. Lists: ``items`` and ``length``. Objects: ``fields``
    (None: any keys) or ``part`` (a Registry that dispatches on the object's "type").
    """

    type: type
    low: float | None = None
    high: float | None = None
    above: bool = False
    below: bool = False
    choices: tuple = ()
    null: bool = False
    required: bool = False
    items: "Field | None" = None
    length: int | None = None
    min_length: int = 0
    fields: Mapping[str, "Field"] | None = None
    part: "Registry | None" = None

    def describe(self) -> str:
        """What a valid value is, in words: "a positive integer (at most 1000000)"."""
        text = _describe(self)
        return f"{text} or null" if self.null else text


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else f"{x:g}"


def _describe(f: Field) -> str:
    if f.type is bool:
        return "true or false"
    if f.type is str:
        return "one of " + ", ".join(repr(c) for c in f.choices) if f.choices else "a string"
    if f.type is list:
        size = f"{f.length} " if f.length is not None else "non-empty " if f.min_length else ""
        return f"a {size}list of items, each {f.items.describe()}" if f.items else f"a {size}list"
    if f.type is dict:
        return f"a {f.part.part} config object" if f.part else "an object"
    noun = "an integer" if f.type is int else "a number"
    if f.low is None and f.high is None:
        return "an integer" if f.type is int else "a finite number"
    if f.type is int and f.low == 1 and not f.above:
        return "a positive integer" + (f" (at most {_num(f.high)})" if f.high is not None else "")
    if f.low is not None and (f.high is None or f.high >= MAX_NUMBER):  # that cap only guards against typos
        low = f"{noun} {'>' if f.above else '>='} {_num(f.low)}"
        return low if f.high is None else f"{low} (at most {_num(f.high)})"
    if f.low is None:
        return f"{noun} {'<' if f.below else '<='} {_num(f.high)}"
    if f.type is int:
        return f"{noun} in {_num(f.low)}..{_num(f.high)}"
    return f"{noun} in {'(' if f.above else '['}{_num(f.low)}, {_num(f.high)}{')' if f.below else ']'}"


# -- constructors for the common kinds of field --------------------------------------------------------------
# (keywords ``null`` and ``required`` as for Field)
def size(high: int = MAX_SIZE, **kw) -> Field:
    """A positive integer: a width, depth, count of heads, codebooks or ids."""
    return Field(int, 1, high, **kw)


def count(high: float = MAX_SIZE, **kw) -> Field:
    """An integer >= 0 (0 often switches something off)."""
    return Field(int, 0, high, **kw)


def number(low: float | None = -MAX_NUMBER, high: float | None = MAX_NUMBER, **kw) -> Field:
    """A finite number in [low, high] (``above``/``below``: the ends are exclusive)."""
    return Field(float, low, high, **kw)


def positive(high: float = MAX_NUMBER, **kw) -> Field:
    """A number > 0: a rate, a length in seconds, a learning rate."""
    return number(0, high, above=True, **kw)


def fraction(**kw) -> Field:
    """A number in [0, 1] (``below=True``: [0, 1))."""
    return number(0, 1, **kw)


def choice(*options: str, **kw) -> Field:
    return Field(str, choices=options, **kw)


def array(items: Field, length: int | None = None, min_length: int = 0, **kw) -> Field:
    return Field(list, items=items, length=length, min_length=min_length, **kw)


def obj(fields: Mapping[str, Field] | None = None, **kw) -> Field:
    return Field(dict, fields=fields, **kw)


# -- checking ------------------------------------------------------------------------------------------------
def shown(value: Any) -> str:
    """A value as JSON would show it (``"abc"``, ``null``, ``NaN``), cut short."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = f"{type(value).__name__} {value!r}"
    return text if len(text) <= 60 else text[:57] + "..."


def _join(key: str, name: str) -> str:
    return f"{key}.{name}" if key else name


def _is(value: Any, kind: type) -> bool:
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:  # an integer is a number too; NaN and infinities are not
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return isinstance(value, kind)


def check(value: Any, field: Field, where: str, key: str) -> None:
    """Raise ConfigError ("{where}: {key} must be ..., got ...") unless ``value`` satisfies ``field``."""
    def bad():
        raise ConfigError(f"{where}: {key or 'the value'} must be {field.describe()}, got {shown(value)}")

    if value is None:
        if not field.null:
            bad()
        return
    if not _is(value, field.type):
        bad()
    if field.type in (int, float):
        if field.low is not None and (value <= field.low if field.above else value < field.low):
            bad()
        if field.high is not None and (value >= field.high if field.below else value > field.high):
            bad()
    elif field.type is str and field.choices and value not in field.choices:
        bad()
    elif field.type is list:
        if (field.length is not None and len(value) != field.length) or len(value) < field.min_length:
            bad()
        if field.items is not None:
            for i, item in enumerate(value):
                check(item, field.items, where, f"{key}[{i}]")
    elif field.type is dict:
        if field.part is not None:
            field.part.check(value, where, key)
        elif field.fields is not None:
            check_object(value, field.fields, where, key)


def check_object(data: Any, fields: Mapping[str, Field], where: str, key: str = "") -> None:
    """Check a JSON object key by key: no unknown keys, required keys present, every value as its field says."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: {key + ' ' if key else ''}must be an object, got {shown(data)}")
    unknown = sorted(str(k) for k in data if k not in fields)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}{' in ' + key if key else ''}; allowed: {sorted(fields)}")
    for name, field in fields.items():
        if name in data:
            check(data[name], field, where, _join(key, name))
        elif field.required:
            raise ConfigError(f"{where}: {_join(key, name)} is missing; it must be {field.describe()}")


# -- fields of a dataclass, from its type hints --------------------------------------------------------------
def _from_hint(hint: Any, rule: Field | Mapping | None) -> Field:
    null = False
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        null = len(args) < len(typing.get_args(hint))
        hint = args[0] if len(args) == 1 else object
    if dataclasses.is_dataclass(hint):
        return obj(dataclass_fields(hint, rule or {}), null=null)
    base = typing.get_origin(hint) or hint
    if base not in (bool, int, float, str, list, dict):
        raise TypeError(f"no JSON schema for type {hint!r}")  # a programming error: add the type here
    if isinstance(rule, Field):
        return dataclasses.replace(rule, type=base, null=null or rule.null)
    if base in (int, float):  # no rule: any number, bounded against typos
        return Field(base, -MAX_NUMBER, MAX_NUMBER, null=null)
    return Field(base, null=null)


def dataclass_fields(cls: type, rules: Mapping[str, Field | Mapping]) -> dict[str, Field]:
    """One Field per field of dataclass ``cls``: type from its hint, range from ``rules[name]``; fields without a
    default are required."""
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        field = _from_hint(hints[f.name], rules.get(f.name))
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        out[f.name] = dataclasses.replace(field, required=required)
    return out


LST_RULES: dict[str, Field] = {
    "width": size(), "n_heads": size(), "short_layers": count(MAX_LAYERS), "long_layers": count(MAX_LAYERS),
    "fusion_layers": count(MAX_LAYERS), "long_frames": size(), "dropout": fraction(below=True),
    "short_channels": array(count(), length=2), "long_channels": array(count(), length=2),
}
STAGE_RULES: dict[str, Field | Mapping] = {
    "target_vocab": size(), "target_codebooks": size(MAX_LAYERS), "target_rate": positive(MAX_SIZE),
    "d_model": size(), "n_heads": size(), "encoder_layers": size(MAX_LAYERS), "decoder_layers": size(MAX_LAYERS),
    "d_ff": size(), "dropout": fraction(below=True), "visual_dim": count(), "lst": LST_RULES,
    "visual_fps": positive(), "control_dim": count(), "control_dropout": fraction(),
    "visual_dropout": fraction(below=True), "source_vocab": count(),
    "source_codebooks": size(MAX_LAYERS),
    "source_rate": number(0, MAX_SIZE), "window": positive(), "overlap": number(0), "temperature": number(0),
    "top_k": count(), "top_p": number(0, 1, above=True), "cfg_scale": number(0), "format_version": Field(int),
}
# pattern_kwargs by pattern; the stage sets empty_id itself
PATTERN_KWARGS: dict[str, dict[str, Field]] = {
    "delay": {"delays": array(count())}, "parallel": {}, "flatten": {}, "coarse_first": {"n_coarse": size()},
}
STEPS = Field(int, 1, MAX_NUMBER)
TRAIN_RULES: dict[str, Field] = {
    "lr": positive(), "weight_decay": number(0), "betas": array(fraction(below=True), length=2),
    "warmup_steps": count(MAX_NUMBER), "max_steps": STEPS, "min_lr_ratio": fraction(), "batch_size": size(),
    "grad_accum": size(), "clip_norm": number(0), "ema_decay": fraction(below=True), "crop_seconds": positive(),
    "mixed_precision": choice("auto", "no", "bf16", "fp16"), "save_every": STEPS, "keep_checkpoints": size(),
    "log_every": STEPS, "eval_every": count(MAX_NUMBER), "eval_items": count(), "seed": count(MAX_SEED - 1),
    "num_workers": count(1024), "log_with": choice("tensorboard", "none"),
}


@functools.cache
def stage_fields() -> dict[str, Field]:
    """The keys of ``tokmusic_stage`` in a stage's config.json (StageConfig)."""
    from .stage import StageConfig

    return dataclass_fields(StageConfig, STAGE_RULES)


@functools.cache
def train_fields() -> dict[str, Field]:
    """The keys of a card's "train" section (TrainConfig)."""
    from .training.config import TrainConfig

    return dataclass_fields(TrainConfig, TRAIN_RULES)


# Card "model" keys that are not StageConfig fields: which optional inputs the stage reads.
INPUT_SWITCHES = ("use_visual", "use_control")
# StageConfig fields that the pipeline's parts decide; a card cannot set them.
PIPELINE_DECIDES = ("kind", "target_vocab", "target_codebooks", "target_rate", "visual_dim", "visual_fps",
                    "control_dim", "source_vocab", "source_codebooks", "source_rate", "format_version")


@functools.cache
def card_fields() -> dict[str, Field]:
    """The keys of a stage card (``stages/<kind>-<size>.json``)."""
    from .stage import STAGES

    model = {name: dataclasses.replace(f, required=False) for name, f in stage_fields().items()
             if name not in PIPELINE_DECIDES}
    model.update({name: Field(bool) for name in INPUT_SWITCHES})
    return {"kind": Field(str, choices=STAGES, required=True), "size": Field(str), "description": Field(str),
            "model": obj(model, required=True), "train": obj(train_fields())}


def check_stage_config(data: Any, where: str, key: str = "") -> None:
    """Types and ranges of a StageConfig's JSON (``key``: where it sits in the file, e.g. "tokmusic_stage")."""
    check_object(data, stage_fields(), where, key)
    kwargs = PATTERN_KWARGS.get(data.get("pattern", "delay"))
    if kwargs is not None and "pattern_kwargs" in data:  # an unknown pattern is reported by the stage itself
        check_object(data["pattern_kwargs"], kwargs, where, _join(key, "pattern_kwargs"))


@functools.cache
def pipeline_fields() -> dict[str, Field]:
    """The keys of pipeline.json; each part entry ("path" + a config) is checked by its part's Registry."""
    from .stage import STAGES

    return {
        "format_version": Field(int, required=True),
        "tokmusic_version": Field(str),
        "sample_rate": size(),
        "fps": positive(1000),
        "visual": obj(required=True),
        "codec": obj(required=True),
        "control": obj(null=True),
        "semantic_tokenizer": obj(null=True),
        "stages": obj({name: Field(str, required=True) for name in STAGES}, required=True),
    }


def inside(root: Path, relative: str, where: str, key: str) -> Path:
    """``root / relative`` for a path from a pipeline file; CheckpointError unless it stays inside ``root``
    (no absolute paths, no "..", no symbolic link that leads out)."""
    rel = Path(relative)
    if not rel.parts or rel.is_absolute() or rel.anchor or ".." in rel.parts:
        raise CheckpointError(f"{where}: {key} is {shown(relative)}; it must name a folder inside the pipeline "
                              "directory by a relative path without '..'")
    path = root / rel
    real_root, real = root.resolve(), path.resolve()
    if real_root not in real.parents:
        raise CheckpointError(f"{where}: {key} ({shown(relative)}) leads to {real}, outside the pipeline directory; "
                              "copy that folder into the pipeline directory instead of linking to it")
    return path


def check_transformers_config(path: Path) -> None:
    """CheckpointError for a number in a transformers ``config.json`` that is not finite or is beyond any real
    model (a typo there would build a model that never finishes or does not fit in memory)."""
    try:
        tree = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return  # transformers reports an unreadable config.json itself
    stack = [("", tree)]
    while stack:
        key, value = stack.pop()
        if isinstance(value, dict):
            stack += [(_join(key, str(k)), v) for k, v in value.items()]
        elif isinstance(value, list):
            stack += [(f"{key}[{i}]", v) for i, v in enumerate(value)]
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and not (
                math.isfinite(value) and abs(value) <= MAX_TRANSFORMERS_NUMBER):
            raise CheckpointError(f"{path}: {key} is {shown(value)}; it must be a finite number of at most "
                                  f"{_num(MAX_TRANSFORMERS_NUMBER)} — restore the file or save the model again")


# -- parts: config "type" -> fields and loader ---------------------------------------------------------------
class Registry:
    """The config types of one kind of part (codec, visual encoder, ...): each type's fields and loader.

        VISUAL = Registry("visual encoder")
        VISUAL.register("motion", MotionEncoder.load, {"size": size(), "grid": size()}, needs_directory=False)
        encoder = VISUAL.load({"type": "motion", "size": 64}, None)

    A config is a JSON object with "type" plus that type's fields; ``load(directory, config)`` rebuilds the part
    from it and the files that ``save`` wrote into ``directory``.
    """

    def __init__(self, part: str):
        self.part = part
        self._types: dict[str, tuple[dict[str, Field], Callable, bool]] = {}

    def register(self, name: str, load: Callable, fields: Mapping[str, Field], *, needs_directory: bool = True):
        self._types[name] = ({"type": Field(str, required=True), **fields}, load, needs_directory)

    def needs_directory(self, config: dict) -> bool:
        """Whether a part of this (checked) config is rebuilt from files saved beside it."""
        return self._types[config["type"]][2]

    def check(self, config: Any, where: str | None = None, key: str = "", expect: str | None = None) -> None:
        """Check ``config``'s type and fields; ``expect``: the one type a caller can take."""
        where = where or f"{self.part} config"
        if not isinstance(config, dict):
            raise ConfigError(f"{where}: {key or 'the config'} must be a {self.part} config object, "
                              f"got {shown(config)}")
        kind = config.get("type")
        if not isinstance(kind, str) or kind not in self._types or (expect and kind != expect):
            known = [expect] if expect else sorted(self._types)
            raise ConfigError(f"{where}: unknown type {kind!r} in {_join(key, 'type')}; known types: {known}")
        check_object(config, self._types[kind][0], where, key)

    def load(self, config: Any, directory: str | os.PathLike | None, *, where: str | None = None, key: str = ""):
        """Check ``config`` (errors name ``where`` and ``key``), then rebuild the part from it and ``directory``."""
        self.check(config, where, key)
        _, load, needs_directory = self._types[config["type"]]
        if directory is None and needs_directory:
            raise ConfigError(f"{where or f'{self.part} config'}: a {config['type']!r} {self.part} needs the "
                              "directory its files were saved in")
        try:
            return load(None if directory is None else Path(directory), config)
        except ConfigError as exc:  # name the directory and the entry of the file that holds this config
            message = str(exc)
            if directory is not None and str(directory) not in message:
                message = f"{directory}: {message}"
            raise ConfigError(f"{where}: {key}: {message}" if key else message) from None


def check_generate_arguments(*, prompt: Any, seed: Any, seconds: Any, progress: Any) -> None:
    """ConfigError for arguments of ``generate`` of the wrong type or range (the video reader checks ``video``)."""
    if prompt is not None and not isinstance(prompt, str):
        raise ConfigError(f"prompt must be a string such as 'slow melancholic piano', or None; got {shown(prompt)}")
    if seed is not None and (not _is(seed, int) or not 0 <= seed < MAX_SEED):
        raise ConfigError(f"seed must be an integer in [0, 2**62), got {shown(seed)}")
    if seconds is not None and (not _is(seconds, float) or not seconds > 0):
        raise ConfigError(f"seconds must be a number > 0, got {shown(seconds)}")
    if not isinstance(progress, bool):
        raise ConfigError(f"progress must be True or False, got {shown(progress)}")
