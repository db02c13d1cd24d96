"""Preprocessing: per-chunk control embeddings, and which failures skip an item and which stop the run."""

from pathlib import Path

import pytest
import torch

from tokmusic.control import tiny_control
from tokmusic.errors import ConfigError, DataError, VideoError
from tokmusic.training import preprocess as prep
from tokmusic.training.manifest import ManifestItem
from tokmusic.training.shards import build_index, finished_items, open_data_dir

SR = 48_000  # the tiny CLAP's rate (no resampling) and 2 s windows


@pytest.fixture(scope="module")
def control():
    return tiny_control(seed=0)


def noise(seconds: float, seed: int = 1) -> torch.Tensor:
    return 0.3 * torch.randn(1, round(seconds * SR), generator=torch.Generator().manual_seed(seed))


def test_chunks_are_embedded_one_by_one(control):
    x = noise(5.0)
    chunks = control.embed_audio_chunks(x, SR, 2.0)
    assert chunks.dtype == torch.float32 and chunks.shape == (3, 16)
    # [0, 2) and [2, 4); the last chunk [4, 5) is short, so it is embedded from the last 2 s
    expected = torch.stack([control.embed_audio(x[:, s : s + 2 * SR], SR) for s in (0, 2 * SR, 3 * SR)])
    torch.testing.assert_close(chunks, expected, rtol=0, atol=1e-6)


def test_chunks_shorter_and_longer_than_the_window(control):
    x = noise(3.0, seed=2)
    one_second = control.embed_audio_chunks(x, SR, 1.0)  # repeat-padded to the 2 s window, like embed_audio
    expected = torch.stack([control.embed_audio(x[:, s * SR : (s + 1) * SR], SR) for s in range(3)])
    torch.testing.assert_close(one_second, expected, rtol=0, atol=1e-6)
    whole = control.embed_audio_chunks(x, SR, 5.0)  # one chunk of 3 s: averaged over two windows
    torch.testing.assert_close(whole, control.embed_audio(x, SR)[None], rtol=0, atol=1e-6)
    assert control.embed_audio_chunks(noise(0.4), SR, 1.0).shape == (1, 16)


@pytest.mark.parametrize("hop", [0, -1.0, float("inf"), True])
def test_bad_hop(control, hop):
    with pytest.raises(ConfigError, match="hop"):
        control.embed_audio_chunks(noise(1.0), SR, hop)


# --------------------------------------------------------------------------------------- failures in a run

def items(n):
    return [ManifestItem(i + 1, Path(f"v{i}.mp4"), None, None, "train") for i in range(n)]


def fake_prepare(bug_at=None, bug=None):
    """prepare_item stand-in: line 2 is bad data, line ``bug_at`` raises ``bug``, the rest succeed."""

    def prepare(pipeline, item, **kw):
        if item.line == 2:
            raise VideoError(f"{item.video}: not a video")
        if item.line == bug_at:
            raise bug
        info = {"key": item.key, "line": item.line, "video": str(item.video), "split": "train", "duration": 1.0}
        return info, {"codes": torch.zeros(2, 50, dtype=torch.int16)}

    return prepare


def test_bad_data_is_recorded_and_skipped(tmp_path, monkeypatch):
    monkeypatch.setattr(prep, "prepare_item", fake_prepare())
    data = open_data_dir(tmp_path / "data", {})
    report = prep.preprocess(None, items(4), data, shard_size=10, progress=False)
    assert report.done == 3 and [f["reason"] for f in report.failed] == ["VideoError: v1.mp4: not a video"]
    index = build_index(data)
    assert [e["line"] for e in index["items"]] == [1, 3, 4] and [f["line"] for f in index["failed"]] == [2]


@pytest.mark.parametrize("bug", [RuntimeError("CUDA out of memory"), KeyError("codes"), KeyboardInterrupt()],
                         ids=lambda e: type(e).__name__)
def test_anything_else_stops_the_run_after_flushing(tmp_path, monkeypatch, bug):
    monkeypatch.setattr(prep, "prepare_item", fake_prepare(bug_at=3, bug=bug))
    data = open_data_dir(tmp_path / "data", {})
    with pytest.raises(type(bug)):
        prep.preprocess(None, items(4), data, shard_size=10, progress=False)
    index = build_index(data)  # line 1 (done) and line 2 (bad) were written; lines 3 and 4 are left for a re-run
    assert [e["line"] for e in index["items"]] == [1] and [f["line"] for f in index["failed"]] == [2]
    assert set(finished_items(data)) == {it.key for it in items(2)}


def test_items_finished_under_their_absolute_key_are_not_redone(tmp_path, monkeypatch):
    """A data dir written when keys were the absolute paths' digest resumes without redoing its items."""
    monkeypatch.setattr(prep, "prepare_item", fake_prepare())
    old = [ManifestItem(i + 1, tmp_path / f"v{i}.mp4", None, None, "train") for i in range(3)]
    data = open_data_dir(tmp_path / "data", {})
    prep.preprocess(None, old[:1], data, shard_size=10, progress=False)
    now = [ManifestItem(i + 1, tmp_path / f"v{i}.mp4", None, None, "train", root=tmp_path) for i in range(3)]
    assert now[0].key != old[0].key and now[0].absolute_key == old[0].key
    report = prep.preprocess(None, now, data, shard_size=10, progress=False)
    assert report.skipped == 1 and report.done == 1 and len(report.failed) == 1  # line 2 is the bad one
    assert [e["line"] for e in build_index(data)["items"]] == [1, 3]


def test_another_corpus_with_the_same_file_names_is_refused(tmp_path, monkeypatch):
    """Keys are relative to the manifest: a second corpus named alike must not pass for the first one's items."""

    def prepare(pipeline, item, **kw):
        info = {"key": item.key, "line": item.line, "video": str(item.video), "split": "train", "duration": 1.0,
                "video_bytes": item.video.stat().st_size}
        return info, {"codes": torch.zeros(2, 50, dtype=torch.int16)}

    monkeypatch.setattr(prep, "prepare_item", prepare)
    corpora = []
    for name, content in (("one", b"x"), ("two", b"yy")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "a.mp4").write_bytes(content)
        corpora.append([ManifestItem(1, tmp_path / name / "a.mp4", None, None, "train", root=tmp_path / name)])
    data = open_data_dir(tmp_path / "data", {})
    prep.preprocess(None, corpora[0], data, shard_size=10, progress=False)
    assert prep.preprocess(None, corpora[0], data, shard_size=10, progress=False).skipped == 1  # a re-run
    with pytest.raises(DataError, match="new --out"):
        prep.preprocess(None, corpora[1], data, shard_size=10, progress=False)
    assert len(build_index(data)["items"]) == 1


def test_a_bad_hop_fails_before_any_item(tmp_path, monkeypatch):
    monkeypatch.setattr(prep, "prepare_item", fake_prepare())
    data = open_data_dir(tmp_path / "data", {})
    with pytest.raises(ConfigError, match="control_hop"):
        prep.preprocess(None, items(2), data, progress=False, control_hop=0.0)
    assert finished_items(data) == {}

