"""Every key of every JSON file tokmusic reads, broken every way a user (or a bad disk) can break it: the load
either succeeds or raises a TokmusicError that names the file and the key — never another exception."""

import dataclasses
import json
import math
import shutil
import types
from pathlib import Path

import pytest

import tokmusic
import tokmusic.pipeline
from tokmusic import CheckpointError, ConfigError, TokmusicError
from tokmusic.cards import read_card, stage_config
from tokmusic.compatibility import PipelineShape
from tokmusic.schema import Field, MAX_SIZE, check, check_object, dataclass_fields, inside, size
from tokmusic.training.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
DELETE = object()
SHAPE = PipelineShape(visual_dim=62, control_dim=16, codebook_size=64, n_coarse=2, n_fine=2, frame_rate=50.0,
                      semantic_vocab=32, semantic_rate=25.0)
DEMO_SHAPE = dataclasses.replace(SHAPE, visual_dim=1317)  # EfficientNet-Lite0 (1280) + motion (30) + speed (1) + colour (6)


def nodes(tree, path=()):
    """(path, value) of every value below the root of a JSON tree; a path is a tuple of keys and list indices."""
    children = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list) else ()
    for key, value in children:
        yield path + (key,), value
        yield from nodes(value, path + (key,))


def mutations(path, value):
    """(label, replacement) for a value: wrong type, null, negative, NaN, huge, missing (keys), a list (objects)."""
    yield "wrong type", 12345 if isinstance(value, str) else "abc"
    yield "null", None
    yield "negative", -1
    yield "NaN", float("nan")
    yield "huge", 10**12
    if isinstance(path[-1], str):
        yield "missing", DELETE
    if isinstance(value, dict):
        yield "list", [1, 2]


def mutated(tree, path, replacement):
    tree = json.loads(json.dumps(tree))
    parent = tree
    for key in path[:-1]:
        parent = parent[key]
    if replacement is DELETE:
        del parent[path[-1]]
    else:
        parent[path[-1]] = replacement
    return tree


def cases(tree):
    for path, value in nodes(tree):
        for label, replacement in mutations(path, value):
            yield path, label, mutated(tree, path, replacement)


def key_name(path) -> str:
    """The last named key of a path: ("visual", "members", 0, "image_mean", 2) -> "image_mean"."""
    return [k for k in path if isinstance(k, str)][-1]


def expect_named(call, file, key, case, *, also=()):
    """Run ``call``: fine if it returns; a TokmusicError must name ``file`` and ``key`` (or both texts of a pair in
    ``also``); anything else fails the test. ``case`` describes the mutation for the failure message."""
    try:
        call()
    except TokmusicError as exc:
        message = str(exc)
        if (str(file) in message and key in message) or any(a in message and b in message for a, b in also):
            return "error"
        pytest.fail(f"{case}: the message does not name {file} and {key!r}: {message}")
    except Exception as exc:  # noqa: BLE001 — the point of the test
        pytest.fail(f"{case}: {type(exc).__name__} escaped: {exc}")
    return "loaded"


@pytest.fixture()
def cached_parts(monkeypatch):
    """Part and stage loads memoised by (config, directory): a case re-loads only what its mutation touched."""
    memo = {}

    def cached(name, load):
        def call(*args, **kwargs):
            key = (name, json.dumps(args[0], sort_keys=True, default=str), str(args[1]))
            if key not in memo:
                memo[key] = load(*args, **kwargs)
            return memo[key]
        return call

    real = tokmusic.pipeline._part_modules()
    modules = {key: types.SimpleNamespace(REGISTRY=m.REGISTRY, from_config=cached(key, m.from_config))
               for key, m in real.items()}
    monkeypatch.setattr(tokmusic.pipeline, "_part_modules", lambda: modules)
    real_load_stage = tokmusic.pipeline.load_stage
    stage = cached("stage", lambda data, directory, cfg, kind: real_load_stage(directory, kind=kind, cfg=cfg))
    monkeypatch.setattr(tokmusic.pipeline, "load_stage",
                        lambda directory, kind=None, cfg=None: stage(cfg.to_dict(), directory, cfg, kind))


def test_every_key_of_every_pipeline_file(saved, tmp_path, cached_parts):
    path = tmp_path / "p"
    shutil.copytree(saved, path)
    files = [path / "pipeline.json"] + [path / name / "config.json" for name in ("semantic", "coarse", "fine")]
    outcomes = {"loaded": 0, "error": 0}
    for file in files:
        original = file.read_text()
        tree = json.loads(original)
        # a missing key with a default can leave a config that no longer describes its weights
        weights = str(file.parent / "model.safetensors"), str(file)
        for key_path, label, data in cases(tree):
            file.write_text(json.dumps(data))
            also = [weights] if file.name == "config.json" else []
            outcome = expect_named(lambda: tokmusic.Pipeline.from_pretrained(path), file, key_name(key_path),
                                   f"{file}: {label} at {key_path}", also=also)
            outcomes[outcome] += 1
        file.write_text(original)
    tokmusic.Pipeline.from_pretrained(path)  # restored
    assert outcomes["error"] > 500 and outcomes["loaded"] > 20, outcomes  # ~860 and ~100 today


@pytest.mark.slow
def test_every_key_of_the_files_transformers_reads(saved, tmp_path):
    """The parts' own files (config.json, processor and tokenizer configs) belong to transformers; broken, they
    still give a TokmusicError naming the part's directory. (tokenizer.json is a vocabulary, not settings.)"""
    path = tmp_path / "p"
    shutil.copytree(saved, path)
    meta = json.loads((path / "pipeline.json").read_text())
    count = 0
    for key, module in tokmusic.pipeline._part_modules().items():
        directory = path / meta[key]["path"]
        config = {k: v for k, v in meta[key].items() if k != "path"}
        for file in sorted(directory.rglob("*.json")):
            if file.name == "tokenizer.json":
                continue
            original = file.read_text()
            for key_path, label, data in cases(json.loads(original)):
                file.write_text(json.dumps(data))
                expect_named(lambda: module.from_config(config, directory), directory, "",
                             f"{file}: {label} at {key_path}")
                count += 1
            file.write_text(original)
    assert count > 1000


def test_every_key_of_every_stage_card(tmp_path):
    cards = sorted((ROOT / "stages").glob("*.json"))
    assert len(cards) >= 3
    for card_path in cards:
        tree = json.loads(card_path.read_text())
        file = tmp_path / card_path.name
        shape = DEMO_SHAPE if card_path.stem.endswith("-demo") else SHAPE  # demo cards name the demo's channels
        for key_path, label, data in cases(tree):
            file.write_text(json.dumps(data))

            def load():
                card = read_card(file)
                cfg = stage_config(card, shape, where=str(file))
                TrainConfig.from_dict(card.get("train"), where=str(file)).crop_for(cfg, where=str(file))

            expect_named(load, file, key_name(key_path), f"{file}: {label} at {key_path}", also=[(str(file), "window")])


def test_every_key_of_a_train_section():
    tree = TrainConfig().to_dict()
    for key_path, label, data in cases(tree):
        expect_named(lambda: TrainConfig.from_dict(data, where="card.json"), "card.json", key_name(key_path),
                     f"{label} at {key_path}")


def test_messages_name_the_file_the_key_and_the_value(saved, tmp_path):
    path = tmp_path / "p"
    shutil.copytree(saved, path)
    config = path / "coarse" / "config.json"
    data = json.loads(config.read_text())
    data["tokmusic_stage"]["d_model"] = "abc"
    config.write_text(json.dumps(data))
    with pytest.raises(CheckpointError) as err:
        tokmusic.Pipeline.from_pretrained(path)
    assert str(err.value) == (f'{config}: tokmusic_stage.d_model must be a positive integer (at most {MAX_SIZE}), '
                              'got "abc"')


def test_weights_that_do_not_fit_their_config(saved, tmp_path):
    path = tmp_path / "p"
    shutil.copytree(saved, path)
    config = path / "fine" / "config.json"
    data = json.loads(config.read_text())
    data["tokmusic_stage"]["d_ff"] = 96  # valid, but not what the weights were made with
    config.write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match=r"fine/model\.safetensors: tensor '.*' is \[64, 32\] but .*fine/"
                                              r"config\.json makes it \[96, 32\]"):
        tokmusic.Pipeline.from_pretrained(path)


def test_part_weights_that_do_not_fit_their_config(saved, tmp_path):
    path = tmp_path / "p"
    shutil.copytree(saved, path)
    config = path / "visual" / "member0" / "config.json"
    data = json.loads(config.read_text())
    data["intermediate_size"] = 48
    config.write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match=r"member0/model\.safetensors: tensor 'encoder\.layers\.0\.mlp\.fc1\."
                                              r"bias' is \[64\] but .*member0/config\.json makes it \[48\]"):
        tokmusic.Pipeline.from_pretrained(path)


@pytest.mark.parametrize("where", ["../elsewhere", "/tmp", "", ".", "codec/../../x", "link"])
def test_paths_stay_inside_the_pipeline(saved, tmp_path, where):
    path = tmp_path / "p"
    shutil.copytree(saved, path)
    (tmp_path / "elsewhere").mkdir()
    (path / "link").symlink_to(tmp_path / "elsewhere")
    meta = json.loads((path / "pipeline.json").read_text())
    meta["codec"]["path"] = where
    (path / "pipeline.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="codec.path") as err:
        tokmusic.Pipeline.from_pretrained(path)
    assert str(path / "pipeline.json") in str(err.value)
    meta["codec"]["path"] = "codec"
    meta["stages"]["fine"] = where
    (path / "pipeline.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="stages.fine"):
        tokmusic.Pipeline.from_pretrained(path)


def test_a_link_that_stays_inside_is_fine(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path / "real")
    assert inside(tmp_path, "alias", "pipeline.json", "codec.path") == tmp_path / "alias"


def test_field_checks():
    check(3, size(), "f.json", "a")
    check(3.5, Field(float), "f.json", "a")
    for value, field in [(True, size()), (0, size()), (MAX_SIZE + 1, size()), (math.inf, Field(float)),
                         (1, Field(bool)), ("x", Field(int)), (None, Field(str)), ([1], Field(dict))]:
        with pytest.raises(ConfigError, match=r"f\.json: a must be"):
            check(value, field, "f.json", "a")
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['b'\] in x"):
        check_object({"b": 1}, {"a": size()}, "f.json", "x")
    with pytest.raises(ConfigError, match="x.a is missing"):
        check_object({}, {"a": size(required=True)}, "f.json", "x")


def test_new_dataclass_fields_are_checked_from_their_type_hints():
    from dataclasses import dataclass

    @dataclass
    class Config:
        width: int
        rate: float | None = None
        name: str = "x"
        on: bool = True

    fields = dataclass_fields(Config, {"width": size()})
    assert fields["width"].required and not fields["rate"].required and fields["rate"].null
    check_object({"width": 3, "rate": 1.5}, fields, "c.json")
    for bad in ({"width": 3, "rate": "fast"}, {"width": 3, "on": 1}, {"width": 3, "name": None}, {"rate": 1.0}):
        with pytest.raises(ConfigError, match="c.json"):
            check_object(bad, fields, "c.json")


@pytest.mark.parametrize("kwargs, words", [(dict(prompt=5), "prompt"), (dict(seconds="3"), "seconds"),
                                           (dict(seconds=float("nan")), "seconds"), (dict(seed=1.5), "seed"),
                                           (dict(seed=True), "seed"), (dict(progress="no"), "progress"),
                                           (dict(pipeline=42), "pipeline")])
def test_generate_refuses_arguments_of_the_wrong_type(tmp_path, kwargs, words):
    with pytest.raises(ConfigError, match=words):  # before the video is read or any model loads
        tokmusic.generate(tmp_path / "missing.mp4", **kwargs)


def test_public_entry_points_refuse_wrong_types(saved, tmp_path):
    from tokmusic.evaluation.report import evaluate
    from tokmusic.patterns import get_pattern

    pipe = tokmusic.Pipeline.from_pretrained(saved)
    with pytest.raises(ConfigError, match="seconds"):
        pipe.generate(tmp_path / "missing.mp4", seconds="3")
    with pytest.raises(ConfigError, match="unknown stage name 3"):
        pipe.replace_stage(3, saved / "coarse")
    with pytest.raises(ConfigError, match="stage directory or a tokmusic Stage"):
        pipe.replace_stage("coarse", 3.5)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        pipe.save_pretrained(tmp_path / "file" / "pipe")
    with pytest.raises(ConfigError, match="output must be a file path"):
        pipe.save_pretrained(None)
    with pytest.raises(ConfigError, match="pipeline directory"):
        tokmusic.Pipeline.from_pretrained(123)
    for args in [("delay", "4"), ("delay", 0), ("delay", True), (None, 4)]:
        with pytest.raises(ConfigError):
            get_pattern(*args)
    with pytest.raises(ConfigError, match="delays"):
        get_pattern("delay", 2, delays="ab")
    for kwargs, words in [(dict(k=0), "k must be"), (dict(tolerance="x"), "tolerance"), (dict(videos=3), "videos")]:
        with pytest.raises(ConfigError, match=words):
            evaluate(tmp_path, tmp_path, **kwargs)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # nothing written
