"""benchmarks/known_answer.py and its judge (tokmusic.evaluation.known_answer): the measures on answers that are
known; and benchmarks/video_probe.py on the same small rendered world."""

import json
import math

import numpy as np
import pytest
import torch

from scripts import load_script
from tokmusic.evaluation.known_answer import (Judge, derangement, fold_tempo, read_truth, segment_tempi, spearman,
                                              steady)
from tokmusic.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def bench():
    return load_script("benchmarks/known_answer.py")


def test_fold_tempo_puts_octave_errors_back_in_range():
    assert fold_tempo(45.0) == 90.0
    assert fold_tempo(260.0) == 130.0
    assert fold_tempo(90.0) == 90.0
    # the corpus's range [60, 140) widened by 10 %: an estimate near its edges is trusted, not flipped
    assert fold_tempo(58.8) == 58.8 and fold_tempo(145.0) == 145.0
    assert fold_tempo(160.0) == 80.0 and fold_tempo(54.0) == 108.0
    assert np.isnan(fold_tempo(0.0))  # no pulse found


def test_spearman_matches_known_rank_correlations():
    x = [1.0, 2.0, 3.0, 4.0, 5.0]
    assert spearman(x, [10, 20, 30, 40, 50]) == pytest.approx(1.0)
    assert spearman(x, [5, 4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman(x, [1, 2, 3, 5, 4]) == pytest.approx(0.9)  # 1 - 6*2/(5*24)
    # the NaN pair is dropped; the tie shares rank 0.5: r = -4.5 / sqrt(5 * 4.5)
    assert spearman([1, 2, float("nan"), 3, 4], [3, 2, 9, 1, 1]) == pytest.approx(-0.9486833, abs=1e-6)
    assert np.isnan(spearman([1, 2], [1, 2]))


def test_derangement_moves_every_clip():
    for seed in range(20):
        p = derangement(7, seed)
        assert sorted(p) == list(range(7)) and all(i != j for i, j in enumerate(p))
    assert derangement(7, 3) == derangement(7, 3)


def test_score_checks_one_analysis_against_each_clip_answers():
    """``Judge.score`` on a known analysis (a beat every 0.5 s, restarts at 2.1 s and 6.0 s): its own clip's
    answers score every beat and the cut it restarts at; another clip's answers (the shuffled row) do not."""
    heard = {"duration": 8.0, "tempo": 240.0, "segment_tempi": [240.0, 120.0], "beats": np.arange(0.0, 8.0, 0.5),
             "restarts": np.array([2.1, 6.0]), "piano_score": 0.3}
    own = {"duration": 8.0, "cuts": [2.0, 6.05], "beats": list(np.arange(0.0, 8.0, 0.5))}
    other = {"duration": 8.0, "cuts": [3.3, 4.7], "beats": list(np.arange(0.25, 8.0, 0.5))}
    row = Judge.score(heard, own)
    assert row["phrase"].matched == 2 and row["bhs"] == 1.0 and row["cut_beat_hits"] == 2
    assert row["tempo_folded"] == fold_tempo(240.0) and row["piano_score"] == 0.3 and row["tempo_steady"] == 1.0
    wrong = Judge.score(heard, other)
    assert wrong["phrase"].matched == 0 and wrong["bhs"] == 0.0 and wrong["cut_beat_hits"] == 0


def clicks(sr: int, tempi: list[float], seconds: float = 8.0) -> torch.Tensor:
    """A click track: ``seconds`` at each tempo in turn (a 20 ms decaying 1 kHz burst on every beat)."""
    burst = torch.sin(2 * math.pi * 1000 * torch.arange(round(0.02 * sr)) / sr) * torch.linspace(1, 0, round(0.02 * sr))
    parts = []
    for bpm in tempi:
        part = torch.zeros(round(seconds * sr))
        for start in torch.arange(0, seconds - 0.05, 60.0 / bpm):
            i = round(float(start) * sr)
            part[i : i + burst.numel()] += burst
        parts.append(part)
    return torch.cat(parts)[None]


def test_steady_tempo_reads_each_segment():
    """A click track that keeps 120 BPM for 24 s is steady; one that goes 120 -> 85 -> 120 is not; an octave
    between segments (120 and 60 BPM, which an 8 s estimate cannot tell apart) still counts as steady."""
    sr = 16000
    kept = segment_tempi(clicks(sr, [120.0, 120.0, 120.0]), sr)
    assert len(kept) == 3 and all(abs(t - 120.0) / 120.0 < 0.04 for t in kept)
    changed = segment_tempi(clicks(sr, [120.0, 85.0, 120.0]), sr)
    assert abs(changed[1] - 85.0) / 85.0 < 0.04
    assert steady(kept) == 1.0 and steady(changed) == 0.0
    assert steady([120.0, 60.5, 119.0]) == 1.0 and steady([100.0, 0.0]) == 0.0 and math.isnan(steady([100.0]))
    assert len(segment_tempi(clicks(sr, [120.0], seconds=7.9), sr)) == 0  # no whole segment


@pytest.fixture(scope="module")
def small_world(tmp_path_factory):
    """(corpus, pipeline): 2 training and 3 held-out clips of at most 6 s and a saved random tiny pipeline."""
    for package in ("music21", "pretty_midi", "tinysoundfont", "skimage"):
        pytest.importorskip(package)
    from tokmusic.testing import tiny_pipeline

    root = tmp_path_factory.mktemp("known-answer")
    corpus_recipe = load_script("recipes/demo_corpus.py")
    assert corpus_recipe.main(["--out", str(root / "corpus"), "--count", "5", "--valid", "3", "--max-seconds", "6",
                               "--size", "64", "--quiet"]) == 0
    tiny_pipeline(seed=1).save_pretrained(root / "pipe")
    return root / "corpus", root / "pipe"


def test_codec_only_run_on_a_small_corpus(bench, small_world, capsys):
    """``--only codec`` on a rendered corpus: the codec rows of both systems, every measure in its range."""

    corpus, pipe = small_world
    capsys.readouterr()
    assert bench.main(["--corpus", str(corpus), "--pipeline", str(pipe), "--only", "codec", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["clips"] == 3 and set(result["codec"]) == {"pipeline", "random"}
    for row in result["codec"].values():
        assert row["mel_distance"] > 0 and row["si_snr"] < 60
        assert -1 <= row["chroma_agreement"] <= 1
    # as a table, with two more pipelines measured beside it
    assert bench.main(["--corpus", str(corpus), "--pipeline", str(pipe), "--against", str(pipe), str(pipe),
                       "--only", "codec"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == ["codec (pipeline)", "codec (random)", "codec (against)",
                                                      "codec (against_2)"]
    assert lines[0].replace("pipeline", "against") == lines[2]  # the same codec measures the same
    assert lines[0].replace("pipeline", "against_2") == lines[3]


def test_text_only_run_measures_the_prompts_alone(bench, small_world, capsys):
    """``--only text``: the text control of every system and nothing else; the same pipeline twice, with the same
    seeds, follows the prompts the same."""

    corpus, pipe = small_world
    capsys.readouterr()
    assert bench.main(["--corpus", str(corpus), "--pipeline", str(pipe), "--against", str(pipe), "--only", "text",
                       "--prompt-clips", "2", "--prompt-seconds", "2", "--json"]) == 0
    out = capsys.readouterr()
    result = json.loads(out.out)
    assert "prompts against 2/2" in out.err and "clip 1/" not in out.err  # no music generated for (b), (c), (e)
    truth = read_truth(corpus / "truth.json", need=("split",))
    result_names = sorted(n for n, c in truth.items() if c["split"] == "valid")[:2]
    assert "systems" not in result and set(result["text_control"]) == {"pipeline", "random", "against"}
    for row in result["text_control"].values():
        assert row["clips"] == 2 and row["fast_faster_than_slow"] in (0, 0.5, 1)
        assert row["piano_prompt_more_piano"] in (0, 0.5, 1)
        # each clip's readings, and the shares again over the clips whose video shows each instrument
        clips = row["per_clip"]
        assert [c["clip"] for c in clips] == result_names
        assert all(not c[k] <= 0 for c in clips for k in ("fast_bpm", "slow_bpm"))  # a tempo, or NaN where none is heard
        assert row["fast_faster_than_slow"] == sum(c["fast_bpm"] > c["slow_bpm"] for c in clips) / 2
        by = row["by_video_instrument"]
        assert sum(s["clips"] for s in by.values()) == 2 and set(by) == {c["instrument"] for c in clips}
        for kind, share in by.items():
            mine = [c for c in clips if c["instrument"] == kind]
            assert share["piano_prompt_more_piano"] == sum(
                c["piano_prompt_piano_score"] > c["organ_prompt_piano_score"] for c in mine) / len(mine)
    assert result["text_control"]["against"] == result["text_control"]["pipeline"]
    line = bench.text_lines(result)[0]
    assert line.startswith("text control (pipeline, 2 clips): fast prompt faster ")
    assert all(f"; {kind} videos " in line for kind in result["text_control"]["pipeline"]["by_video_instrument"])
    # --sampling is checked by each pipeline before any music is made: a value out of range, a wrong key
    with pytest.raises(ConfigError, match="top_p"):
        bench.main(["--corpus", str(corpus), "--pipeline", str(pipe), "--only", "text", "--prompt-clips", "1",
                    "--prompt-seconds", "2", "--sampling", '{"top_p": {"semantic": 2}}', "--quiet"])
    with pytest.raises(ConfigError, match="temprature"):
        bench.main(["--corpus", str(corpus), "--pipeline", str(pipe), "--only", "text",
                    "--sampling", '{"temprature": 0.5}'])
    assert "prompts" not in capsys.readouterr().err  # nothing generated
    with pytest.raises(SystemExit):
        bench.main(["--corpus", str(corpus), "--only", "text", "--sampling", "temperature=0.5"])
    assert "'temperature=0.5' is not JSON" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench.main(["--corpus", str(corpus), "--only", "text", "--prompt-clips", "0"])
    assert "--prompt-clips 0: give 1 or more clips" in capsys.readouterr().err


def test_full_run_scores_every_system_and_the_truth_scores_best(bench, small_world, capsys):
    """Every system gets every measure, and the ground truth, whose answers they are, finds its breaths at the
    cuts."""

    corpus, pipe = small_world
    capsys.readouterr()
    assert bench.main(["--corpus", str(corpus), "--pipeline", str(pipe), "--against", str(pipe), "--seconds", "6",
                       "--prompt-clips", "1", "--prompt-seconds", "2", "--tempo-seeds", "2", "--json"]) == 0
    out = capsys.readouterr()
    result = json.loads(out.out)  # stdout is the JSON object alone; progress went to stderr
    assert "clip 3/3" in out.err and "judging 3 clips" in out.err and "prompts pipeline 1/1" in out.err
    systems = result["systems"]
    assert set(systems) == {"truth", "pipeline", "shuffled", "random", "against", "codec", "given_semantic"}
    # the same pipeline given as --against, with the same seeds, makes the same music
    assert json.dumps(systems["against"], sort_keys=True) == json.dumps(systems["pipeline"], sort_keys=True)  # NaN too
    assert result["text_control"]["against"] == result["text_control"]["pipeline"]
    assert result["against"] == {"against": str(pipe)}
    # the tempo over two seed sets: the first is the table's; the same pipeline with the same seeds agrees again
    spread = result["tempo_seeds"]
    assert spread["seeds"] == [0, 1000] and len(spread["pipeline"]) == 2
    assert json.dumps(spread["pipeline"][0]) == json.dumps(systems["pipeline"]["tempo_spearman"])  # NaN too
    assert json.dumps(spread["against"]) == json.dumps(spread["pipeline"])
    bench.print_table(result)
    table = capsys.readouterr().out
    assert "against" in table.splitlines()[1] and "text control (against, 1 clips)" in table
    assert "tempo Spearman pipeline over seeds 0, 1000: " in table
    for row in systems.values():
        assert 0 <= row["phrase_f1"] <= 1 and 0 <= row["instrument_accuracy"] <= 1
    assert systems["truth"]["phrase_f1"] == 1.0
    assert systems["given_semantic"]["fd_spectral"] > 0 and systems["codec"]["fd_spectral"] > 0


@pytest.fixture(scope="module")
def small_data(small_world, tmp_path_factory):
    """The small world preprocessed for the tiny pipeline: its data dir."""
    corpus, pipe = small_world
    data = tmp_path_factory.mktemp("small-data") / "data"
    assert load_script("recipes/preprocess.py").main([str(corpus / "manifest.jsonl"), "--pipeline", str(pipe),
                                                      "--out", str(data), "--quiet"]) == 0
    return data


def test_video_probe_reads_cuts_and_scores_every_held_out_token(small_world, small_data, capsys):
    """``video_probe.py --cuts truth.json`` on the small world preprocessed for the tiny pipeline: every stage that
    reads video gets the near-cut row, over all three held-out clips, each token scored once."""

    corpus, pipe = small_world
    probe = load_script("benchmarks/video_probe.py")
    capsys.readouterr()
    assert probe.main(["--pipeline", str(pipe), "--data", str(small_data), "--items", "2",
                       "--cuts", str(corpus / "truth.json"), "--radius", "0.5", "--json"]) == 0
    stages = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["stages"]
    assert stages and "semantic" in stages
    for name, row in stages.items():
        near = row["near_cuts"]
        assert row["crops"] == 2 and near["items"] == 3 and near["radius_s"] == 0.5
        assert near["tokens_near"] > 0 and near["tokens_elsewhere"] > near["tokens_near"]
        assert all(near[f"loss_{k}"] > 0 for k in ("near_true", "near_reversed", "elsewhere_true", "elsewhere_reversed"))
    # the stages that read a control are asked about it, with the captions truth.json holds
    controlled = [row["control"] for row in stages.values() if "control" in row]
    assert controlled
    for c in controlled:
        assert c["crops"] == 2 and all(c[f"loss_{k}_control"] > 0 for k in ("own", "other", "none", "text"))
    # every token of every held-out clip is scored once
    from tokmusic.training.shards import TokenShards

    shards = TokenShards(small_data)
    tokens = sum(shards.load(entry)["semantic"].shape[-1] for entry in shards.entries("valid"))
    near = stages["semantic"]["near_cuts"]
    assert tokens - 3 <= near["tokens_near"] + near["tokens_elsewhere"] <= tokens  # the last token may be past the video


def test_feature_probe_on_the_small_world(small_world, small_data, tmp_path, capsys):
    """``feature_probe.py`` probes every member of the tiny pipeline's visual encoder and all its channels. When
    the training clips show one instrument only, it is one line naming the fix."""

    from tokmusic.errors import DataError

    corpus, pipe = small_world
    probe = load_script("benchmarks/feature_probe.py")
    truth = json.loads((corpus / "truth.json").read_text())
    train = sorted(name for name, clip in truth["clips"].items() if clip["split"] == "train")
    assert len(train) == 2
    for name in train:
        truth["clips"][name]["instrument"] = "piano"
    one = tmp_path / "one.json"
    one.write_text(json.dumps(truth))
    with pytest.raises(DataError, match=r"labelled by .*one\.json: .*only one label"):
        probe.main(["--pipeline", str(pipe), "--data", str(small_data), "--truth", str(one)])
    truth["clips"][train[1]]["instrument"] = "organ"
    relabelled = tmp_path / "truth.json"
    relabelled.write_text(json.dumps(truth))
    capsys.readouterr()
    assert probe.main(["--pipeline", str(pipe), "--data", str(small_data), "--truth", str(relabelled), "--every", "2",
                       "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["values"] == ["organ", "piano"]
    groups = result["groups"]
    assert list(groups)[-1] == "all channels" and len(groups) >= 3
    ranges = [row["channels"] for name, row in groups.items() if name != "all channels"]
    assert ranges[0][0] == 0 and all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
    assert groups["all channels"]["channels"] == [0, ranges[-1][1]]
    for row in groups.values():
        assert 0 <= row["held_out_accuracy"] <= 1 and 0.5 <= row["chance"] <= 1 and row["train_frames"] > 0
    with pytest.raises(DataError, match="takes 5 values"):  # every clip plays its own chorale
        probe.read_labels(str(relabelled), "chorale")


def test_instrument_probe_calls_the_tokens_generation_would_make(small_world, small_data, capsys):
    """``instrument_probe.py`` on the small world: one share per clip and seed, each the share of piano tokens in
    the semantic tokens ``generate_tokens`` gives for that seed; ``--colour`` needs a colour member."""

    import tokmusic
    from tokmusic.errors import DataError

    corpus, pipe = small_world
    probe = load_script("benchmarks/instrument_probe.py")
    capsys.readouterr()
    assert probe.main(["--corpus", str(corpus), "--data", str(small_data), "--pipeline", str(pipe), "--seeds", "3",
                       "5", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["clips"] == 3 and 0 <= result["accuracy"] <= 1 and 0.5 <= result["chance"] <= 1
    rows = {row["clip"]: row for row in result["per_clip"]}
    assert len(rows) == 3 and all(len(row["piano_share"]) == 2 for row in rows.values())
    # the token table, as the probe builds it, applied to what generation gives
    from tokmusic.training.shards import TokenShards

    truth = json.loads((corpus / "truth.json").read_text())["clips"]
    shards = TokenShards(small_data)
    loaded = tokmusic.Pipeline.from_pretrained(pipe)
    vocab = loaded.shape().semantic_vocab
    counts = torch.zeros(2, vocab)
    for entry in shards.entries("train"):
        name = next(n for n in truth if entry["video"].endswith(n))
        tokens = shards.load(entry)["semantic"].long().flatten()
        counts[("piano", "organ").index(truth[name]["instrument"])] += torch.bincount(tokens, minlength=vocab).float()
    piano = counts[0] > counts[1]
    name = sorted(rows)[0]
    tokens = loaded.generate_tokens(corpus / name, seed=5, progress=False)["semantic"].flatten()
    assert rows[name]["piano_share"][1] == pytest.approx(piano[tokens].float().mean().item(), abs=1e-3)
    with pytest.raises(DataError, match="no colour member"):
        probe.main(["--corpus", str(corpus), "--data", str(small_data), "--pipeline", str(pipe), "--colour", "piano"])


def test_read_cuts_takes_truth_json_or_a_plain_mapping_and_refuses_anything_else(tmp_path):
    probe = load_script("benchmarks/video_probe.py")
    truth = tmp_path / "truth.json"
    truth.write_text(json.dumps({"seed": 0, "clips": {"clips/0001.mp4": {"cuts": [1, 2.5], "bpm": 90}}}))
    assert probe.read_cuts(str(truth)) == {"clips/0001.mp4": [1.0, 2.5]}
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps({"/v/a.mp4": [0.5]}))
    assert probe.read_cuts(str(plain)) == {"/v/a.mp4": [0.5]}
    for bad in ("[1, 2]", '{"a.mp4": 3}', "not json"):
        plain.write_text(bad)
        with pytest.raises(DataError, match="cannot read cut times"):
            probe.read_cuts(str(plain))
    with pytest.raises(DataError, match="cannot read cut times"):
        probe.read_cuts(str(tmp_path / "missing.json"))


@pytest.mark.parametrize("script, args, named", [
    ("benchmarks/video_probe.py", ["--data", "{missing}"], "{missing}"),
    ("benchmarks/feature_probe.py", ["--data", "{missing}", "--truth", "{missing}"], "{missing}"),
    ("benchmarks/instrument_probe.py", ["--corpus", "{missing}", "--data", "{missing}"], "{missing}"),
    ("benchmarks/int8_agreement.py", ["--data", "{missing}"], "{missing}"),
    ("benchmarks/known_answer.py", ["--corpus", "{corpus}", "--pipeline", "{missing}", "--only", "codec"],
     "{missing}"),
    ("benchmarks/known_answer.py", ["--corpus", "{corrupt}", "--only", "codec"], "{corrupt}/truth.json"),
])
def test_a_wrong_path_is_one_line_naming_it(script, args, named, tmp_path):
    """A missing file, or a corrupt truth.json: one line naming it, exit 2, no traceback."""
    import os
    import subprocess
    import sys

    from scripts import ROOT

    corpus = tmp_path / "corpus"  # known_answer.py reads three held-out clips' answers before the pipeline
    corpus.mkdir()
    (corpus / "truth.json").write_text(json.dumps({"clips": {f"clips/{i:04d}.mp4": {"split": "valid"} for i in range(3)}}))
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "truth.json").write_text("{not json")
    paths = {"missing": tmp_path / "missing", "corpus": corpus, "corrupt": corrupt}
    argv = [a.format(**paths) for a in args]
    done = subprocess.run([sys.executable, str(ROOT / script), *argv], capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300)
    assert done.returncode == 2
    assert done.stderr.strip().startswith("tokmusic: error:") and named.format(**paths) in done.stderr
    assert "Traceback" not in done.stderr


def test_read_truth_names_the_file_of_anything_but_a_demo_corpus_truth_json(tmp_path):
    truth = tmp_path / "truth.json"
    truth.write_text(json.dumps({"clips": {"clips/0000.mp4": {"split": "valid", "instrument": "organ"}}}))
    assert read_truth(truth, need=("split", "instrument")) == {"clips/0000.mp4": {"split": "valid",
                                                                                "instrument": "organ"}}
    with pytest.raises(DataError, match=r"truth\.json: .*clip clips/0000\.mp4 has no tempo"):
        read_truth(truth, need=("tempo",))
    for text in ("{not json", json.dumps({"cuts": {}}), json.dumps({"clips": {"a.mp4": 3}}), json.dumps([1])):
        truth.write_text(text)
        with pytest.raises(DataError, match=r"truth\.json: not a demo corpus's truth\.json .*recipes/demo_corpus\.py"):
            read_truth(truth)
    with pytest.raises(DataError, match="missing.json"):
        read_truth(tmp_path / "missing.json")


def test_without_pipeline_it_measures_the_default_bundle(small_world):
    """No ``--pipeline``: the bundled default is measured (its codec row, as ``--pipeline`` of it gives). Run as
    a fresh process: in one that has already imported ``tokmusic.default`` a missing import would go unseen."""
    import os
    import subprocess
    import sys

    from scripts import ROOT
    from tokmusic.default import BUNDLE_DIR

    if not (BUNDLE_DIR / "pipeline.json").is_file():
        pytest.skip("no demo bundle installed")
    corpus, _ = small_world
    script = str(ROOT / "benchmarks" / "known_answer.py")

    def codec_rows(*extra):
        done = subprocess.run([sys.executable, script, "--corpus", str(corpus), "--only", "codec", "--json", *extra],
                              capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    default, named = codec_rows(), codec_rows("--pipeline", str(BUNDLE_DIR))
    assert default["pipeline"] == "default" and default["codec"] == named["codec"]


def test_tempo_seeds_below_one_is_refused_before_any_work(bench, tmp_path, capsys):
    """``--tempo-seeds 0`` is a usage error naming the flag, raised before the corpus is even read."""
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--corpus", str(tmp_path / "missing"), "--tempo-seeds", "0"])
    assert exit_info.value.code == 2 and "--tempo-seeds 0: give 1 or more" in capsys.readouterr().err
