"""The video probe (tokmusic.evaluation.teacher_forced): a stage that reads its video in time order must show it,
an untrained one must not."""

import torch

from tokmusic.evaluation.teacher_forced import frames_reversed, video_probe, with_video_of
from tokmusic.lst_fusion import LSTConfig
from tokmusic.stage import Stage, StageConfig

from test_learning import TINY, condition, fit

FRAMES = 10  # one frame per target step: 2 s at 5/s


def follow_the_frames(batch_size: int):
    """Frame t shows one of 4 colours (one-hot); token t is that colour: right only for a stage that lines its
    output up with the frames in time."""
    def batch(g):
        colours = torch.randint(0, 4, (batch_size, FRAMES), generator=g)
        visual = torch.nn.functional.one_hot(colours, 4).float()
        times = torch.arange(FRAMES).float().expand(batch_size, -1) / 5.0
        cond = condition(visual=visual, visual_times=times, visual_valid=torch.ones(batch_size, FRAMES, dtype=torch.bool))
        return cond, colours[:, None, :]
    return batch


def crops(n: int):
    cond, target = follow_the_frames(n)(torch.Generator().manual_seed(7))
    valid = torch.ones(1, FRAMES, dtype=torch.bool)
    return [(condition(**{k: None if v is None else v[i : i + 1] for k, v in vars(cond).items()}), target[i : i + 1],
             valid) for i in range(n)]


def test_video_probe_tells_a_stage_that_follows_its_video_from_one_that_does_not():
    torch.manual_seed(0)
    cfg = StageConfig("semantic", target_vocab=4, target_codebooks=1, target_rate=5.0, visual_dim=4,
                      lst=LSTConfig(enabled=False, width=32, n_heads=2, short_layers=1), window=2.0, overlap=1.0,
                      **TINY)
    untrained = Stage(cfg).eval()
    trained = Stage(cfg)
    fit(trained, follow_the_frames(16), steps=150, lr=3e-3)
    held = crops(8)
    before, after = video_probe(untrained, held), video_probe(trained, held)
    print(before, after)
    assert after["loss_true_video"] < 0.2  # chance ln 4 = 1.39
    assert after["loss_other_video"] > after["loss_true_video"] + 1.0 and after["other_video_worse"] == 1.0
    assert after["loss_frames_reversed"] > after["loss_true_video"] + 1.0 and after["frames_reversed_worse"] == 1.0
    # the baseline: an untrained stage's loss barely moves with the video
    assert abs(before["loss_other_video"] - before["loss_true_video"]) < 0.2
    assert abs(before["loss_frames_reversed"] - before["loss_true_video"]) < 0.2


def test_probe_conditionings_change_only_the_video():
    (a, _, _), (b, _, _) = crops(2)
    mixed = with_video_of(a, b)
    assert torch.equal(mixed.visual, b.visual) and torch.equal(mixed.visual_times, b.visual_times)
    backwards = frames_reversed(a)
    assert torch.equal(backwards.visual, a.visual.flip(1)) and torch.equal(backwards.visual_times, a.visual_times)
    # long-term frames inside the window run backwards too; those outside stay
    a.long, a.long_times = torch.arange(6.0).view(1, 6, 1), torch.tensor([[-2.0, 0.0, 0.5, 1.0, 1.8, 5.0]])
    a.long_valid, a.window_start = torch.ones(1, 6, dtype=torch.bool), torch.tensor([0.0])
    assert frames_reversed(a).long.flatten().tolist() == [0.0, 4.0, 3.0, 2.0, 1.0, 5.0]


EVENT_META = {"format_version": 1, "fps": 5.0, "sample_rate": 16000, "visual_dim": 4, "control_dim": 0,
              "codebook_size": 16, "n_q": 2, "n_coarse": 1, "frame_rate": 50.0, "semantic_vocab": 2,
              "semantic_rate": 5.0}


def event_data(path, items: int = 12, seconds: float = 8.0):
    """Items whose video flashes channel 0 at 6 random frames (the events; the other channels are noise) and
    whose target is 1 exactly at those frames, 0 elsewhere; the last 4 are held out. -> (data dir, events)."""
    from tokmusic.training.shards import ShardWriter, build_index, open_data_dir

    out = open_data_dir(path, EVENT_META)
    writer = ShardWriter(out, shard_size=4)
    g = torch.Generator().manual_seed(3)
    frames = int(seconds * 5)
    events = {}
    for i in range(items):
        at = torch.randperm(frames - 2, generator=g)[:6] + 1
        visual = torch.randn(frames, 4, generator=g) * 0.3
        visual[:, 0] = 0.0
        visual[at, 0] = 1.0
        semantic = torch.zeros(frames, dtype=torch.int32)
        semantic[at] = 1
        data = {"visual": visual.half(), "times": torch.arange(frames) / 5.0, "semantic": semantic,
                "codes": torch.randint(16, (2, int(seconds * 50)), generator=g).short()}
        video = f"/corpus/clips/{i:04d}.mp4"
        writer.add({"key": f"k{i}", "line": i + 1, "video": video, "split": "valid" if i >= items - 4 else "train",
                    "text": None, "duration": seconds}, data)
        events[f"clips/{i:04d}.mp4"] = sorted((at / 5.0).tolist())
    writer.flush()
    build_index(out)
    return out, events


def test_event_probe_tells_a_stage_that_follows_the_events_from_one_that_does_not(tmp_path):
    from tokmusic.conditioning import Conditioning
    from tokmusic.evaluation.teacher_forced import event_probe
    from tokmusic.training.dataset import StageDataset, collate
    from tokmusic.training.shards import TokenShards

    data_dir, events = event_data(tmp_path / "data")
    shards = TokenShards(data_dir, EVENT_META)
    torch.manual_seed(0)
    cfg = StageConfig("semantic", target_vocab=2, target_codebooks=1, target_rate=5.0, visual_dim=4,
                      lst=LSTConfig(enabled=False, width=32, n_heads=2, short_layers=1), window=4.0, overlap=2.0,
                      **TINY)
    untrained = Stage(cfg).eval()
    trained = Stage(cfg)
    train = StageDataset(shards, cfg, 4.0, "train")

    def batch(g):
        picks = torch.randint(0, len(train), (16,), generator=g).tolist()
        b = collate([train[(i, int(torch.randint(1 << 30, (1,), generator=g)))] for i in picks])
        target = b.pop("target")
        b.pop("target_valid")
        b.pop("keep_control")
        return Conditioning(**b), target

    fit(trained, batch, steps=200, lr=3e-3)
    before, after = event_probe(untrained, shards, events), event_probe(trained, shards, events)
    print(before, after)
    # 4 held-out clips of 8 s tiled into 4 s windows with 2 s overlap: every 40 target tokens scored once
    assert after["items"] == 4 and after["tokens_near"] + after["tokens_elsewhere"] == 4 * 40
    assert after["tokens_near"] == 4 * 6  # at 5 tokens/s only the event's own token lies within 0.12 s
    # trained: the events are predicted from the frames, and reversing the frames moves them
    assert after["loss_near_true"] < 0.3 and after["loss_near_reversed"] > after["loss_near_true"] + 1.0
    # the baseline: an untrained stage does no better near the events with the true frames than reversed
    assert abs(before["loss_near_true"] - before["loss_near_reversed"]) < 0.2
    assert before["loss_near_true"] > 0.4
    # events named by a path the data does not hold are skipped
    assert event_probe(trained, shards, {"elsewhere/0001.mp4": [1.0]})["items"] == 0


def test_control_probe_tells_a_stage_that_follows_its_control_from_one_that_does_not():
    """Trained on "token = the control's class" (70 % of tokens), a stage is sure with its own control, wrong with
    another clip's and unsure with none; a text embedding equal to the control does as well as it, one of another
    class as badly as another clip's. An untrained stage's loss barely moves."""
    from tokmusic.evaluation.teacher_forced import control_probe

    from test_learning import control_task

    torch.manual_seed(0)
    controls = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    cfg = StageConfig("semantic", target_vocab=8, target_codebooks=1, target_rate=25.0, control_dim=8,
                      control_dropout=0.3, window=1.0, overlap=0.5, **TINY)
    untrained = Stage(cfg).eval()
    trained = Stage(cfg)
    fit(trained, control_task(controls), steps=150)
    trained.eval()
    classes = [0, 1, 2, 3, 0, 1]  # the crop half a list away (i + 3) is always of another class
    held = [(condition(control=controls[c : c + 1], control_valid=torch.ones(1, dtype=torch.bool)),
             torch.tensor([[[c]]]), torch.ones(1, 1, dtype=torch.bool)) for c in classes]
    right = controls[classes]
    wrong = controls[[(c + 1) % 4 for c in classes]]
    after, before = control_probe(trained, held, right), control_probe(untrained, held, wrong)
    print(before, after)
    assert after["crops"] == 6 and after["loss_own_control"] < 0.6  # chance ln 8 = 2.08
    assert after["loss_other_control"] > after["loss_own_control"] + 1.5 and after["other_control_worse"] == 1.0
    assert after["loss_none_control"] > after["loss_own_control"] + 0.5 and after["none_control_worse"] == 1.0
    assert abs(after["loss_text_control"] - after["loss_own_control"]) < 1e-5 and after["text_control_worse"] == 0.0
    assert control_probe(trained, held, wrong)["loss_text_control"] > after["loss_own_control"] + 1.5
    # the baseline: an untrained stage's loss barely moves with its control
    for key in ("other", "none", "text"):
        assert abs(before[f"loss_{key}_control"] - before["loss_own_control"]) < 0.2
    assert "loss_text_control" not in control_probe(trained, held)
