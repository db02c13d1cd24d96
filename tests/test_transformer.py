import torch

from tokmusic.kv_cache import KVCache
from tokmusic.transformer import Transformer, TransformerConfig, apply_rotary, rotary

CFG = TransformerConfig(d_model=16, n_heads=2, n_layers=2, d_ff=32)


def test_kv_cache_update_returns_everything_so_far():
    cache = KVCache(1, 2, 5, 4, dtype=torch.float32)
    k1, v1 = torch.randn(1, 2, 3, 4), torch.randn(1, 2, 3, 4)
    k, v = cache.update(k1, v1)
    assert torch.equal(k, k1) and torch.equal(v, v1)
    k2, v2 = torch.randn(1, 2, 1, 4), torch.randn(1, 2, 1, 4)
    k, v = cache.update(k2, v2)
    assert torch.equal(k, torch.cat([k1, k2], 2)) and cache.size == 4
    buffer = cache.k.data_ptr()
    cache.reset()
    cache.update(k2, v2)
    assert cache.k.data_ptr() == buffer  # preallocated: never reallocated
    try:
        cache.update(torch.randn(1, 2, 5, 4), torch.randn(1, 2, 5, 4))
    except RuntimeError as exc:
        assert "full" in str(exc)
    else:
        raise AssertionError("overflow not detected")


def test_rotary_is_relative():
    # the score of q at position p and k at position r depends only on p - r
    q, k = torch.randn(1, 1, 1, 8), torch.randn(1, 1, 1, 8)
    def score(p, r):
        qc = apply_rotary(q, *rotary(torch.tensor([[float(p)]]), 8, 10000.0))
        kc = apply_rotary(k, *rotary(torch.tensor([[float(r)]]), 8, 10000.0))
        return (qc * kc).sum()
    torch.testing.assert_close(score(3, 1), score(12, 10))
    torch.testing.assert_close(score(2.5, 0.5), score(7, 5))


def test_encoder_ignores_padded_keys():
    torch.manual_seed(0)
    enc = Transformer(CFG).eval()
    x = torch.randn(1, 4, 16)
    pos = torch.arange(4.0)[None]
    ref = enc(x, pos, valid=torch.ones(1, 4, dtype=torch.bool))
    padded = torch.cat([x, torch.randn(1, 2, 16) * 10], 1)
    out = enc(padded, torch.arange(6.0)[None], valid=torch.tensor([[True] * 4 + [False] * 2]))
    torch.testing.assert_close(out[:, :4], ref, atol=1e-5, rtol=0)


def test_decoder_is_causal():
    torch.manual_seed(0)
    dec = Transformer(CFG, cross=True).eval()
    memory = torch.randn(1, 3, 16)
    x = torch.randn(1, 5, 16)
    pos = torch.arange(5)[None]
    a = dec(x, pos, causal=True, memory=memory)
    y = x.clone()
    y[:, 3:] = torch.randn(1, 2, 16)
    b = dec(y, pos, causal=True, memory=memory)
    torch.testing.assert_close(a[:, :3], b[:, :3])
    assert not torch.allclose(a[:, 3:], b[:, 3:])
