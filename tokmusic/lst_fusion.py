"""Long-short-term visual fusion (VidMuse §4.3).

Long-term: K frames sampled evenly over the whole video, the same for every window. Short-term: the frames of
the current window. Each is refined by a small transformer; the short-term tokens then attend to the long-term
ones by cross-attention, and a linear projection brings them to the stage's model width. With the long-term
branch switched off the module is a short-term refiner plus projection.

Both branches run on one clock, the frames' times in the whole video. Every frame carries its time as
features (sinusoids of its second in the video and of its fraction of the video's length, through one linear
map shared by both branches), and cross-attention between the branches is rotary on those times, so a window
sees the whole video *from where it stands*: the opening lies behind it, the climax ahead.

With ``normalize`` each visual channel is first standardised by its mean and standard deviation over the
training data (``set_feature_statistics``; buffers saved with the weights). Encoders joined side by side differ
in scale: EfficientNet's channels vary about eight times more than the motion channels, and there are 40 times
as many, so without it a motion cue (the camera's speed, a cut) starts as a sliver of each projection.

``short_channels`` ``[first, last)`` gives the short-term branch only some channels, e.g. the motion ones, while
the long-term branch keeps them all: VidMuse's division of labour, local timing from the short term and the clip's
look from the long term. It matters when appearance identifies a training clip: with every channel in the window,
a stage can recall when each training clip's music changes (which photograph, which chorale) instead of learning
to read the change in the frames, and learns nothing it can use on a new video.

``long_channels`` does the same for the long-term branch. It matters when a property of the whole clip (a colour
grade) shows plainly in a few channels and, entangled with the picture, in many others: on training clips the many
name it as well as the few, so a stage may learn it from the picture and miss it on pictures it has not seen.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from .transformer import Memory, Transformer, TransformerConfig


@dataclass
class LSTConfig:
    """Widths of the fusion module; ``long_frames`` is K, the long-term frames sampled over the video;
    ``short_channels`` and ``long_channels`` ``[first, last)`` limit the short- and long-term branches to some
    visual channels (null: all)."""

    enabled: bool = True
    width: int = 256
    n_heads: int = 4
    short_layers: int = 2
    long_layers: int = 2
    fusion_layers: int = 1
    long_frames: int = 32
    dropout: float = 0.0
    normalize: bool = False
    short_channels: list[int] | None = None  # [first, last): the visual channels the short-term branch reads
    long_channels: list[int] | None = None  # [first, last): the visual channels the long-term branch reads

    def to_dict(self) -> dict:
        return asdict(self)


CLOCK_PERIODS = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0)  # seconds
CLOCK_HARMONICS = 4  # of the fraction of the video
CLOCK_FEATURES = 2 * (len(CLOCK_PERIODS) + CLOCK_HARMONICS)


def clock_features(times: torch.Tensor, duration: torch.Tensor) -> torch.Tensor:
    """Where each frame lies: ``times [B, T]`` seconds in a video of ``duration [B]`` seconds -> ``[B, T, F]``:
    sines and cosines of the time over periods of 1 to 512 s, and of the fraction of the video."""
    periods = torch.tensor(CLOCK_PERIODS, device=times.device)
    seconds = times.float()[..., None] * (2 * torch.pi / periods)
    fraction = (times.float() / duration.float().clamp_min(1e-3)[:, None]).clamp(0, 1)
    harmonics = torch.arange(1, CLOCK_HARMONICS + 1, device=times.device)
    turns = fraction[..., None] * (torch.pi * harmonics)
    return torch.cat([seconds.sin(), seconds.cos(), turns.sin(), turns.cos()], -1)


def sample_long_term(features: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """K rows spread evenly over ``features [T, D]`` -> (``[K', D]``, their indices ``[K']``); K' = min(K, T)."""
    t = features.shape[0]
    if t <= k:
        index = torch.arange(t)
    else:
        index = torch.linspace(0, t - 1, k).round().long()
    return features[index], index


class LSTFusion(nn.Module):
    """Fuse short-term frames with long-term context.

    forward(short ``[B, Ts, Dv]`` at short_times ``[B, Ts]``, short_valid ``[B, Ts]``, long ``[B, Tl, Dv]`` at
    long_times ``[B, Tl]``, long_valid ``[B, Tl]``) -> ``[B, Ts, d_model]``. All times are seconds in the whole
    video; rotary positions are those times in units of ``1 / rate`` seconds (``rate`` sets the resolution).
    """

    def __init__(self, visual_dim: int, d_model: int, cfg: LSTConfig, rate: float = 2.0):
        super().__init__()
        self.cfg = cfg
        self.rate = rate
        if cfg.normalize:  # identity until set_feature_statistics
            self.register_buffer("feature_mean", torch.zeros(visual_dim))
            self.register_buffer("feature_std", torch.ones(visual_dim))
        first, last = cfg.short_channels or (0, visual_dim)  # StageConfig.validate checks the ranges
        self.short_slice = slice(first, last)
        self.short_in = nn.Linear(last - first, cfg.width)
        first, last = cfg.long_channels or (0, visual_dim)
        self.long_slice = slice(first, last)
        block = dict(d_model=cfg.width, n_heads=cfg.n_heads, d_ff=4 * cfg.width, dropout=cfg.dropout)
        self.short = Transformer(TransformerConfig(n_layers=cfg.short_layers, **block))
        if cfg.enabled:
            self.long_in = nn.Linear(last - first, cfg.width)
            self.clock = nn.Linear(CLOCK_FEATURES, cfg.width)  # one clock for both branches
            self.long = Transformer(TransformerConfig(n_layers=cfg.long_layers, **block))
            self.fusion = Transformer(TransformerConfig(n_layers=cfg.fusion_layers, **block), cross=True)
        self.out = nn.Linear(cfg.width, d_model)

    @torch.no_grad()
    def set_feature_statistics(self, mean: torch.Tensor, std: torch.Tensor, floor: float = 1e-2) -> None:
        """Standardise inputs by ``mean, std [Dv]`` (channel statistics of the training features); a channel
        that hardly varies is divided by ``floor`` instead, so a constant one cannot blow up later."""
        if not self.cfg.normalize:
            raise ValueError("this LST fusion was built without normalize=True")
        self.feature_mean.copy_(mean)
        self.feature_std.copy_(std.clamp_min(floor))

    def _standardise(self, x: torch.Tensor, channels: slice = slice(None)) -> torch.Tensor:
        """``x [..., channels]`` standardised by those channels' statistics (as is without ``normalize``)."""
        if not self.cfg.normalize:
            return x
        return (x - self.feature_mean[channels].to(x.dtype)) / self.feature_std[channels].to(x.dtype)

    def _clock(self, times: torch.Tensor, duration: torch.Tensor) -> torch.Tensor:
        # computed from float32 times, then cast: in bf16 the fine periods would be lost
        return self.clock(clock_features(times, duration).to(self.clock.weight.dtype))

    def forward(
        self,
        short: torch.Tensor,
        short_times: torch.Tensor,
        short_valid: torch.Tensor,
        long: torch.Tensor | None = None,
        long_times: torch.Tensor | None = None,
        long_valid: torch.Tensor | None = None,
    ) -> torch.Tensor:
        # short: [B, Ts, Dv] at short_times [B, Ts]; long: [B, Tl, Dv] at long_times [B, Tl] (seconds in the video)
        short_pos = short_times.float() * self.rate
        s = self.short_in(self._standardise(short[..., self.short_slice], self.short_slice))
        if not self.cfg.enabled:
            return self.out(self.short(s, short_pos, valid=short_valid))
        if long is None or long_times is None or long_valid is None:
            raise ValueError("LST fusion is enabled: long-term features, times and validity are required")
        # the video's length: its last long-term frame (they are sampled over the whole video)
        duration = torch.where(long_valid, long_times.float(), 0.0).amax(-1)
        s = self.short(s + self._clock(short_times, duration), short_pos, valid=short_valid)
        long_pos = long_times.float() * self.rate
        long = self.long_in(self._standardise(long[..., self.long_slice], self.long_slice))
        l_ = self.long(long + self._clock(long_times, duration), long_pos, valid=long_valid)
        s = self.fusion(s, short_pos, valid=short_valid, memory=Memory(l_, long_valid, long_pos))
        return self.out(s)
