import pytest
import torch

from tokmusic import ConfigError
from tokmusic.lst_fusion import LSTConfig
from tokmusic.sampling import SamplingParams
from tokmusic.stage import Conditioning, Stage, StageConfig
from tokmusic.stage_files import load_stage, save_stage

TINY = dict(d_model=32, n_heads=2, encoder_layers=2, decoder_layers=2, d_ff=64, dropout=0.0)
LST = LSTConfig(width=16, n_heads=2, short_layers=1, long_layers=1, fusion_layers=1, long_frames=4)


def stage_config(kind):
    if kind == "semantic":
        return StageConfig(kind, target_vocab=16, target_codebooks=1, target_rate=25.0, visual_dim=12, lst=LST,
                           control_dim=8, **TINY)
    if kind == "coarse":
        return StageConfig(kind, target_vocab=32, target_codebooks=2, target_rate=50.0, visual_dim=12, lst=LST,
                           source_vocab=16, source_rate=25.0, **TINY)
    return StageConfig(kind, target_vocab=32, target_codebooks=2, target_rate=50.0, source_vocab=32,
                       source_codebooks=2, source_rate=50.0, **TINY)


def conditioning(kind, b=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    cond = Conditioning()
    if kind in ("semantic", "coarse"):
        cond.visual = torch.randn(b, 6, 12, generator=g)
        cond.visual_times = torch.arange(6.0).expand(b, -1) / 2
        cond.visual_valid = torch.ones(b, 6, dtype=torch.bool)
        cond.long = torch.randn(b, 4, 12, generator=g)
        cond.long_times = torch.linspace(0.0, 9.0, 4).expand(b, -1)
        cond.long_valid = torch.ones(b, 4, dtype=torch.bool)
    if kind == "semantic":
        cond.control = torch.randn(b, 8, generator=g)
        cond.control_valid = torch.ones(b, dtype=torch.bool)
    if kind == "coarse":
        cond.source = torch.randint(0, 16, (b, 1, 20), generator=g)
        cond.source_valid = torch.ones(b, 20, dtype=torch.bool)
    if kind == "fine":
        cond.source = torch.randint(0, 32, (b, 2, 10), generator=g)
        cond.source_valid = torch.ones(b, 10, dtype=torch.bool)
    return cond


@pytest.mark.parametrize("kind", ["semantic", "coarse", "fine"])
def test_incremental_decoding_matches_full_forward(kind):
    torch.manual_seed(0)
    stage = Stage(stage_config(kind)).eval()
    cond = conditioning(kind, b=1)
    cfg = stage.cfg
    target = torch.randint(0, cfg.target_vocab, (1, cfg.target_codebooks, 9))
    with torch.no_grad():
        full = stage(cond, target)  # [1, K, S, V]
        seq = stage.pattern.build(target)
        inputs = torch.cat([torch.full_like(seq[..., :1], cfg.target_vocab), seq[..., :-1]], -1)
        times = stage.pattern.step_times(9).float()[None]
        state = stage.decoder.start(stage.encode(cond), max_len=seq.shape[-1])
        prefill = 3  # a multi-step prefill, then one step at a time
        h = stage.decoder.step(stage.embed_targets(inputs[..., :prefill]), torch.arange(prefill)[None], state,
                               times[:, :prefill])
        steps = [stage.logits_of(h)]
        for s in range(prefill, seq.shape[-1]):
            h = stage.decoder.step(stage.embed_targets(inputs[..., s : s + 1]), torch.tensor([[s]]), state,
                                   times[:, s : s + 1])
            steps.append(stage.logits_of(h))
        incremental = torch.cat(steps, 2)
    assert state.size == seq.shape[-1]
    torch.testing.assert_close(incremental, full, atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", ["semantic", "coarse", "fine"])
def test_loss_falls_when_overfitting(kind):
    torch.manual_seed(0)
    stage = Stage(stage_config(kind))
    cond = conditioning(kind)
    target = torch.randint(0, stage.cfg.target_vocab, (2, stage.cfg.target_codebooks, 10))
    opt = torch.optim.AdamW(stage.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        loss = stage.loss(cond, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[0] > 2.0
    assert losses[-1] < 0.25 * losses[0]


def test_loss_ignores_padded_timesteps():
    torch.manual_seed(0)
    stage = Stage(stage_config("fine")).eval()
    cond = conditioning("fine", b=1)
    target = torch.randint(0, 32, (1, 2, 8))
    valid = torch.tensor([[True] * 5 + [False] * 3])
    other = target.clone()
    other[..., 5:] = (other[..., 5:] + 1) % 32
    a = stage.loss(cond, target, valid)
    b = stage.loss(cond, other, valid)
    # padded timesteps feed later inputs but are never scored; the scored part of the loss is causal
    # in pattern steps, so changing only padded labels must not change it
    assert torch.equal(a, b)


@pytest.mark.parametrize("kind", ["semantic", "coarse", "fine"])
def test_generate_keeps_prompt_and_is_seeded(kind):
    torch.manual_seed(0)
    stage = Stage(stage_config(kind)).eval()
    cond = conditioning(kind, b=1)
    k = stage.cfg.target_codebooks
    prompt = torch.randint(0, stage.cfg.target_vocab, (k, 4))
    params = SamplingParams(temperature=1.0, top_k=8, cfg_scale=2.0)
    a = stage.generate(cond, 12, prompt, params, torch.Generator().manual_seed(1))
    b = stage.generate(cond, 12, prompt, params, torch.Generator().manual_seed(1))
    c = stage.generate(cond, 12, prompt, params, torch.Generator().manual_seed(2))
    assert a.shape == (k, 12)
    assert torch.equal(a[:, :4], prompt)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert a.min() >= 0 and a.max() < stage.cfg.target_vocab


def row(cond, i):
    """Row i of a batched conditioning, as a batch of 1."""
    return Conditioning(**{k: None if v is None else v[i : i + 1] for k, v in vars(cond).items()})


@pytest.mark.parametrize("kind", ["semantic", "coarse", "fine"])
def test_samples_decoded_together_are_the_samples_decoded_alone(kind):
    torch.manual_seed(0)
    stage = Stage(stage_config(kind)).eval()
    k = stage.cfg.target_codebooks
    params = SamplingParams(temperature=1.0, top_k=8, cfg_scale=2.0)
    prompts = torch.randint(0, stage.cfg.target_vocab, (3, k, 4))
    seeds = [5, 6, 7]
    # one conditioning for every sample (samples of one video) ...
    cond = conditioning(kind, b=1)
    together = stage.generate_batch(cond, 12, prompts, params, [torch.Generator().manual_seed(s) for s in seeds])
    alone = [stage.generate(cond, 12, p, params, torch.Generator().manual_seed(s)) for p, s in zip(prompts, seeds)]
    assert together.shape == (3, k, 12)
    assert all(torch.equal(t, a) for t, a in zip(together, alone))
    assert not torch.equal(together[0], together[1])
    # ... or one each
    conds = conditioning(kind, b=3)
    together = stage.generate_batch(conds, 12, prompts, params, [torch.Generator().manual_seed(s) for s in seeds])
    alone = [stage.generate(row(conds, i), 12, prompts[i], params, torch.Generator().manual_seed(s))
             for i, s in enumerate(seeds)]
    assert all(torch.equal(t, a) for t, a in zip(together, alone))
    with pytest.raises(ValueError, match="batch 1 or 3"):
        stage.generate_batch(conditioning(kind, b=2), 12, prompts, params, [None] * 3)


def test_a_sample_without_a_control_decoded_with_guided_ones_is_the_sample_without_one():
    """Rows of one batch may lack a control (videos without a prompt beside videos with one): under guidance such
    a row reads the null control in both halves, as it would decoded alone with no control."""
    torch.manual_seed(0)
    stage = Stage(stage_config("semantic")).eval()
    params = SamplingParams(temperature=1.0, top_k=8, cfg_scale=3.0)
    conds = conditioning("semantic", b=3)
    conds.control_valid = torch.tensor([True, False, True])
    seeds = [5, 6, 7]
    together = stage.generate_batch(conds, 24, None, params, [torch.Generator().manual_seed(s) for s in seeds])
    alone = [stage.generate(row(conds, i), 24, None, params, torch.Generator().manual_seed(s))
             for i, s in enumerate(seeds)]
    no_control = row(conds, 1)
    no_control.control = no_control.control_valid = None
    assert torch.equal(alone[1], stage.generate(no_control, 24, None, params, torch.Generator().manual_seed(6)))
    assert all(torch.equal(t, a) for t, a in zip(together, alone))


def test_a_stage_trains_after_generating():
    # generation (inference mode, eval) leaves the weights as they were, still trainable
    torch.manual_seed(0)
    stage = Stage(stage_config("coarse"))
    cond = conditioning("coarse", b=2)
    before = {k: v.clone() for k, v in stage.state_dict().items()}
    stage.generate(row(cond, 0), 6, None, SamplingParams(temperature=0.0))
    assert all(torch.equal(before[k], v) for k, v in stage.state_dict().items())
    target = torch.randint(0, stage.cfg.target_vocab, (2, stage.cfg.target_codebooks, 6))
    stage.loss(cond, target).backward()
    assert stage.head.weight.grad is not None and torch.isfinite(stage.head.weight.grad).all()


def test_greedy_generation_is_argmax_of_teacher_forced_logits():
    torch.manual_seed(0)
    stage = Stage(stage_config("coarse")).eval()
    cond = conditioning("coarse", b=1)
    out = stage.generate(cond, 7, None, SamplingParams(temperature=0.0))
    with torch.no_grad():
        logits = stage.pattern.revert(stage(cond, out[None]))  # [1, K, T, V]
    assert torch.equal(logits.argmax(-1)[0], out)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("kind", ["semantic", "coarse", "fine"])
def test_cuda_graph_decoding_changes_no_token(kind, monkeypatch):
    torch.manual_seed(0)
    stage = Stage(stage_config(kind)).eval().cuda()
    cond = conditioning(kind, b=1).to("cuda")
    prompt = torch.randint(0, stage.cfg.target_vocab, (stage.cfg.target_codebooks, 3), device="cuda")
    runs = {}
    for graphs in ("1", "0"):
        monkeypatch.setenv("TOKMUSIC_CUDA_GRAPHS", graphs)
        greedy = stage.generate(cond, 20, prompt, SamplingParams(temperature=0.0))
        sampled = stage.generate(cond, 20, prompt, SamplingParams(temperature=1.0, top_k=8, cfg_scale=2.0),
                                 torch.Generator("cuda").manual_seed(1))
        runs[graphs] = greedy, sampled
    assert torch.equal(runs["1"][0], runs["0"][0]) and torch.equal(runs["1"][1], runs["0"][1])


def test_compiled_decoding_changes_no_token(monkeypatch):
    """TOKMUSIC_COMPILE=1 runs the one-step decode through torch.compile (CPU here): greedy and seeded sampled
    tokens are those of eager decoding, and a second window of the same length reuses the compiled step."""
    torch.manual_seed(0)
    stage = Stage(stage_config("coarse")).eval()
    cond = conditioning("coarse", b=1)
    prompt = torch.randint(0, stage.cfg.target_vocab, (stage.cfg.target_codebooks, 3))
    runs = {}
    for flag in ("0", "1", "1"):
        monkeypatch.setenv("TOKMUSIC_COMPILE", flag)
        greedy = stage.generate(cond, 12, prompt, SamplingParams(temperature=0.0))
        sampled = stage.generate(cond, 12, prompt, SamplingParams(temperature=1.0, top_k=8, cfg_scale=2.0),
                                 torch.Generator().manual_seed(1))
        runs.setdefault(flag, []).append((greedy, sampled))
    eager, (compiled, again) = runs["0"][0], runs["1"]
    assert stage._compiled_step_at is not None
    for run in (compiled, again):
        assert torch.equal(run[0], eager[0]) and torch.equal(run[1], eager[1])


def test_config_errors():
    with pytest.raises(ConfigError, match="kind"):
        StageConfig("loud", target_vocab=4, target_codebooks=1, target_rate=1.0, visual_dim=4)
    with pytest.raises(ConfigError, match="decoder_layers"):
        StageConfig("semantic", target_vocab=4, target_codebooks=1, target_rate=1.0, visual_dim=4, decoder_layers=0)
    with pytest.raises(ConfigError, match="overlap"):
        StageConfig("fine", target_vocab=4, target_codebooks=2, target_rate=50.0, source_vocab=4, source_rate=50.0,
                    window=3.0, overlap=3.0)
    with pytest.raises(ConfigError, match="unknown key"):
        StageConfig.from_dict({"kind": "semantic", "target_vocab": 4, "target_codebooks": 1, "target_rate": 1.0,
                               "visual_dim": 4, "loudness": 11})
    with pytest.raises(ConfigError, match="pattern"):
        StageConfig("coarse", target_vocab=4, target_codebooks=2, target_rate=1.0, visual_dim=4, pattern="zigzag")
    with pytest.raises(ConfigError, match="visual_dropout"):
        StageConfig("semantic", target_vocab=4, target_codebooks=1, target_rate=1.0, visual_dim=4, visual_dropout=1.0)
    with pytest.raises(ConfigError, match="visual_dropout needs a visual input"):
        StageConfig("fine", target_vocab=4, target_codebooks=2, target_rate=50.0, source_vocab=4, source_rate=50.0,
                    visual_dropout=0.2)


def test_classifier_free_guidance_is_applied_against_the_null_control():
    torch.manual_seed(0)
    stage = Stage(stage_config("semantic")).eval()
    with torch.no_grad():  # make the control matter, so guidance changes the greedy choice
        stage.control_proj.weight.mul_(50)
    cond = conditioning("semantic", b=1)
    scale = 4.0
    out = stage.generate(cond, 8, None, SamplingParams(temperature=0.0, cfg_scale=scale))
    plain = stage.generate(cond, 8, None, SamplingParams(temperature=0.0, cfg_scale=1.0))
    null = Conditioning(**{**vars(cond), "control_valid": torch.tensor([False])})
    with torch.no_grad():
        guided = stage(null, out[None]) + scale * (stage(cond, out[None]) - stage(null, out[None]))
        conditional = stage(cond, plain[None])
    assert torch.equal(stage.pattern.revert(guided).argmax(-1)[0], out)
    assert torch.equal(stage.pattern.revert(conditional).argmax(-1)[0], plain)
    assert not torch.equal(out, plain)


def test_control_dropout_in_training_only():
    torch.manual_seed(0)
    cfg = stage_config("semantic")
    cfg.control_dropout = 1.0
    stage = Stage(cfg)
    cond = conditioning("semantic", b=2)
    target = torch.randint(0, 16, (2, 1, 6))
    null = Conditioning(**{**vars(cond), "control_valid": torch.tensor([False, False])})
    stage.train()
    # dropout 1.0 drops every control token: the loss equals the loss with the null token
    assert torch.allclose(stage.loss(cond, target), stage.eval().loss(null, target))
    assert not torch.allclose(stage.eval().loss(cond, target), stage.loss(null, target))
    # rows marked keep_control keep their control token whatever the dropout
    half = Conditioning(**{**vars(cond), "control_valid": torch.tensor([True, False])})
    kept = stage.train().loss(cond, target, keep_control=torch.tensor([True, False]))
    assert torch.allclose(kept, stage.eval().loss(half, target))
    assert not torch.allclose(kept, stage.loss(null, target))


def test_visual_dropout_and_guidance_against_the_null_video(tmp_path):
    torch.manual_seed(0)
    cfg = stage_config("semantic")
    cfg.visual_dropout, cfg.control_dropout = 0.999, 0.0
    stage = Stage(cfg)
    with torch.no_grad():  # a null video far from any real one, so dropping it shows in the loss
        stage.null_visual.normal_(0, 3.0)
    cond = conditioning("semantic", b=2)
    target = torch.randint(0, 16, (2, 1, 6))
    blind = Conditioning(**{**vars(cond), "visual_present": torch.tensor([False, False])})
    torch.manual_seed(1)  # dropout 0.999: every row's video is the null one in training, none in eval
    assert torch.allclose(stage.train().loss(cond, target), stage.eval().loss(blind, target))
    assert not torch.allclose(stage.loss(cond, target), stage.loss(blind, target))
    # no prompt: guided against neither control nor video, at cfg_scale
    stage.eval()
    one = conditioning("semantic", b=1)
    one.control, one.control_valid = None, None
    scale = 4.0
    out = stage.generate(one, 8, None, SamplingParams(temperature=0.0, cfg_scale=scale))
    none = Conditioning(**{**vars(one), "visual_present": torch.tensor([False])})
    with torch.no_grad():
        guided = stage(none, out[None]) + scale * (stage(one, out[None]) - stage(none, out[None]))
    assert torch.equal(stage.pattern.revert(guided).argmax(-1)[0], out)
    assert not torch.equal(out, stage.generate(one, 8, None, SamplingParams(temperature=0.0, cfg_scale=1.0)))
    save_stage(stage, tmp_path / "semantic")  # the null video travels with the stage
    loaded = load_stage(tmp_path / "semantic")
    assert torch.equal(loaded.null_visual, stage.null_visual)
    assert torch.equal(loaded.generate(one, 8, None, SamplingParams(temperature=0.0, cfg_scale=scale)), out)
    # a stage without a null video refuses a conditioning that asks for it
    with pytest.raises(ValueError, match="visual_dropout"):
        Stage(stage_config("semantic")).encode(blind)


def test_source_tokens_are_placed_at_their_times():
    # a coarse window starting on an odd 50/s frame: its first 25/s semantic token lies half a token off;
    # shifting the window start by exactly that offset must give the same encoder output
    torch.manual_seed(0)
    stage = Stage(stage_config("coarse")).eval()
    cond = conditioning("coarse", b=1)
    with torch.no_grad():
        ref = stage.encode(cond).x
        # the frames stay where they are in the video (window_start moves back by the same 0.02 s)
        shifted = Conditioning(**{**vars(cond), "source_start": torch.tensor([0.02]),
                                  "visual_times": cond.visual_times + 0.02, "window_start": torch.tensor([-0.02])})
        moved = stage.encode(shifted).x
        off = Conditioning(**{**vars(cond), "source_start": torch.tensor([0.02])})
        wrong = stage.encode(off).x
    torch.testing.assert_close(moved, ref, atol=1e-4, rtol=0)  # rotary positions are relative
    assert not torch.allclose(wrong, ref, atol=1e-4)


def test_padded_targets_read_as_empty():
    torch.manual_seed(0)
    stage = Stage(stage_config("coarse")).eval()
    cond = conditioning("coarse", b=1)
    target = torch.randint(0, 32, (1, 2, 8))
    valid = torch.tensor([[True] * 5 + [False] * 3])
    empty = target.clone()
    empty[..., 5:] = stage.cfg.target_vocab
    with torch.no_grad():
        logits = stage(cond, empty)
        layout = stage.pattern.layout(8)
        scored = (layout >= 0) & valid[0][layout.clamp(min=0)]
        expected = torch.nn.functional.cross_entropy(logits[0][scored], stage.pattern.build(target)[0][scored])
        torch.testing.assert_close(stage.loss(cond, target, valid), expected)
