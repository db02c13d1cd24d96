"""Optional int8 weights for the per-step part of a stage (its decoder and output head), for CPU decoding.

    pipe = tokmusic.Pipeline.from_pretrained("dir").quantize("int8")     # or: tokmusic generate ... --weights int8

Each ``nn.Linear`` of ``stage.decoder`` and ``stage.head`` becomes an ``Int8Linear``: int8 weights ``[N, K]`` with
one symmetric scale per output channel (``scale = max|w_row| / 127``, ``q = round(w / scale)``), multiplied by
``torch.ops.aten._weight_int8pack_mm`` on bfloat16 activations (the result is cast back to the input's dtype and
the fp32 bias added). The encoder, embeddings, LST fusion, control projection and layer norms stay fp32: they
run once per window, not once per step.

What it costs in accuracy (``benchmarks/int8_agreement.py`` on the demo bundle, 16 held-out windows per stage):
held-out cross-entropy moves by at most 0.0001 nats/token (semantic 0.7001 -> 0.7000, coarse 3.9939 -> 3.9940,
fine 4.0224 -> 4.0223); the argmax of the int8 logits equals the fp32 argmax at 99.8 / 97.9 / 98.7 % of
teacher-forced positions (casting the whole coarse stage to bfloat16 instead keeps 97.4 %, on 8 windows: its
logits are flat, ~4 nats, so near-ties flip under any rounding). Greedy (temperature 0) windows agree at 100 / 25 / 92 %
of tokens: after the first flipped near-tie (coarse: at timestep 0 - 72 of 200) a sequence continues from
another history, so sampled music differs in its details from the fp32 music for the same seed.

What it buys: 4x smaller decoder weights. A decode step streams all of them, so int8 is faster once they no
longer fit in the CPU's caches: a random 512-wide, 8-layer semantic stage (CFG, 2 rows) decodes a 200-step
window in 4.52 s instead of 5.92 s (1.31x) on a 2-core AVX2 EPYC. The demo bundle's stages (96 - 128 wide,
fp32 weights already in cache) decode 12 - 19 % *slower*: each product pays two dtype casts and a kernel with
more fixed cost than fp32 GEMV. Measure with ``benchmarks/int8_agreement.py --random-stage WIDTH:LAYERS``.

int8 weights are a load-time option: a quantized stage or pipeline refuses to be saved (save the fp32 one and
quantize after loading).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .errors import ConfigError

WEIGHT_MODES = ("fp32", "int8")  # what --weights accepts; "fp32" means "leave the weights as they are"
SAVE_REFUSED = ("int8 weights are a load-time option; save the fp32 pipeline (load it again without quantize() "
                "or --weights int8) and quantize after loading")


def _int8pack_mm():
    """``torch.ops.aten._weight_int8pack_mm`` (resolved once: each lookup through torch.ops costs ~1 us), or None
    in a torch build without it."""
    try:
        return torch.ops.aten._weight_int8pack_mm.default
    except (AttributeError, RuntimeError):
        return None


INT8PACK_MM = _int8pack_mm()
# torch 2.13's CPU kernel reads past the row when K is not a multiple of 8: wrong results, or a segfault
# (measured: K = 7, 12, 20, 36, 100 with M = 2 or 3). Such layers use the dequantized fallback instead.
INT8PACK_K_MULTIPLE = 8


class Int8Linear(nn.Module):
    """``nn.Linear`` with int8 weights ``[out_features, in_features]`` and one bfloat16 scale per output channel.

    ``forward(x)`` = ``_weight_int8pack_mm(x.bfloat16(), weight_int8, scales).to(x.dtype) + bias``. Where that
    op cannot be used (missing from this torch build, an in_features it mishandles, or failing on x's device),
    the fallback ``F.linear`` with the dequantized weight gives the same products in x's own dtype.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("weight_int8", torch.zeros(out_features, in_features, dtype=torch.int8, device=device))
        self.register_buffer("scales", torch.ones(out_features, dtype=torch.bfloat16, device=device))
        self.register_buffer("bias", torch.zeros(out_features, device=device) if bias else None)
        self.use_int8pack_mm = INT8PACK_MM is not None and in_features % INT8PACK_K_MULTIPLE == 0

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> "Int8Linear":
        """The int8 copy of ``linear``: per output channel, ``scale = max|w| / 127`` (rounded to bfloat16 first,
        so the int8 values are exact for the scale the kernel uses) and ``q = round(w / scale)``."""
        w = linear.weight.detach().float()
        new = cls(linear.in_features, linear.out_features, linear.bias is not None, device=w.device)
        scales = (w.abs().amax(1) / 127.0).to(torch.bfloat16)
        scales = torch.where(scales > 0, scales, torch.ones_like(scales))  # an all-zero row: q = 0, any scale
        new.weight_int8.copy_(torch.round(w / scales.float()[:, None]).clamp_(-127, 127).to(torch.int8))
        new.scales.copy_(scales)
        if linear.bias is not None:
            new.bias.copy_(linear.bias.detach().float())
        return new

    def dequantized(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The weight these int8 values and scales stand for, ``[out_features, in_features]`` in ``dtype``."""
        return (self.weight_int8.to(dtype) * self.scales.to(dtype)[:, None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_int8pack_mm:
            scales = self.scales  # a buffer: one lookup (nn.Module attribute lookups cost ~1 us each)
            if scales.dtype != torch.bfloat16:  # after stage.to(dtype=...)
                scales = scales.to(torch.bfloat16)
            try:  # fp32 activations would be ~7x slower in this kernel: bfloat16 in, bfloat16 out
                y = INT8PACK_MM(x.reshape(-1, self.in_features).to(torch.bfloat16).contiguous(), self.weight_int8,
                                scales)
            except (RuntimeError, NotImplementedError):  # e.g. no kernel for x's device: fall back, from now on
                self.use_int8pack_mm = False
            else:
                bias = self.bias
                # fp32 bias + bfloat16 y promotes to fp32: the cast back and the bias in one op (.to: no-op then)
                y = y.to(x.dtype) if bias is None else torch.add(bias, y).to(x.dtype)
                return y.view(*x.shape[:-1], self.out_features)
        # fallback: the dequantized weight in x's dtype (slower than fp32 nn.Linear; correct everywhere)
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, self.dequantized(x.dtype), bias)

    def extra_repr(self) -> str:
        kernel = "_weight_int8pack_mm" if self.use_int8pack_mm else "dequantized F.linear"
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, kernel={kernel}")


def quantize_linears(root: nn.Module) -> nn.Module:
    """Replace every ``nn.Linear`` inside ``root`` by its ``Int8Linear``, in place; returns ``root`` (or, when
    ``root`` is itself an ``nn.Linear``, its ``Int8Linear``)."""
    if isinstance(root, nn.Linear):
        return Int8Linear.from_linear(root)
    for parent in list(root.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear):
                setattr(parent, name, Int8Linear.from_linear(child))
    return root


def quantize_stage(stage: nn.Module) -> nn.Module:
    """Replace every ``nn.Linear`` in ``stage.decoder`` and ``stage.head`` by its ``Int8Linear``, in place; returns
    the stage. Everything else (encoder, embeddings, LST fusion, control projection, layer norms) stays as it
    was. A second call finds no ``nn.Linear`` left there and changes nothing. Accuracy: see the module docstring.
    """
    for part in ("decoder", "head"):
        setattr(stage, part, quantize_linears(getattr(stage, part)))
    return stage


def is_quantized(module: nn.Module) -> bool:
    """Whether ``module`` holds any ``Int8Linear``."""
    return any(isinstance(m, Int8Linear) for m in module.modules())


def check_weights(weights: str, accepted: tuple[str, ...] = WEIGHT_MODES) -> str:
    """``weights`` if it is one of ``accepted``; otherwise a ConfigError naming them."""
    if not isinstance(weights, str) or weights not in accepted:
        raise ConfigError(f"weights={weights!r} is not one of {', '.join(map(repr, accepted))}"
                          + ("" if "fp32" in accepted else " (the fp32 weights are what a pipeline loads with)"))
    return weights


def refuse_saving_quantized(*modules: nn.Module) -> None:
    """ConfigError if any of ``modules`` holds int8 weights: they are a load-time option, never written."""
    if any(is_quantized(m) for m in modules):
        raise ConfigError(SAVE_REFUSED)


__all__ = ["Int8Linear", "quantize_linears", "quantize_stage", "is_quantized", "check_weights", "WEIGHT_MODES"]
