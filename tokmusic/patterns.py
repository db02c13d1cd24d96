"""Codebook interleaving patterns (MusicGen §2.2): how K parallel code streams become one sequence of steps.

A pattern maps codes ``[B, K, T]`` (K codebooks over T timesteps) to a sequence ``[B, K, S]`` that a decoder
predicts one step at a time, all K codebooks of a step at once. Positions that hold no code carry the
``empty_id``. Every (codebook, timestep) appears exactly once, so ``revert(build(codes)) == codes``.

With K = 3 and T = 4 (``a1`` = codebook a at timestep 1, ``.`` = empty)::

    parallel        delay              flatten                     coarse_first (n_coarse=1)
    a1 a2 a3 a4     a1 a2 a3 a4 .  .   a1 .  .  a2 .  .  a3 ...   a1 a2 a3 a4 .  b1 b2 b3 b4 .
    b1 b2 b3 b4     .  b1 b2 b3 b4 .   .  b1 .  .  b2 .  .  ...   .  .  .  .  .  .  c1 c2 c3 c4
    c1 c2 c3 c4     .  .  c1 c2 c3 c4  .  .  c1 .  .  c2 .  ...   (the empty step lets the fine
                                                                   half start from an empty input)

``delay`` lets codebook k of timestep t see codebooks < k of the same timestep (they were predicted earlier)
at the cost of K - 1 extra steps; ``parallel`` is cheapest and ignores that dependency; ``flatten`` is exact
and K times longer; ``coarse_first`` predicts the first ``n_coarse`` codebooks for the whole sequence before
the rest.
"""

from __future__ import annotations

from typing import Sequence

import torch

from .errors import ConfigError

PATTERNS = ("delay", "parallel", "flatten", "coarse_first")


class Pattern:
    """A codebook pattern for ``n_q`` codebooks. Subclasses define the layout.

    Args:
        n_q: number of codebooks K.
        empty_id: id written where a step holds no code for a codebook.
    """

    name = "pattern"

    def __init__(self, n_q: int, empty_id: int = -1):
        if n_q < 1:
            raise ConfigError(f"pattern {self.name!r}: n_q must be >= 1, got {n_q}")
        self.n_q = n_q
        self.empty_id = empty_id
        self._layouts: dict[int, torch.Tensor] = {}

    # -- layout -------------------------------------------------------------------------------------------
    def num_steps(self, timesteps: int) -> int:
        """Sequence length S for T timesteps."""
        raise NotImplementedError

    def num_timesteps(self, steps: int) -> int:
        """Timesteps T that a sequence of S steps holds (inverse of num_steps)."""
        raise NotImplementedError

    def _timestep_at(self, timesteps: int) -> torch.Tensor:
        """Long [K, S]: the timestep that codebook k holds at step s, or -1."""
        raise NotImplementedError

    def layout(self, timesteps: int) -> torch.Tensor:
        """Long ``[K, S]``: the timestep held by codebook k at step s, or -1 where the step is empty."""
        if timesteps < 0:
            raise ConfigError(f"pattern {self.name!r}: timesteps must be >= 0, got {timesteps}")
        if timesteps not in self._layouts:
            self._layouts[timesteps] = self._timestep_at(timesteps)
        return self._layouts[timesteps]

    def step_times(self, timesteps: int) -> torch.Tensor:
        """Long ``[S]``: the timestep each step stands at, where its decoder query meets the encoder's memory.

        It is the timestep of the step's reference codebook (the first of its group), continued through steps
        that hold nothing, so that codebook k of a step is always the same number of timesteps from it.
        """
        return self._step_time(timesteps)

    def _step_time(self, timesteps: int) -> torch.Tensor:
        return torch.arange(self.num_steps(timesteps))

    def valid(self, timesteps: int) -> torch.Tensor:
        """Bool ``[K, S]``: True where step s holds a code of codebook k."""
        return self.layout(timesteps) >= 0

    def step_of(self, timesteps: int) -> torch.Tensor:
        """Long ``[K, T]``: the step at which codebook k of timestep t appears."""
        layout = self.layout(timesteps)
        k, s = torch.nonzero(layout >= 0, as_tuple=True)
        out = torch.empty(self.n_q, timesteps, dtype=torch.long)
        out[k, layout[k, s]] = s
        return out

    # -- conversion -----------------------------------------------------------------------------------------
    def build(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes ``Long[B, K, T]`` -> sequence ``Long[B, K, S]`` with ``empty_id`` where nothing is known."""
        if codes.dim() != 3 or codes.shape[1] != self.n_q:
            raise ConfigError(f"pattern {self.name!r}: codes must be [B, {self.n_q}, T], got {list(codes.shape)}")
        layout = self.layout(codes.shape[-1]).to(codes.device)
        gathered = codes.gather(2, layout.clamp(min=0).unsqueeze(0).expand(codes.shape[0], -1, -1))
        return torch.where(layout >= 0, gathered, torch.full_like(gathered, self.empty_id))

    def revert(self, seq: torch.Tensor) -> torch.Tensor:
        """Sequence ``[B, K, S, ...]`` -> ``[B, K, T, ...]``: codes, or logits with a trailing vocab axis."""
        if seq.dim() < 3 or seq.shape[1] != self.n_q:
            raise ConfigError(f"pattern {self.name!r}: sequence must be [B, {self.n_q}, S, ...], got {list(seq.shape)}")
        timesteps = self.num_timesteps(seq.shape[2])
        steps = self.step_of(timesteps).to(seq.device)  # [K, T]
        index = steps.view(1, self.n_q, timesteps, *([1] * (seq.dim() - 3)))
        index = index.expand(seq.shape[0], self.n_q, timesteps, *seq.shape[3:])
        return seq.gather(2, index)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n_q={self.n_q}, empty_id={self.empty_id})"


class ParallelPattern(Pattern):
    """All codebooks of a timestep at the same step (S = T)."""

    name = "parallel"

    def num_steps(self, timesteps: int) -> int:
        return timesteps

    def num_timesteps(self, steps: int) -> int:
        return steps

    def _timestep_at(self, timesteps: int) -> torch.Tensor:
        return torch.arange(timesteps).expand(self.n_q, timesteps).clone()


class DelayPattern(Pattern):
    """Codebook k shifted right by ``delays[k]`` steps (default k), S = T + max(delays)."""

    name = "delay"

    def __init__(self, n_q: int, empty_id: int = -1, delays: Sequence[int] | None = None):
        super().__init__(n_q, empty_id)
        delays = list(range(n_q)) if delays is None else [int(d) for d in delays]
        if len(delays) != n_q or delays[0] != 0 or any(d < 0 for d in delays) or delays != sorted(delays):
            raise ConfigError(
                f"pattern 'delay': delays must be {n_q} non-decreasing non-negative ints starting at 0, got {delays}"
            )
        self.delays = delays

    def num_steps(self, timesteps: int) -> int:
        return timesteps + self.delays[-1] if timesteps else 0

    def num_timesteps(self, steps: int) -> int:
        return max(steps - self.delays[-1], 0)

    def _timestep_at(self, timesteps: int) -> torch.Tensor:
        steps = torch.arange(self.num_steps(timesteps))
        t = steps.unsqueeze(0) - torch.tensor(self.delays).unsqueeze(1)  # [K, S]
        return torch.where((t >= 0) & (t < timesteps), t, torch.full_like(t, -1))


class FlattenPattern(Pattern):
    """One codebook per step, timestep by timestep: step t*K + k holds codebook k of timestep t (S = K*T)."""

    name = "flatten"

    def num_steps(self, timesteps: int) -> int:
        return timesteps * self.n_q

    def num_timesteps(self, steps: int) -> int:
        if steps % self.n_q:
            raise ConfigError(f"pattern 'flatten': {steps} steps is not a multiple of n_q={self.n_q}")
        return steps // self.n_q

    def _timestep_at(self, timesteps: int) -> torch.Tensor:
        steps = torch.arange(self.num_steps(timesteps))
        k = torch.arange(self.n_q).unsqueeze(1)
        return torch.where(steps.unsqueeze(0) % self.n_q == k, steps.unsqueeze(0) // self.n_q, -1)

    def _step_time(self, timesteps: int) -> torch.Tensor:
        return torch.arange(self.num_steps(timesteps)) // self.n_q


class CoarseFirstPattern(Pattern):
    """The first ``n_coarse`` codebooks (delayed among themselves) over all T, then the rest (delayed likewise).

    One empty step separates the halves so that the first fine step's input is known.
    """

    name = "coarse_first"

    def __init__(self, n_q: int, empty_id: int = -1, n_coarse: int = 1):
        super().__init__(n_q, empty_id)
        if not 1 <= n_coarse < n_q:
            raise ConfigError(f"pattern 'coarse_first': n_coarse must be in 1..{n_q - 1}, got {n_coarse}")
        self.n_coarse = n_coarse

    def _halves(self, timesteps: int) -> tuple[int, int]:
        first = timesteps + self.n_coarse - 1 if timesteps else 0
        second = timesteps + self.n_q - self.n_coarse - 1 if timesteps else 0
        return first, second

    def num_steps(self, timesteps: int) -> int:
        first, second = self._halves(timesteps)
        return first + second + (1 if timesteps else 0)

    def num_timesteps(self, steps: int) -> int:
        if steps == 0:
            return 0
        return (steps - self.n_q + 1) // 2

    def _timestep_at(self, timesteps: int) -> torch.Tensor:
        first, _ = self._halves(timesteps)
        steps = torch.arange(self.num_steps(timesteps))
        k = torch.arange(self.n_q).unsqueeze(1)
        coarse = k < self.n_coarse
        offset = torch.where(coarse, k, first + 1 + k - self.n_coarse)
        t = steps.unsqueeze(0) - offset
        return torch.where((t >= 0) & (t < timesteps), t, torch.full_like(t, -1))

    def _step_time(self, timesteps: int) -> torch.Tensor:
        first, _ = self._halves(timesteps)
        steps = torch.arange(self.num_steps(timesteps))
        return torch.where(steps <= first, steps, steps - (first + 1))  # the fine half starts again at 0


_CLASSES = {cls.name: cls for cls in (DelayPattern, ParallelPattern, FlattenPattern, CoarseFirstPattern)}


def get_pattern(name: str, n_q: int, **kwargs) -> Pattern:
    """The pattern called ``name`` ("delay" | "parallel" | "flatten" | "coarse_first") for ``n_q`` codebooks.

    Keyword arguments: ``empty_id`` for all; ``delays`` for "delay"; ``n_coarse`` for "coarse_first".
    """
    if not isinstance(name, str) or name not in _CLASSES:
        raise ConfigError(f"unknown codebook pattern {name!r}; choose one of {', '.join(PATTERNS)}")
    if isinstance(n_q, bool) or not isinstance(n_q, int) or n_q < 1:
        raise ConfigError(f"pattern {name!r}: n_q must be a positive integer (the number of codebooks), got {n_q!r}")
    try:
        return _CLASSES[name](n_q, **kwargs)
    except (TypeError, ValueError) as exc:  # keyword arguments of the wrong name or type
        raise ConfigError(f"pattern {name!r}: bad keyword arguments {sorted(kwargs)} ({exc})") from None
