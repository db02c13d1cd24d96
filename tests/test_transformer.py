import torch

from tokmusic.kv_cache import KVCache
from tokmusic.transformer import Memory, Transformer, TransformerConfig, apply_rotary, rotary

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


def test_fixed_shape_steps_match_growing_ones():
    # step_at (the CUDA-graph path: whole cache, masked past the slot, tabulated rotations) gives what step gives
    torch.manual_seed(0)
    dec = Transformer(CFG, cross=True).eval()
    memory = Memory(torch.randn(2, 5, 16), torch.tensor([[True] * 5, [True] * 3 + [False] * 2]),
                    torch.tensor([[float("nan"), 0.0, 1.0, 2.0, 3.0]] * 2))
    x = torch.randn(2, 6, 16)
    times = torch.arange(6.0).expand(2, -1) * 0.5
    grow, fixed = dec.start(memory, max_len=6), dec.start(memory, max_len=6, cross_positions=times[0])
    prefix = dec.step(x[:, :2], torch.arange(2).expand(2, -1), grow, times[:, :2])
    torch.testing.assert_close(dec.step(x[:, :2], torch.arange(2).expand(2, -1), fixed, times[:, :2]), prefix)
    for i in range(2, 6):
        a = dec.step(x[:, i : i + 1], torch.full((2, 1), i), grow, times[:, i : i + 1])
        b = dec.step_at(x[:, i : i + 1], torch.tensor([i]), fixed)
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    cache = fixed.caches[0]
    k, _ = cache.write(torch.ones(2, 2, 1, 8), torch.ones(2, 2, 1, 8), torch.tensor([5]))
    assert k.shape[2] == 6 and torch.equal(k[:, :, 5], torch.ones(2, 2, 8))


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
    memory = Memory(torch.randn(1, 3, 16))
    x = torch.randn(1, 5, 16)
    pos = torch.arange(5)[None]
    for valid in (None, torch.ones(1, 5, dtype=torch.bool)):  # a validity mask must not lift causality
        a = dec(x, pos, causal=True, valid=valid, memory=memory)
        y = x.clone()
        y[:, 3:] = torch.randn(1, 2, 16)
        b = dec(y, pos, causal=True, valid=valid, memory=memory)
        torch.testing.assert_close(a[:, :3], b[:, :3])
        assert not torch.allclose(a[:, 3:], b[:, 3:])


def test_cross_attention_is_relative_in_time():
    # queries meet the memory on one clock: moving both by the same time changes nothing, moving one does
    torch.manual_seed(0)
    dec = Transformer(CFG, cross=True).eval()
    x, mem = torch.randn(1, 4, 16), torch.randn(1, 6, 16)
    steps, times, mem_times = torch.arange(4)[None], torch.tensor([[0.0, 1, 2, 3]]), torch.arange(6.0)[None]
    a = dec(x, steps, causal=True, memory=Memory(mem, None, mem_times), cross_positions=times)
    b = dec(x, steps, causal=True, memory=Memory(mem, None, mem_times + 7.5), cross_positions=times + 7.5)
    c = dec(x, steps, causal=True, memory=Memory(mem, None, mem_times + 2.0), cross_positions=times)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    assert not torch.allclose(a, c, atol=1e-3)


def test_a_timeless_memory_entry_scores_the_same_from_any_time():
    # one memory entry with no time (NaN), e.g. a control token: alone in the memory, the output cannot
    # depend on where the queries stand; beside timed entries, it is scored without rotation on either side
    torch.manual_seed(0)
    dec = Transformer(CFG, cross=True).eval()
    x, mem = torch.randn(1, 3, 16), torch.randn(1, 1, 16)
    steps = torch.arange(3)[None]
    nan = torch.full((1, 1), float("nan"))
    a = dec(x, steps, causal=True, memory=Memory(mem, None, nan), cross_positions=torch.tensor([[0.0, 1, 2]]))
    b = dec(x, steps, causal=True, memory=Memory(mem, None, nan), cross_positions=torch.tensor([[40.0, 9, 3]]))
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    attn = dec.layers[0].cross_attn
    q = attn.heads(attn.q(torch.randn(1, 1, 16)))
    both = torch.cat([mem, torch.randn(1, 1, 16)], 1)
    k, _ = attn.memory_kv(both, dec.rope(torch.tensor([[0.0, 5.0]])), torch.tensor([[False, True]]))
    for t in (0.0, 3.0, 11.0):
        rq = apply_rotary(q, *dec.rope(torch.tensor([[t]])))
        score = (torch.cat([rq, q], -1) @ k.transpose(-1, -2))[0, :, 0]  # [H, 2]
        plain_k, _ = attn.project_kv(both)
        torch.testing.assert_close(score[:, 0], (q @ plain_k.transpose(-1, -2))[0, :, 0, 0], atol=1e-5, rtol=0)
