import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Tiny models on a 2-core machine: intra-op threads only add contention (and subprocesses inherit this).
os.environ.setdefault("OMP_NUM_THREADS", "1")

sys.path.insert(0, str(Path(__file__).parent))  # tests/media.py, tests/scripts.py


@pytest.fixture(scope="session")
def saved(tmp_path_factory):
    """``tokmusic.testing.tiny_pipeline(seed=0)`` saved once for the whole run. Read only: copy it to change it."""
    from tokmusic.testing import tiny_pipeline

    path = tmp_path_factory.mktemp("saved") / "tiny"
    tiny_pipeline(seed=0).save_pretrained(path)
    return path
