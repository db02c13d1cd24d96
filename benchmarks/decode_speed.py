"""Decode speed of a tokmusic stage against transformers' MusicGen at identical dimensions, side by side.

    python benchmarks/decode_speed.py                       # the 42 M and MusicGen-small configs, CPU
    python benchmarks/decode_speed.py --config small --device cuda --dtype bfloat16 --json
    python benchmarks/decode_speed.py --config 42m --samples 4     # 4 samples of one conditioning at once
    python benchmarks/decode_speed.py --config 42m --threads 2     # both on 2 CPU threads
    python benchmarks/decode_speed.py --config 42m --weights int8  # both decoders with tokmusic's int8 Linear
    python benchmarks/decode_speed.py --config 42m --compile       # our decode step through torch.compile
    python benchmarks/decode_speed.py --config 42m --profile       # where a tokmusic decode step's time goes

Both models have random weights and the same width, layers, heads, FFN, codebooks, vocabulary and memory
length (the cross-attended sequence: our encoder's output, MusicGen's text encoder's). Both sample with
classifier-free guidance as a batch of two (conditional and null), top-k 250, temperature 1, the delay pattern,
the same number of decoder steps; runs alternate in one process and the best of ``--repeats`` counts. With
``--samples N`` both decode N samples at once (ours: ``Stage.generate_batch``; MusicGen: a batch of N copies of
the text), so a step serves N samples. Both decode on torch's thread count; ``--threads N`` sets it.
``--weights int8`` gives both decoders (and output heads) ``tokmusic.quantize.Int8Linear`` layers.
MusicGen runs through ``MusicgenForConditionalGeneration.generate`` with a tiny T5 text encoder and a tiny
EnCodec, so its encoder and codec cost next to nothing, as ours do.

Not compared: ``MusicgenForCausalLM.generate(encoder_hidden_states=...)``. In transformers 5.x that path appends
the cross-attention keys to its self-attention cache at every step and runs quadratically in the steps; a
ratio against it would flatter us.

The floor is the time to stream the decoder's weights from memory once per step (weight bytes / the measured
bandwidth of this device): no step of a memory-bound decoder at batch 2 can be faster.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from dataclasses import dataclass

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from tokmusic.lst_fusion import LSTConfig  # noqa: E402
from tokmusic.quantize import quantize_linears, quantize_stage  # noqa: E402
from tokmusic.sampling import SamplingParams  # noqa: E402
from tokmusic.stage import Conditioning, Stage, StageConfig  # noqa: E402


@dataclass(frozen=True)
class Dims:
    width: int
    layers: int
    heads: int
    ffn: int
    codebooks: int = 4
    vocab: int = 2048
    memory: int = 32  # cross-attended positions


CONFIGS = {
    "42m": Dims(width=512, layers=8, heads=8, ffn=2048),
    "small": Dims(width=1024, layers=24, heads=16, ffn=4096),  # MusicGen-small's decoder
}
TEXT_DIM = 32  # the tiny text encoder's width (ours: the control embedding's)


def our_stage(d: Dims) -> tuple[Stage, Conditioning]:
    """A stage whose decoder has MusicGen's dimensions; its memory is the control token + ``memory - 1``
    visual frames (the fusion module reduced to a projection)."""
    lst = LSTConfig(enabled=False, width=64, n_heads=2, short_layers=0)
    cfg = StageConfig("coarse", target_vocab=d.vocab, target_codebooks=d.codebooks, target_rate=50.0,
                      d_model=d.width, n_heads=d.heads, encoder_layers=1, decoder_layers=d.layers, d_ff=d.ffn,
                      dropout=0.0, visual_dim=TEXT_DIM, lst=lst, control_dim=TEXT_DIM, window=1000.0,
                      overlap=0.0, pattern="delay")
    stage = Stage(cfg).eval()
    frames = d.memory - 1
    cond = Conditioning(visual=torch.randn(1, frames, TEXT_DIM), visual_times=torch.arange(frames)[None] / 2.0,
                        visual_valid=torch.ones(1, frames, dtype=torch.bool), control=torch.randn(1, TEXT_DIM),
                        control_valid=torch.ones(1, dtype=torch.bool))
    return stage, cond


def hf_musicgen(d: Dims):
    """``MusicgenForConditionalGeneration`` with a decoder of dims ``d``, a tiny T5 and a tiny EnCodec."""
    from transformers import (EncodecConfig, MusicgenConfig, MusicgenDecoderConfig,
                              MusicgenForConditionalGeneration, T5Config)

    text = T5Config(vocab_size=64, d_model=TEXT_DIM, d_kv=16, d_ff=64, num_layers=1, num_heads=2)
    bits = d.codebooks * 50 * math.log2(d.vocab) / 1000  # kbit/s of K codebooks at 50 frames/s
    codec = EncodecConfig(target_bandwidths=[bits], sampling_rate=16000, audio_channels=1, num_filters=4,
                          hidden_size=16, codebook_size=d.vocab, upsampling_ratios=[8, 5, 4, 2],
                          num_lstm_layers=1, num_residual_layers=1)
    decoder = MusicgenDecoderConfig(vocab_size=d.vocab, hidden_size=d.width, num_hidden_layers=d.layers,
                                    num_attention_heads=d.heads, ffn_dim=d.ffn, num_codebooks=d.codebooks,
                                    max_position_embeddings=8192, dropout=0.0, pad_token_id=d.vocab,
                                    bos_token_id=d.vocab)
    config = MusicgenConfig(text_encoder=text.to_dict(), audio_encoder=codec.to_dict(),
                            decoder=decoder.to_dict())
    model = MusicgenForConditionalGeneration(config).eval()
    model.generation_config.pad_token_id = d.vocab
    model.generation_config.decoder_start_token_id = d.vocab
    ids = torch.randint(0, 64, (1, d.memory))
    return model, ids


def decoder_bytes(stage: Stage) -> int:
    """Bytes a decode step reads: the decoder's weights and the output heads (not the embedding tables, of
    which a step reads one row per codebook)."""
    modules = [stage.decoder, stage.head]
    return sum(p.numel() * p.element_size() for m in modules for p in m.parameters())


def bandwidth(device: torch.device, dtype: torch.dtype) -> float:
    """Bytes per second this device reads, from summing a large tensor (best of 5)."""
    x = torch.ones(64 * 2**20, dtype=dtype, device=device)  # 128 MiB in bf16, 256 MiB in fp32
    best = float("inf")
    for _ in range(5):
        sync(device)
        start = time.perf_counter()
        x.sum()
        sync(device)
        best = min(best, time.perf_counter() - start)
    return x.numel() * x.element_size() / best


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_ours(stage: Stage, cond: Conditioning, timesteps: int, device: torch.device, samples: int = 1) -> float:
    params = SamplingParams(temperature=1.0, top_k=250, top_p=1.0, cfg_scale=3.0)
    generators = [torch.Generator(device).manual_seed(k) for k in range(samples)]
    sync(device)
    start = time.perf_counter()
    stage.generate_batch(cond, timesteps, params=params, generators=generators)
    sync(device)
    return time.perf_counter() - start


def time_hf(model, ids: torch.Tensor, steps: int, device: torch.device, samples: int = 1) -> float:
    ids = ids.expand(samples, -1)
    sync(device)
    start = time.perf_counter()
    with torch.inference_mode():
        model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True, top_k=250,
                       guidance_scale=3.0, max_new_tokens=steps, min_new_tokens=steps)
    sync(device)
    return time.perf_counter() - start


def run(name: str, d: Dims, steps: int, repeats: int, device: torch.device, dtype: torch.dtype,
        samples: int = 1, weights: str = "fp32", compiled: bool = False) -> dict:
    torch.manual_seed(0)
    stage, cond = our_stage(d)
    stage.to(device, dtype)
    cond = cond.to(device, dtype)
    model, ids = hf_musicgen(d)
    model.to(device)
    model.to(dtype)  # the whole model: its decoder cross-attends to the text encoder's states
    params = sum(p.numel() for m in (stage.decoder, stage.head) for p in m.parameters())
    bytes_per_step = decoder_bytes(stage)
    if weights == "int8":
        bytes_per_step = params  # one byte a weight (the fp32 norms and biases are a rounding error)
        quantize_stage(stage)
        quantize_linears(model.decoder)
    ids = ids.to(device)
    timesteps = steps - (d.codebooks - 1)  # the delay pattern adds K - 1 steps
    time_ours(stage, cond, timesteps if compiled else 8, device, samples)  # warm-up (compiles the measured shape)
    time_hf(model, ids, 8, device)
    ours, hf = float("inf"), float("inf")
    for _ in range(repeats):  # alternate, so both see the same machine load
        ours = min(ours, time_ours(stage, cond, timesteps, device, samples))
        hf = min(hf, time_hf(model, ids, steps, device, samples))
    floor = bandwidth(device, dtype) / bytes_per_step
    dtype_name = str(dtype).removeprefix("torch.")
    return {
        "config": {"name": name, **vars(d), "decoder_params": params, "steps": steps, "samples": samples,
                   "cfg": True, "top_k": 250, "dtype": dtype_name,
                   "weights": "int8" if weights == "int8" else dtype_name, "compiled_ours": compiled,
                   "threads": torch.get_num_threads()},
        "device": device_name(device),
        "ours_steps_per_s": steps / ours,
        "hf_steps_per_s": steps / hf,
        "ratio": hf / ours,
        "floor_steps_per_s": floor,
    }


PROFILE_GROUPS = {  # torch operator -> what it is in a decode step
    "matrix products": ("aten::addmm", "aten::mm", "aten::_weight_int8pack_mm"),
    "attention": ("aten::_scaled_dot_product_flash_attention_for_cpu", "aten::_scaled_dot_product_attention_math",
                  "aten::bmm", "aten::_softmax", "aten::_flash_attention_forward",
                  "aten::_efficient_attention_forward"),
    "sampling": ("aten::topk", "aten::multinomial", "aten::exponential_", "aten::softmax", "aten::argmax"),
    "GELU and layer norms": ("aten::gelu", "aten::native_layer_norm"),
}


def profile(name: str, d: Dims, steps: int, device: torch.device, dtype: torch.dtype, weights: str) -> dict:
    """Milliseconds per decode step of our stage by kind of work (torch profiler, self time of each operator)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    torch.manual_seed(0)
    stage, cond = our_stage(d)
    stage.to(device, dtype)
    cond = cond.to(device, dtype)
    if weights == "int8":
        quantize_stage(stage)
    time_ours(stage, cond, 8, device)  # warm-up
    timesteps = steps - (d.codebooks - 1)
    plain = time_ours(stage, cond, timesteps, device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with torch_profile(activities=activities) as prof:
        time_ours(stage, cond, timesteps, device)
    self_ms = {e.key: e.self_device_time_total / 1e3 if device.type == "cuda" else e.self_cpu_time_total / 1e3
               for e in prof.key_averages()}
    groups = {group: sum(self_ms.get(op, 0.0) for op in ops) / steps for group, ops in PROFILE_GROUPS.items()}
    total = sum(self_ms.values()) / steps
    groups["everything else (small tensor ops, copies, Python)"] = total - sum(groups.values())
    return {"config": name, "device": device_name(device), "ms_per_step_profiled": total,
            "ms_per_step_unprofiled": plain / steps * 1e3, "ms_per_step_by_kind": groups}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=[*CONFIGS, "all"], default="all")
    parser.add_argument("--steps", type=int, default=0, help="decoder steps per run (default: 200 for 42m, 60 "
                                                             "for small on CPU; 500 on GPU)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    parser.add_argument("--samples", type=int, default=1, help="samples decoded at once (default 1)")
    parser.add_argument("--threads", type=int, help="CPU threads for both (default: torch's)")
    parser.add_argument("--weights", choices=["fp32", "int8"], default="fp32",
                        help="fp32 (default): the weights in --dtype; int8: both decoders with tokmusic's int8 Linear "
                        "layers (CPU)")
    parser.add_argument("--compile", action="store_true", help="our decode step through torch.compile "
                        "(TOKMUSIC_COMPILE=1; compiled before timing); MusicGen stays eager")
    parser.add_argument("--profile", action="store_true", help="instead: where a tokmusic decode step's time goes")
    parser.add_argument("--json", action="store_true", help="print one JSON object per config")
    args = parser.parse_args(argv)
    if args.compile:
        os.environ["TOKMUSIC_COMPILE"] = "1"
    if args.threads:
        torch.set_num_threads(args.threads)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    names = list(CONFIGS) if args.config == "all" else [args.config]
    for name in names:
        steps = args.steps or (500 if device.type == "cuda" else 200 if name == "42m" else 60)
        if args.profile:
            result = profile(name, CONFIGS[name], steps, device, dtype, args.weights)
            if args.json:
                print(json.dumps(result))
                continue
            print(f"{name}, {result['device']}: {result['ms_per_step_profiled']:.2f} ms per step under the profiler "
                  f"({result['ms_per_step_unprofiled']:.2f} without)")
            for kind, ms in result["ms_per_step_by_kind"].items():
                print(f"  {kind:52s} {ms:6.2f} ms  {ms / result['ms_per_step_profiled']:6.1%}")
            continue
        result = run(name, CONFIGS[name], steps, args.repeats, device, dtype, args.samples, args.weights,
                     args.compile)
        if args.json:
            print(json.dumps(result))
        else:
            c = result["config"]
            print(f"{name} ({c['decoder_params'] / 1e6:.0f} M decoder params, {c['dtype']}, {c['weights']} weights, "
                  f"{'compiled' if args.compile else 'eager'} tokmusic, "
                  f"{args.samples} sample(s), "
                  f"{c['threads']} threads, {result['device']}): "
                  f"tokmusic {result['ours_steps_per_s']:.1f} steps/s, transformers MusicGen "
                  f"{result['hf_steps_per_s']:.1f} steps/s, ratio {result['ratio']:.2f}x, weight-streaming floor "
                  f"{result['floor_steps_per_s']:.0f} steps/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
