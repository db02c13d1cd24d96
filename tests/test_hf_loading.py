import pytest
import torch

from tokmusic import CheckpointError
from tokmusic.hf_loading import loading


def test_a_failed_load_names_the_directory_and_what_it_needs(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match=r"empty: cannot load a test model from this directory .*it needs x.json"):
        with loading(empty, "a test model", "x.json") as source:
            raise OSError(f"no file in {source}")


def test_pickles_and_files_are_refused_before_loading(tmp_path):
    torch.save({"w": torch.zeros(1)}, tmp_path / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="never unpickles"):
        with loading(tmp_path, "a test model"):
            raise AssertionError("the loader must not run")
    (tmp_path / "file").write_text("x")
    with pytest.raises(CheckpointError, match="is a file"):
        with loading(tmp_path / "file", "a test model"):
            raise AssertionError("the loader must not run")


def test_an_unreachable_hub_id_says_to_pass_a_directory():
    with pytest.raises(CheckpointError, match="someone/model: not a local directory.*pass its local directory"):
        with loading("someone/model", "a test model") as source:
            assert source == "someone/model"
            raise OSError("offline")
