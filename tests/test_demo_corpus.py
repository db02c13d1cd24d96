"""recipes/demo_corpus.py: the demo world's clips carry the correspondences its ground truth claims."""

import json

import numpy as np
import pytest

pytest.importorskip("music21")
pytest.importorskip("tinysoundfont")
pytest.importorskip("skimage")

from scripts import load_script  # noqa: E402
from tokmusic.audio import load_audio  # noqa: E402
from tokmusic.evaluation.structure import pause_ends  # noqa: E402
from tokmusic.evaluation.video_events import analyze_video  # noqa: E402
from tokmusic.video import probe  # noqa: E402


def demo_corpus():
    return load_script("recipes/demo_corpus.py")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    args = ["--out", str(out), "--count", "3", "--valid", "1", "--max-seconds", "8", "--size", "64", "--quiet"]
    assert demo_corpus().main(args) == 0
    return out


def test_manifest_truth_and_held_out_split(corpus):
    dc = demo_corpus()
    lines = [json.loads(line) for line in (corpus / "manifest.jsonl").read_text().splitlines()]
    truth = json.loads((corpus / "truth.json").read_text())["clips"]
    assert [line["split"] for line in lines] == ["train", "train", "valid"]
    assert len({truth[line["video"]]["chorale"] for line in lines}) == 3  # no chorale twice
    for line in lines:
        clip = truth[line["video"]]
        assert line["text"] == clip["caption"]
        assert f"a {dc.tempo_word(clip['tempo'])} Bach chorale" in clip["caption"]
        assert dc.INSTRUMENT_WORDS[clip["instrument"]] in clip["caption"]
        assert clip["pan_pixels_per_second"] == pytest.approx(clip["tempo"] / 60 * dc.PAN_PIXELS_PER_BEAT, abs=1e-3)
        pool = dc.VALID_IMAGES if clip["split"] == "valid" else dc.TRAIN_IMAGES
        assert set(clip["photographs"]) <= set(pool)
        assert len(clip["photographs"]) == len(clip["cuts"]) + 1 >= 2


def test_cuts_fall_where_the_music_breathes(corpus):
    truth = json.loads((corpus / "truth.json").read_text())["clips"]
    for name, clip in truth.items():
        info = probe(corpus / name)
        assert info.duration == pytest.approx(clip["duration"], abs=0.2)
        wave = load_audio(corpus / name, 16000, 1)
        np.testing.assert_allclose(pause_ends(wave, 16000), clip["cuts"], atol=0.05)  # the music resumes at each cut
        detected = analyze_video(corpus / name).cuts
        assert all(np.min(np.abs(detected - c)) <= 0.15 for c in clip["cuts"])  # and the picture changes there
        beats = np.diff(clip["beats"])
        assert np.median(beats) == pytest.approx(60 / clip["tempo"], rel=1e-3)


def test_same_arguments_same_clip_and_rerun_keeps_files(corpus, tmp_path):
    dc = demo_corpus()
    truth = json.loads((corpus / "truth.json").read_text())["clips"]
    first = truth["clips/0000.mp4"]
    mtime = (corpus / "clips/0000.mp4").stat().st_mtime_ns
    chorale = next(p for p in dc.chorales() if p.endswith(first["chorale"]))
    again = dc.make_clip(tmp_path / "again.mp4", 0, chorale, "train", 0, 8.0, 64, 8)
    assert again == first
    np.testing.assert_array_equal(load_audio(tmp_path / "again.mp4", 16000, 1), load_audio(corpus / "clips/0000.mp4", 16000, 1))
    args = ["--out", str(corpus), "--count", "3", "--valid", "1", "--max-seconds", "8", "--size", "64", "--quiet"]
    assert dc.main(args) == 0
    assert (corpus / "clips/0000.mp4").stat().st_mtime_ns == mtime


def test_breaths_last_whole_beats_of_varying_length():
    dc = demo_corpus()
    notes = [(float(q), q + 1.0, 0, 60) for q in range(12)]  # twelve quarter notes, phrases end at 4, 8, 12
    plan = dc.plan_clip(notes, [4.0, 8.0, 12.0], bpm=120.0, max_seconds=30.0, breaths=[1, 3, 2])
    spb = 0.5
    assert plan["phrase_ends"] == pytest.approx([dc.LEAD_IN + 4 * spb, dc.LEAD_IN + 9 * spb, dc.LEAD_IN + 16 * spb])
    assert plan["cuts"] == pytest.approx([dc.LEAD_IN + 5 * spb, dc.LEAD_IN + 12 * spb])  # after 1 beat, then 3
    starts = sorted({e[0] for e in plan["events"]})
    assert starts[4] == pytest.approx(plan["cuts"][0]) and starts[8] == pytest.approx(plan["cuts"][1])
    with pytest.raises(ValueError, match="3 phrases need as many breaths"):
        dc.plan_clip(notes, [4.0, 8.0, 12.0], bpm=120.0, max_seconds=30.0, breaths=[1])


def test_breath_lengths_are_drawn_per_phrase(corpus):
    dc = demo_corpus()
    truth = json.loads((corpus / "truth.json").read_text())["clips"]
    gaps = []
    for clip in truth.values():
        beat = 60 / clip["tempo"]
        gaps += [(c - e) / beat for c, e in zip(clip["cuts"], clip["phrase_ends"])]
    assert gaps and all(1 - 1e-3 <= g <= dc.MAX_BREATH_BEATS + 1e-3 for g in gaps)
    np.testing.assert_allclose(gaps, np.round(gaps), atol=1e-3)
