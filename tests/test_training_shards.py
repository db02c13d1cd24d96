"""shards.span_control: the control of a crop from the per-chunk embeddings of its music."""

import math

import pytest
import torch

from tokmusic.errors import DataError
from tokmusic.training.shards import span_control

E = torch.eye(3)  # three chunks whose embeddings are the unit axes


@pytest.mark.parametrize("t0, t1, weights", [
    (0.0, 1.0, [1, 0, 0]),        # exactly chunk 0
    (1.0, 2.0, [0, 1, 0]),        # exactly chunk 1: the chunks around it do not leak in
    (0.5, 2.0, [0.5, 1, 0]),      # half of chunk 0, all of chunk 1
    (0.25, 2.75, [0.75, 1, 0.75]),
    (2.5, 9.0, [0, 0, 1]),        # past the last chunk: it covers everything after
    (-1.0, 0.5, [1, 0, 0]),       # before 0: the first chunk
    (1.2, 1.2, [0, 1, 0]),        # empty span: the chunk at t0
])
def test_span_control_weights_chunks_by_overlap(t0, t1, weights):
    got = span_control(E, 1.0, t0, t1)
    w = torch.tensor(weights, dtype=torch.float32)
    torch.testing.assert_close(got, w / w.norm(), rtol=0, atol=1e-7)
    assert got.dtype == torch.float32 and got.shape == (3,)


def test_span_control_with_another_hop():
    chunks = torch.nn.functional.normalize(torch.randn(5, 4, generator=torch.Generator().manual_seed(0)), dim=-1)
    # hop 2.5 s: [3, 6) covers 2 s of chunk 1 ([2.5, 5)) and 1 s of chunk 2 ([5, 7.5))
    expected = torch.nn.functional.normalize(2 * chunks[1] + chunks[2], dim=-1)
    torch.testing.assert_close(span_control(chunks, 2.5, 3.0, 6.0), expected, rtol=0, atol=1e-6)
    assert math.isclose(float(span_control(chunks, 2.5, 0.1, 11.0).norm()), 1.0, rel_tol=1e-6)


def test_whole_track_control_of_old_data_dirs():
    vector = torch.tensor([3.0, 4.0])
    torch.testing.assert_close(span_control(vector, None, 2.0, 5.0), torch.tensor([0.6, 0.8]))
    torch.testing.assert_close(span_control(vector[None], None, 2.0, 5.0), torch.tensor([0.6, 0.8]))
    with pytest.raises(DataError, match="no control_hop"):
        span_control(E, None, 0.0, 1.0)
    with pytest.raises(DataError, match="control_hop must be > 0"):
        span_control(E, 0.0, 0.0, 1.0)
