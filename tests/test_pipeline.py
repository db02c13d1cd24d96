import json
import shutil

import pytest
import torch

import tokmusic
from tokmusic import CheckpointError, ConfigError, VideoError
from tokmusic.stage_files import load_stage, save_stage
from tokmusic.stage import Stage, StageConfig
from tokmusic.testing import tiny_parts, tiny_pipeline, tiny_stage
from tokmusic.video import probe

from media import make_audio, make_video


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline(seed=0)


@pytest.fixture(scope="module")
def saved(pipe, tmp_path_factory):
    path = tmp_path_factory.mktemp("pipe") / "tiny"
    pipe.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_video(tmp_path_factory.mktemp("clip") / "clip.mp4", 3.0, fps=10)


@pytest.mark.parametrize("seconds", [1, 7, 23, 61])
def test_length_equals_video_duration(pipe, tmp_path, seconds):
    video = make_video(tmp_path / f"v{seconds}.mp4", seconds, fps=5, size=(32, 32))
    duration = probe(video).duration
    music = pipe.generate(video, seed=0, progress=False)
    assert music.sample_rate == pipe.codec.sample_rate
    assert music.waveform.dtype == torch.float32 and music.waveform.dim() == 2
    assert music.waveform.shape[-1] == round(duration * music.sample_rate)
    assert abs(music.duration - seconds) <= 1 / pipe.codec.frame_rate + 1e-3
    assert torch.isfinite(music.waveform).all()


@pytest.mark.slow
def test_ten_minute_video(pipe, tmp_path):
    video = make_video(tmp_path / "long.mp4", 600, fps=2, size=(32, 32))
    duration = probe(video).duration
    music = pipe.generate(video, seed=0, progress=False)
    assert music.waveform.shape[-1] == round(duration * music.sample_rate)
    assert abs(music.duration - 600) <= 1 / pipe.codec.frame_rate + 1e-3


def test_seconds_limits_the_length(pipe, clip):
    music = pipe.generate(clip, seed=0, seconds=1.5, progress=False)
    assert music.waveform.shape[-1] == round(1.5 * music.sample_rate)


def test_save_load_bit_identical(pipe, saved, clip):
    loaded = tokmusic.Pipeline.from_pretrained(saved)
    a = pipe.generate(clip, "slow melancholic piano", seed=3, progress=False)
    b = loaded.generate(clip, "slow melancholic piano", seed=3, progress=False)
    c = loaded.generate(clip, "slow melancholic piano", seed=4, progress=False)
    assert torch.equal(a.waveform, b.waveform)
    assert not torch.equal(a.waveform, c.waveform)
    # the top-level function takes a directory too
    d = tokmusic.generate(clip, "slow melancholic piano", pipeline=saved, seed=3, progress=False)
    assert torch.equal(a.waveform, d.waveform)


def test_prompt_reaches_the_stages_that_read_it(pipe, clip, monkeypatch):
    seen = {}
    for name, stage in pipe.stages.items():
        def spy(cond, *args, _generate=stage.generate_batch, _name=name, **kwargs):
            seen.setdefault(_name, []).append(cond.control)
            return _generate(cond, *args, **kwargs)
        monkeypatch.setattr(stage, "generate_batch", spy)
    pipe.generate(clip, "slow melancholic piano", seed=3, progress=False)
    expected = pipe.control.embed_text(["slow melancholic piano"])
    assert all(torch.equal(c, expected) for c in seen["semantic"])
    assert all(c is None for c in seen["coarse"] + seen["fine"])  # the tiny cards read no control there
    seen.clear()
    pipe.generate(clip, None, seed=3, progress=False)
    assert all(c is None for c in seen["semantic"])


def test_sampling_options(pipe, clip):
    greedy = dict(temperature=0.0, progress=False)
    a = pipe.generate(clip, seed=1, **greedy)
    b = pipe.generate(clip, seed=2, **greedy)
    assert torch.equal(a.waveform, b.waveform)  # greedy ignores the seed
    pipe.generate(clip, seed=1, temperature={"fine": 0.2}, top_k=5, top_p=0.9, seconds=1, progress=False)
    with pytest.raises(ConfigError, match="loudness"):
        pipe.generate(clip, loudness=3)
    with pytest.raises(ConfigError, match="stage name"):
        pipe.generate(clip, temperature={"finest": 0.2})
    with pytest.raises(ConfigError, match="top_p"):
        pipe.generate(clip, top_p=0.0)


def test_replace_stage_accepts_a_compatible_stage(tmp_path, clip):
    pipe = tiny_pipeline(seed=0)
    before = pipe.generate(clip, seed=0, progress=False, seconds=1)
    new = tiny_stage("coarse", tiny_parts(0), seed=99, d_model=64, n_heads=4)  # other widths, same interface
    save_stage(new, tmp_path / "coarse")
    pipe.replace_stage("coarse", tmp_path / "coarse")
    assert pipe.stages["coarse"].cfg.d_model == 64
    after = pipe.generate(clip, seed=0, progress=False, seconds=1)
    assert not torch.equal(before.waveform, after.waveform)


def test_replace_stage_refuses_an_incompatible_stage(pipe, tmp_path):
    fine = tiny_stage("fine", tiny_parts(0))
    save_stage(fine, tmp_path / "fine")
    with pytest.raises(CheckpointError, match="'fine' stage"):
        pipe.replace_stage("coarse", tmp_path / "fine")
    cfg = pipe.stages["coarse"].cfg.to_dict()
    cfg.update(target_codebooks=3)
    save_stage(Stage(StageConfig.from_dict(cfg)), tmp_path / "coarse3")
    with pytest.raises(CheckpointError, match=r"target_codebooks=3 but codec n_coarse=2") as err:
        pipe.replace_stage("coarse", tmp_path / "coarse3")
    assert "coarse3" in str(err.value)
    cfg = pipe.stages["semantic"].cfg.to_dict()
    cfg.update(visual_dim=7)
    with pytest.raises(CheckpointError, match="visual_dim=7"):
        pipe.replace_stage("semantic", Stage(StageConfig.from_dict(cfg)))
    with pytest.raises(ConfigError, match="unknown stage name"):
        pipe.replace_stage("loud", tmp_path / "fine")


def test_a_stage_trained_at_another_frame_rate_is_refused(pipe, tmp_path):
    """A stage records the fps its visual features were read at; a pipeline reading another rate refuses it,
    whether swapped in or found in a saved pipeline. A stage that records none (older checkpoints) still loads."""
    semantic = pipe.stages["semantic"]
    assert semantic.cfg.visual_fps == pipe.fps
    cfg = semantic.cfg.to_dict()
    cfg.update(visual_fps=pipe.fps * 2)
    save_stage(Stage(StageConfig.from_dict(cfg)), tmp_path / "fast")
    with pytest.raises(CheckpointError, match=rf"visual_fps={pipe.fps * 2} but pipeline fps={pipe.fps}") as err:
        pipe.replace_stage("semantic", tmp_path / "fast")
    assert "fast" in str(err.value)
    saved = tmp_path / "pipe"
    pipe.save_pretrained(saved)
    meta = json.loads((saved / "pipeline.json").read_text())
    (saved / "pipeline.json").write_text(json.dumps({**meta, "fps": pipe.fps * 2}))
    with pytest.raises(CheckpointError, match="semantic"):
        tokmusic.Pipeline.from_pretrained(saved)
    cfg.update(visual_fps=None)
    other = tiny_pipeline(seed=0)
    other.replace_stage("semantic", Stage(StageConfig.from_dict(cfg)))
    assert other.stages["semantic"].cfg.visual_fps is None


def test_stage_round_trip_is_exact(tmp_path):
    stage = tiny_stage("semantic", tiny_parts(0), seed=5)
    save_stage(stage, tmp_path / "s")
    loaded = load_stage(tmp_path / "s", kind="semantic")
    assert loaded.cfg == stage.cfg
    for (k, a), (_, b) in zip(stage.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), k
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["config.json", "model.safetensors"]


# -- bad input: a TokmusicError naming the file, nothing left behind ---------------------------------------------

@pytest.mark.parametrize("case", ["missing", "directory", "empty", "text", "truncated", "audio_only"])
def test_bad_videos(pipe, tmp_path, case):
    path = tmp_path / "bad.mp4"
    if case == "directory":
        path = tmp_path / "dir.mp4"
        path.mkdir()
    elif case == "empty":
        path.write_bytes(b"")
    elif case == "text":
        path.write_text("this is not a video\n" * 10)
    elif case == "truncated":
        make_video(path, 2.0)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    elif case == "audio_only":
        path = make_audio(tmp_path / "tone.m4a", 1.0)
    with pytest.raises(VideoError) as err:
        pipe.generate(path, progress=False)
    assert str(path) in str(err.value) or path.name in str(err.value)


def test_bad_arguments(pipe, clip):
    with pytest.raises(ConfigError, match="seconds"):
        pipe.generate(clip, seconds=-1)
    with pytest.raises(ConfigError, match="prompt is empty"):
        pipe.generate(clip, "   ")
    with pytest.raises(ConfigError):
        tokmusic.generate(clip, pipeline=42)


def _copy(saved, tmp_path):
    dst = tmp_path / "p"
    shutil.copytree(saved, dst)
    return dst


@pytest.mark.parametrize("missing", ["pipeline.json", "coarse/model.safetensors", "fine/config.json", "codec"])
def test_pipeline_with_a_part_missing(saved, tmp_path, missing):
    path = _copy(saved, tmp_path)
    target = path / missing
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    with pytest.raises(CheckpointError) as err:
        tokmusic.Pipeline.from_pretrained(path)
    assert str(path) in str(err.value)


def test_pickle_is_refused(saved, tmp_path):
    path = _copy(saved, tmp_path)
    weights = path / "semantic" / "model.safetensors"
    torch.save({"x": torch.zeros(1)}, path / "semantic" / "model.bin")
    weights.unlink()
    with pytest.raises(CheckpointError, match="never unpickle"):
        tokmusic.Pipeline.from_pretrained(path)


def test_stage_of_the_wrong_kind_in_a_pipeline(saved, tmp_path):
    path = _copy(saved, tmp_path)
    shutil.rmtree(path / "coarse")
    shutil.copytree(path / "fine", path / "coarse")
    with pytest.raises(CheckpointError, match="'fine' stage where a 'coarse' stage"):
        tokmusic.Pipeline.from_pretrained(path)


def test_unknown_pattern_in_a_stage_config(saved, tmp_path):
    path = _copy(saved, tmp_path)
    config = path / "fine" / "config.json"
    data = json.loads(config.read_text())
    data["tokmusic_stage"]["pattern"] = "zigzag"
    config.write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match="zigzag"):
        tokmusic.Pipeline.from_pretrained(path)


def test_other_format_version(saved, tmp_path):
    path = _copy(saved, tmp_path)
    meta = json.loads((path / "pipeline.json").read_text())
    meta["format_version"] = 99
    (path / "pipeline.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="format version 99"):
        tokmusic.Pipeline.from_pretrained(path)


def test_codec_sample_rate_must_match_the_pipeline(saved, tmp_path):
    path = _copy(saved, tmp_path)
    meta = json.loads((path / "pipeline.json").read_text())
    meta["sample_rate"] = 24000
    (path / "pipeline.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="sample_rate 24000 .* 16000 Hz"):
        tokmusic.Pipeline.from_pretrained(path)


def test_not_a_pipeline(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        tokmusic.Pipeline.from_pretrained(tmp_path / "nowhere")
    (tmp_path / "file").write_text("x")
    with pytest.raises(CheckpointError, match="is a file"):
        tokmusic.Pipeline.from_pretrained(tmp_path / "file")


def test_interrupted_save_leaves_the_old_pipeline(pipe, saved, tmp_path, monkeypatch):
    path = _copy(saved, tmp_path)
    before = sorted(p.relative_to(path) for p in path.rglob("*"))

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr("tokmusic.pipeline.write_stage_files", boom)
    with pytest.raises(RuntimeError):
        pipe.save_pretrained(path)
    assert sorted(p.relative_to(path) for p in path.rglob("*")) == before
    assert [p.name for p in tmp_path.iterdir()] == ["p"]  # no temporary directory left


def test_stages_in_bfloat16(clip):
    pipe = tiny_pipeline(seed=0).to("cpu", torch.bfloat16)
    assert pipe.stages["fine"].head.weight.dtype == torch.bfloat16
    music = pipe.generate(clip, "calm strings", seed=0, seconds=1.5, progress=False)
    assert music.waveform.dtype == torch.float32
    assert music.waveform.shape[-1] == round(1.5 * music.sample_rate)
    assert torch.isfinite(music.waveform).all()


def test_save_never_wipes_a_directory_that_is_not_a_pipeline(pipe, tmp_path):
    (tmp_path / "project").mkdir()
    (tmp_path / "project" / "important.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="not a pipeline directory"):
        pipe.save_pretrained(tmp_path / "project")
    assert (tmp_path / "project" / "important.txt").read_text() == "keep me"
    with pytest.raises(ConfigError, match="not a stage directory"):
        save_stage(pipe.stages["fine"], tmp_path / "project")


@pytest.mark.parametrize("option", [dict(temperature=float("nan")), dict(cfg_scale=float("inf")),
                                    dict(temperature="0.5"), dict(top_k=2.5), dict(seed=-1), dict(seed=2**64)])
def test_bad_options_are_config_errors(pipe, clip, option):
    with pytest.raises(ConfigError):
        pipe.generate(clip, "piano", progress=False, **option)


def test_video_must_be_a_path(pipe):
    with pytest.raises(VideoError, match="path"):
        pipe.generate(123)


def test_to_with_a_dtype_only_casts_the_stages():
    pipe = tiny_pipeline(seed=0).to(torch.bfloat16)
    assert pipe.stages["coarse"].head.weight.dtype == torch.bfloat16
    assert next(pipe.codec.model.parameters()).dtype == torch.float32


def test_one_generate_probes_the_video_once(pipe, clip):
    from tokmusic import video

    video._probe.cache_clear()
    tokmusic.generate(clip, pipeline=pipe, seed=0, seconds=1.0, progress=False)
    assert video._probe.cache_info().misses == 1


def test_samples_decoded_together_are_the_music_of_their_seeds(pipe, clip):
    together = pipe.generate_samples(clip, "slow melancholic piano", seeds=[3, 11], seconds=2, progress=False)
    alone = [pipe.generate(clip, "slow melancholic piano", seed=s, seconds=2, progress=False) for s in (3, 11)]
    assert len(together) == 2
    assert all(torch.equal(t.waveform, a.waveform) for t, a in zip(together, alone))
    assert not torch.equal(together[0].waveform, together[1].waveform)
    for bad in ([], 3, [3, -1], [3.5]):
        with pytest.raises(ConfigError, match="seed"):
            pipe.generate_samples(clip, seeds=bad)


def test_given_semantic_tokens_are_what_the_later_stages_read(pipe, clip):
    """The evaluation's hook: with the semantic tokens given, the coarse and fine stages run on them, and on
    the tokens a generation made they make exactly that generation's acoustic tokens."""
    made = pipe.generate_tokens(clip, seed=3, progress=False)
    again = pipe._tokens(clip, None, [3], None, False, {}, given={"semantic": made["semantic"]})[0]
    for name in ("semantic", "coarse", "fine"):
        assert torch.equal(again[name], made[name])
    other = torch.zeros_like(made["semantic"])
    moved = pipe._tokens(clip, None, [3], None, False, {}, given={"semantic": other})[0]
    assert torch.equal(moved["semantic"], other) and not torch.equal(moved["coarse"], made["coarse"])


def test_videos_decoded_together_are_the_music_of_each_alone(pipe, clip, tmp_path, monkeypatch):
    """generate_many: videos of the same length share each step, a shorter one goes in its own group, prompts
    and seeds go per video (None: no prompt), and each music is what generate gives for that video alone."""
    import tokmusic.generation

    other = make_video(tmp_path / "other.mp4", 3.0, fps=10, rotation=90)  # other pictures
    short = make_video(tmp_path / "short.mp4", 1.5, fps=10)
    videos, prompts, seeds = [clip, short, other, clip], ["slow melancholic piano", None, None, "fast"], [3, 4, 5, 6]
    batches, decode = [], tokmusic.generation.generate_long_batch

    def counted(stage, total, condition, params, generators, on_step=None):
        batches.append(len(generators))
        return decode(stage, total, condition, params, generators, on_step)

    monkeypatch.setattr(tokmusic.generation, "generate_long_batch", counted)
    together = pipe.generate_many(videos, prompts, seeds=seeds, seconds=2, progress=False)
    assert batches == [3, 3, 3, 1, 1, 1]  # each stage: the three 2 s videos together, then the 1.5 s one
    alone = [pipe.generate(v, p, seed=s, seconds=2, progress=False) for v, p, s in zip(videos, prompts, seeds)]
    assert [m.duration for m in together] == [a.duration for a in alone]
    assert together[1].duration < together[0].duration
    for t, a in zip(together, alone):
        torch.testing.assert_close(t.waveform, a.waveform, rtol=0, atol=1e-5)


def test_generate_many_checks_its_lists(pipe, clip):
    cases = [([], {}, "videos"), (clip, {}, "videos"), ([clip], {"prompts": ["a", "b"]}, "prompts"),
             ([clip, clip], {"seeds": [1]}, "seeds"), ([clip], {"seeds": [-1]}, "seed"),
             ([clip], {"prompts": [" "]}, "prompt")]
    for videos, kwargs, match in cases:
        with pytest.raises(ConfigError, match=match):
            pipe.generate_many(videos, **kwargs)


def test_a_prompt_reaches_the_stages_through_embed_prompt(pipe, clip, monkeypatch):
    """generate embeds its prompt with the control's embed_prompt (which a prompt prior overrides)."""
    seen = []
    original = pipe.control.embed_prompt

    def recorded(texts):
        seen.append(list(texts))
        return original(texts)

    monkeypatch.setattr(pipe.control, "embed_prompt", recorded)
    pipe.generate(clip, "slow melancholic piano", seed=0, seconds=1, progress=False)
    assert seen == [["slow melancholic piano"]]
