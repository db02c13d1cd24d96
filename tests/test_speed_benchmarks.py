"""The speed benchmarks on tiny models: both sides of each comparison run, and the JSON has the promised keys."""

import json

import pytest
import torch

from scripts import load_script

decode_speed = load_script("benchmarks/decode_speed.py")
generation_speed = load_script("benchmarks/generation_speed.py")


@pytest.mark.parametrize("samples,weights,dtype", [(1, "fp32", torch.float32), (2, "int8", torch.float32),
                                                   (1, "fp32", torch.bfloat16)])
def test_decode_speed_compares_both_sides(samples, weights, dtype):
    dims = decode_speed.Dims(width=64, layers=2, heads=2, ffn=128, codebooks=4, vocab=64, memory=8)
    result = decode_speed.run("tiny", dims, steps=12, repeats=1, device=torch.device("cpu"), dtype=dtype,
                              samples=samples, weights=weights)
    assert {"ours_steps_per_s", "hf_steps_per_s", "ratio", "floor_steps_per_s", "config", "device"} <= set(result)
    assert result["ours_steps_per_s"] > 0 and result["hf_steps_per_s"] > 0
    assert result["ratio"] == pytest.approx(result["ours_steps_per_s"] / result["hf_steps_per_s"])
    assert result["config"]["samples"] == samples
    assert result["config"]["weights"] == ("int8" if weights == "int8" else str(dtype).removeprefix("torch."))
    assert result["config"]["decoder_params"] > 0


def test_decode_profile_accounts_for_the_whole_step():
    dims = decode_speed.Dims(width=64, layers=2, heads=2, ffn=128, codebooks=4, vocab=64, memory=8)
    result = decode_speed.profile("tiny", dims, steps=12, device=torch.device("cpu"), dtype=torch.float32,
                                  weights="fp32")
    kinds = result["ms_per_step_by_kind"]
    assert kinds["matrix products"] > 0 and kinds["attention"] > 0
    assert sum(kinds.values()) == pytest.approx(result["ms_per_step_profiled"])


def test_generation_speed_compares_samples_alone_and_together(capsys):
    assert generation_speed.main(["--seconds", "2", "--samples", "2", "--repeats", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["same_music"] is True
    assert result["one_by_one_s"] > 0 and result["together_s"] > 0
    assert result["speedup"] == pytest.approx(result["one_by_one_s"] / result["together_s"])


def test_generation_speed_compares_videos_alone_and_together(capsys):
    assert generation_speed.main(["--seconds", "2", "--videos", "2", "--repeats", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["videos"] == 2 and result["max_abs_difference"] < 1e-4
    assert result["speedup"] == pytest.approx(result["one_by_one_s"] / result["together_s"])
