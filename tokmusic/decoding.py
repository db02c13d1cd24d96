"""How a stage's decode steps run on the hardware: compilation and CUDA graphs.

They change how fast a step runs, not its inputs or the values of its weights; each is measured in
``benchmarks/decode_speed.py`` and ``benchmarks/generation_speed.py`` (README, Speed). Decoding runs on torch's
thread count (``torch.set_num_threads`` or ``OMP_NUM_THREADS``) with torch's own weight layout: which thread count
and layout stream a two-row product fastest depends on the CPU (README, Speed), so tokmusic does not override them.
"""

from __future__ import annotations

import os
from typing import Callable

import torch


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
