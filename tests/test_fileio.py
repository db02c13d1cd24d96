import os
import stat

import pytest
import torch

from tokmusic import CheckpointError, ConfigError
from tokmusic.fileio import atomic_dir, atomic_file, check_keys, load_tensors, read_json, save_tensors, write_json


def test_atomic_file_is_all_or_nothing(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_file(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]
    with atomic_file(target) as tmp:
        assert tmp.suffix == ".txt"
        tmp.write_text("new")
    assert target.read_text() == "new"


def test_written_files_get_ordinary_permissions(tmp_path):
    mask = os.umask(0o022)
    try:
        write_json(tmp_path / "c.json", {"a": 1})
        with atomic_dir(tmp_path / "d") as tmp:
            (tmp / "x").write_text("x")
    finally:
        os.umask(mask)
    assert stat.S_IMODE((tmp_path / "c.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o755


def test_atomic_dir_replaces_whole(tmp_path):
    target = tmp_path / "d"
    target.mkdir()
    (target / "old").write_text("1")
    with atomic_dir(target) as tmp:
        (tmp / "new").write_text("2")
    assert sorted(p.name for p in target.iterdir()) == ["new"]
    assert [p.name for p in tmp_path.iterdir()] == ["d"]


def test_tensors_and_json_errors(tmp_path):
    save_tensors(tmp_path / "m.safetensors", {"w": torch.arange(3.0)})
    assert torch.equal(load_tensors(tmp_path / "m.safetensors")["w"], torch.arange(3.0))
    (tmp_path / "bad.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="bad.safetensors"):
        load_tensors(tmp_path / "bad.safetensors")
    torch.save({"w": torch.zeros(1)}, tmp_path / "p.bin")
    with pytest.raises(CheckpointError, match="never unpickled"):
        load_tensors(tmp_path / "p.safetensors")
    (tmp_path / "c.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="c.json"):
        read_json(tmp_path / "c.json")
    with pytest.raises(ConfigError, match="volume"):
        check_keys({"volume": 11}, {"gain"}, "card.json")
