import json
from pathlib import Path

import pytest
import torch

from tokmusic.cards import read_card
from tokmusic.errors import ConfigError
from tokmusic.training.checkpoints import check_data_order, data_order, optimizer_state, optimizer_tensors
from tokmusic.stage import DEFAULT_WINDOW
from tokmusic.training.config import TrainConfig
from tokmusic.training.ema import EMA
from tokmusic.training.trainer import _forget_log_after, append_log, hop_mismatch, lr_at

STAGES = Path(__file__).resolve().parents[1] / "stages"


@pytest.mark.parametrize("path", sorted(STAGES.glob("*.json")), ids=lambda p: p.stem)
def test_every_card_has_a_valid_train_section(path):
    card = read_card(path)
    cfg = TrainConfig.from_dict(card["train"], where=str(path))
    window = card["model"].get("window", DEFAULT_WINDOW[card["kind"]][0])
    assert window <= cfg.crop_seconds <= 10.0  # a crop holds a whole generation window; the cards stay CPU-sized


def test_lr_schedule_warmup_then_cosine():
    cfg = TrainConfig(lr=1.0, warmup_steps=4, max_steps=14, min_lr_ratio=0.1)
    assert [lr_at(s, cfg) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_at(9, cfg) == pytest.approx(0.55)  # half way through the cosine
    assert lr_at(14, cfg) == pytest.approx(0.1) and lr_at(100, cfg) == pytest.approx(0.1)


def test_optimizer_state_round_trips_without_pickles():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1, betas=(0.8, 0.9))
    for _ in range(2):
        model(torch.randn(4, 3)).sum().backward()
        opt.step()
    tensors, rest = optimizer_tensors(opt.state_dict())
    json.dumps(rest)  # the non-tensor part is plain JSON
    clone = torch.nn.Linear(3, 2)
    clone.load_state_dict(model.state_dict())
    opt2 = torch.optim.AdamW(clone.parameters(), lr=0.5)
    tensors = {k: v.clone() for k, v in tensors.items()}  # as if read back from the file
    opt2.load_state_dict(optimizer_state(tensors, json.loads(json.dumps(rest))))
    x = torch.randn(4, 3)
    for m, o in ((model, opt), (clone, opt2)):
        o.zero_grad()
        m(x).sum().backward()
        o.step()
    assert torch.equal(model.weight, clone.weight) and torch.equal(model.bias, clone.bias)


def test_ema_warms_up_and_copies():
    model = torch.nn.Linear(2, 1, bias=False)
    torch.nn.init.zeros_(model.weight)
    ema = EMA(model, decay=0.99)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(model)  # first decay min(0.99, 1/10) = 0.1
    assert torch.allclose(ema.shadow["weight"], torch.full((1, 2), 0.9))
    target = torch.nn.Linear(2, 1, bias=False)
    ema.copy_to(target)
    assert torch.equal(target.weight, ema.shadow["weight"])


def test_resume_refuses_another_data_order():
    saved = {"data_order": data_order(TrainConfig(batch_size=4, grad_accum=2, seed=3), num_processes=2)}
    check_data_order(saved, data_order(TrainConfig(batch_size=4, grad_accum=2, seed=3, lr=1.0), 2), Path("run"))
    for now, message in [
        (data_order(TrainConfig(batch_size=8, grad_accum=2, seed=3), 2), "--batch-size 4 and is resumed with 8"),
        (data_order(TrainConfig(batch_size=4, grad_accum=1, seed=3), 2), "--grad-accum 2 and is resumed with 1"),
        (data_order(TrainConfig(batch_size=4, grad_accum=2, seed=3), 1), "launch with --num_processes 2"),
        (data_order(TrainConfig(batch_size=4, grad_accum=2, seed=0), 2), "set train.seed to 3"),
    ]:
        with pytest.raises(ConfigError, match="run: this run was started with") as err:
            check_data_order(saved, now, Path("run"))
        assert message in str(err.value) and "start a new --out" in str(err.value)


def test_resume_checks_checkpoints_written_before_data_order_was_stored():
    saved = {"train": TrainConfig(batch_size=4).to_dict(), "num_processes": 2}
    check_data_order(saved, data_order(TrainConfig(batch_size=4), 2), Path("run"))
    with pytest.raises(ConfigError, match="--batch-size 4 and is resumed with 2"):
        check_data_order(saved, data_order(TrainConfig(batch_size=2), 2), Path("run"))


def test_log_lines_are_whole_and_a_torn_last_line_is_dropped_on_resume(tmp_path):
    log = tmp_path / "log.jsonl"
    for step in (2, 4, 6):
        append_log(log, {"step": step, "loss": 1.0 / step})
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == [2, 4, 6]
    with open(log, "a") as f:
        f.write('{"step": 8, "loss": 0.1')  # a crash in the middle of a line
    _forget_log_after(log, 6)
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == [2, 4, 6]
    append_log(log, {"step": 8, "loss": 0.1})
    _forget_log_after(log, 4)  # records of the steps a resume replays go
    assert log.read_text() == '{"step": 2, "loss": 0.5}\n{"step": 4, "loss": 0.25}\n'
    _forget_log_after(log, 0)  # a fresh start (no checkpoint yet) replays every step
    assert log.read_text() == ""


def test_a_prompt_prior_fitted_at_another_chunk_length_is_reported():
    """Prompts reach a stage through the prior, so its chunks must be as long as the training controls'."""
    entries = [{"control_hop": 4.0}, {"control_hop": 4.0}]
    assert hop_mismatch(4.0, entries, "data", "pipe") is None
    assert hop_mismatch(None, entries, "data", "pipe") is None  # a prior saved before hops were recorded
    message = hop_mismatch(1.0, entries, "data", "pipe")
    assert message.startswith("data embeds the music in 4 s chunks but pipe's prompt prior in 1 s ones")
    assert "fit_control.py --steps 0 --control-hop 4" in message
