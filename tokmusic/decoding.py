"""How a stage's decode steps run on the hardware: CPU threads, weight layout, compilation, CUDA graphs.

They change how fast a step runs, not its inputs or the values of its weights; each is measured in
``benchmarks/decode_speed.py`` and ``benchmarks/generation_speed.py`` (README, Speed).
"""

from __future__ import annotations

import contextlib
import os
from typing import Callable, Iterator

import torch
from torch import nn

SINGLE_THREAD_DECODE_BELOW = 1024  # d_model


@contextlib.contextmanager
def decode_threads(d_model: int, device: torch.device, int8: bool = False) -> Iterator[None]:
    """Run incremental decoding of small fp32 models on one CPU thread.

    A decode step of a small model is a handful of two-row matrix products: at fp32 and width 512 a second
    thread made decoding slower (26.5 vs 28.4 steps/s on 2 cores), and on a busy machine intra-op threads'
    spinning makes it several times slower. int8 products (``tokmusic.quantize``) gain from a second thread
    (45.4 vs 41.3 steps/s), so quantized stages keep torch's thread count
    (``benchmarks/decode_speed.py --threads N``).
    """
    before = torch.get_num_threads()
    single = device.type == "cpu" and d_model < SINGLE_THREAD_DECODE_BELOW and before > 1 and not int8
    if single:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if single:
            torch.set_num_threads(before)


def column_major_weights(*modules: nn.Module) -> None:
    """Store the weight of every ``nn.Linear`` in ``modules`` column-major (the same values, transposed storage),
    in place and once. A CPU decode step multiplies two rows by each weight; torch's CPU matrix product streams
    a column-major weight about 1.2x faster (``benchmarks/decode_speed.py``). Saving is unaffected
    (``save_tensors`` writes contiguous copies)."""
    for module in modules:
        for layer in module.modules():
            w = layer.weight if isinstance(layer, nn.Linear) else None
            if w is not None and w.dim() == 2 and w.stride() != (1, w.shape[0]):
                w.data = w.data.t().contiguous().t()


def cuda_graphs_enabled() -> bool:
    """Whether decoding on a GPU replays each step from a CUDA graph: opt in with ``TOKMUSIC_CUDA_GRAPHS=1``
    (off by default until its speed and its token-for-token agreement with eager decoding have been measured on
    a GPU: ``tests/test_stage.py::test_cuda_graph_decoding_changes_no_token``)."""
    return os.environ.get("TOKMUSIC_CUDA_GRAPHS", "0") == "1"


def compile_enabled() -> bool:
    """Whether each stage runs its one-step decode (``Transformer.step_at``) through ``torch.compile``: opt in
    with ``TOKMUSIC_COMPILE=1``. Every step has the same shapes, so a stage compiles once per window length (tens
    of seconds on a CPU, paid by the first window of that length) and then replays fused kernels; the tokens are
    the same (``tests/test_stage.py::test_compiled_decoding_changes_no_token``). Worth it for long videos and
    batches, not for one short clip (README, Speed)."""
    return os.environ.get("TOKMUSIC_COMPILE", "0") == "1"


def capture(fn: Callable[[], torch.Tensor]) -> Callable[[], torch.Tensor]:
    """``fn`` (no arguments; reads and writes only tensors that outlive it) recorded once as a CUDA graph; the
    returned function replays it and returns its output tensor (overwritten by the next replay).

    A decode step is hundreds of small kernels; replaying them as one graph removes the launch cost of each.
    """
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # warm-up outside the graph (allocations, kernel selection)
        for _ in range(2):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn()

    def replay() -> torch.Tensor:
        graph.replay()
        return out

    return replay
