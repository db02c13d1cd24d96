"""Visual encoders: frames -> one feature vector per frame, and the loop that runs them over a video.

    encoder = ConcatEncoder([CLIPVisualEncoder.from_pretrained("openai/clip-vit-base-patch32"), MotionEncoder()])
    feats = extract_features("clip.mp4", encoder, fps=2.0)      # feats.features: float32 [T, D]

CLIP gives what is in the picture (V2Meow's CLIP/ViT features); the motion encoder gives how fast and which
way things move (the role I3D-flow plays in V2Meow), and the colour encoder the picture's colour, both without any
weights.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from .errors import CheckpointError, ConfigError, VideoError
from .fileio import fitting_pretrained, read_json
from .video import probe, read_frames, sample_times
from .hf_loading import loading, no_progress_bars
from .schema import Field, Registry, array, choice, number, positive, size

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class VisualEncoder(torch.nn.Module):
    """Interface: encode(uint8 [N, H, W, 3]) -> float32 [N, dim], called chunk by chunk in video order.

    `image_size` is the square frame size the encoder prefers (None: any); encode() accepts any size.
    Encoders with state across frames clear it in reset(), which is called before each video.
    `a + b` concatenates encoders' features.
    """

    dim: int
    image_size: int | None = None

    def reset(self) -> None:
        """Forget the previous video (stateless encoders do nothing)."""

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 [N, H, W, 3] -> float32 [N, dim]."""
        raise NotImplementedError

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.encode(frames)

    def to_config(self) -> dict:
        """JSON-able description with a "type" key; with save()'s files it rebuilds the encoder."""
        raise NotImplementedError

    def save(self, directory: Path) -> None:
        """Write weights/files into the existing `directory` (nothing by default)."""

    @classmethod
    def load(cls, directory: Path | None, config: dict) -> VisualEncoder:
        raise NotImplementedError

    def __add__(self, other: VisualEncoder) -> ConcatEncoder:
        left = list(self.members) if isinstance(self, ConcatEncoder) else [self]
        right = list(other.members) if isinstance(other, ConcatEncoder) else [other]
        return ConcatEncoder(left + right)


def _square(frames: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 [N, H, W, 3] -> float [N, 3, size, size] in [0, 1]: shorter side resized, centre crop."""
    x = frames.permute(0, 3, 1, 2).float().div_(255)
    h, w = x.shape[-2:]
    if (h, w) != (size, size):
        scale = size / min(h, w)
        rh, rw = max(size, round(h * scale)), max(size, round(w * scale))
        x = F.interpolate(x, size=(rh, rw), mode="bicubic", antialias=True, align_corners=False).clamp_(0, 1)
        top, left = (rh - size) // 2, (rw - size) // 2
        x = x[..., top : top + size, left : left + size]
    return x


class CLIPVisualEncoder(VisualEncoder):
    """CLIP vision tower (transformers CLIPVisionModel) as a frame encoder.

    features="pooled": the pooler output, [N, hidden]. features="patch": the patch tokens of the last layer
    average-pooled to a grid x grid map and flattened, [N, grid * grid * hidden] (keeps where things are).
    """

    def __init__(self, model, features: str = "pooled", grid: int = 2, image_mean=CLIP_MEAN, image_std=CLIP_STD):
        super().__init__()
        if features not in ("pooled", "patch"):
            raise ConfigError(f"CLIP features must be 'pooled' or 'patch', got {features!r}")
        cfg = model.config
        side = cfg.image_size // cfg.patch_size
        if features == "patch" and not 1 <= grid <= side:
            raise ConfigError(f"CLIP patch grid must be between 1 and {side} (patches per side), got {grid}")
        self.model = model.eval()
        self.features, self.grid = features, int(grid)
        self.image_size = int(cfg.image_size)
        hidden = int(cfg.hidden_size)
        self.dim = hidden if features == "pooled" else self.grid * self.grid * hidden
        self.image_mean = [float(v) for v in image_mean]
        self.image_std = [float(v) for v in image_std]
        self.register_buffer("mean", torch.tensor(image_mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(image_std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, features: str = "pooled", grid: int = 2
                        ) -> CLIPVisualEncoder:
        """Load from a local directory or a hub id (a full CLIPModel checkpoint works too); safetensors only.

        Normalisation comes from the checkpoint's preprocessor_config.json when there is one, else CLIP's.
        """
        from transformers import CLIPVisionModel

        with loading(name_or_path, "a CLIP vision model") as source, fitting_pretrained(CLIPVisionModel, source):
            model = CLIPVisionModel.from_pretrained(source, use_safetensors=True)
        mean, std = _preprocessor_stats(name_or_path)
        return cls(model, features, grid, mean, std)

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 [N, H, W, 3] -> float32 [N, dim]."""
        param = next(self.model.parameters())
        x = _square(frames.to(param.device), self.image_size)
        x = ((x - self.mean) / self.std).to(param.dtype)
        out = self.model(pixel_values=x)
        if self.features == "pooled":
            return out.pooler_output.float()
        tokens = out.last_hidden_state[:, 1:]  # [N, P*P, hidden]; drop the class token
        n, count, hidden = tokens.shape
        side = math.isqrt(count)
        grid = tokens.transpose(1, 2).reshape(n, hidden, side, side)
        grid = F.adaptive_avg_pool2d(grid.float(), self.grid)  # [N, hidden, g, g]
        return grid.permute(0, 2, 3, 1).reshape(n, self.dim)

    def to_config(self) -> dict:
        return {"type": "clip", "features": self.features, "grid": self.grid,
                "image_mean": self.image_mean, "image_std": self.image_std}

    def save(self, directory: Path) -> None:
        with no_progress_bars():
            self.model.save_pretrained(str(directory), safe_serialization=True)

    @classmethod
    def load(cls, directory: Path | None, config: dict) -> CLIPVisualEncoder:
        REGISTRY.check(config, "clip encoder config", expect="clip")
        features, grid = config.get("features", "pooled"), config.get("grid", 2)
        if directory is None:
            if "pretrained" not in config:
                raise ConfigError("clip encoder config: needs its saved directory or a 'pretrained' name/path")
            encoder = cls.from_pretrained(config["pretrained"], features, grid)
        else:
            directory = Path(directory)
            if not (directory / "config.json").is_file():
                raise CheckpointError(f"{directory}: the CLIP encoder's config.json is missing; save it again")
            encoder = cls.from_pretrained(directory, features, grid)
        mean, std = config.get("image_mean"), config.get("image_std")
        if mean is not None and std is not None:
            if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
                raise ConfigError(f"clip encoder config: image_mean/image_std need 3 values (std > 0), "
                                  f"got {mean} / {std}")
            encoder = cls(encoder.model, features, grid, mean, std)
        return encoder


def _preprocessor_stats(name_or_path) -> tuple[tuple, tuple]:
    """image_mean/image_std from preprocessor_config.json (local dir or hub), else CLIP's defaults."""
    path = Path(name_or_path) / "preprocessor_config.json"
    cfg = None
    if path.is_file():
        cfg = read_json(path, "preprocessor config")
    elif not Path(name_or_path).is_dir():
        try:
            from huggingface_hub import hf_hub_download

            cfg = read_json(hf_hub_download(str(name_or_path), "preprocessor_config.json"), "preprocessor config")
        except Exception:  # noqa: BLE001 — no preprocessor file (or no network): CLIP's statistics are right
            cfg = None
    mean = (cfg or {}).get("image_mean", CLIP_MEAN)
    std = (cfg or {}).get("image_std", CLIP_STD)
    if len(mean) != 3 or len(std) != 3:
        return CLIP_MEAN, CLIP_STD
    return tuple(mean), tuple(std)


def tiny_clip_encoder(seed: int = 0, features: str = "pooled", grid: int = 2) -> CLIPVisualEncoder:
    """A random tiny CLIP (image 32, patch 8, hidden 32, 2 layers, 2 heads) for tests and examples."""
    from transformers import CLIPVisionConfig, CLIPVisionModel

    config = CLIPVisionConfig(image_size=32, patch_size=8, hidden_size=32, intermediate_size=64,
                              num_hidden_layers=2, num_attention_heads=2, projection_dim=32)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPVisionModel(config)
    return CLIPVisualEncoder(model, features, grid)


# |frame difference| histogram edges (grey levels out of 255): roughly doubling, so slow and fast motion
# both get resolution
_HIST_EDGES = (1, 2, 4, 8, 16, 32, 64)


class MotionEncoder(VisualEncoder):
    """Weight-free motion features from differences between consecutive sampled frames.

    Frames are turned grey and resized to size x size. Per frame, against the previous sampled frame:
    [mean d, std d, mean |d|] (d = current - previous, grey in [0, 1]), the mean |d| over a grid x grid
    layout, the fraction of pixels whose |d| falls in each of `bins` magnitude bins, and the global shift
    (dy, dx, peak) by phase correlation: dy, dx in fractions of the picture (positive: content moved
    down / right), peak the correlation's height (1 for a pure shift). With ``speed`` one more channel: the
    shift's length, from the correlation peak refined to a fraction of a pixel, in fractions of the picture. A
    pan's direction sets the signs of dy and dx, so neither alone says how fast the camera moves; the speed
    does, whichever way it pans (a camera that surges on the beat shows its beat there). The first frame of a
    video gets zeros. dim = 6 + grid**2 + bins (+ 1 with ``speed``).
    """

    def __init__(self, size: int = 64, grid: int = 4, speed: bool = False):
        super().__init__()
        if size < 8 or grid < 1 or grid > size:
            raise ConfigError(f"motion encoder: need size >= 8 and 1 <= grid <= size, got size={size}, grid={grid}")
        self.size, self.grid, self.speed = int(size), int(grid), bool(speed)
        self.bins = len(_HIST_EDGES) + 1
        self.dim = 6 + self.grid**2 + self.bins + int(self.speed)
        self.image_size = None
        self._previous: torch.Tensor | None = None  # [size, size] grey of the last frame seen
        window = torch.hann_window(self.size, periodic=False, dtype=torch.float64)
        self.register_buffer("window", (window[:, None] * window[None, :]).float(), persistent=False)

    def reset(self) -> None:
        self._previous = None

    def _grey(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 [N, H, W, 3] -> float32 [N, size, size] in [0, 1]."""
        x = frames.float().div(255)
        grey = x[..., 0] * 0.299 + x[..., 1] * 0.587 + x[..., 2] * 0.114  # [N, H, W]
        if grey.shape[-2:] != (self.size, self.size):
            grey = F.interpolate(grey[:, None], size=(self.size, self.size), mode="area")[:, 0]
        return grey

    def _shift(self, previous: torch.Tensor, current: torch.Tensor) -> torch.Tensor:
        """Phase correlation of [M, S, S] pairs -> [M, 3] (dy, dx as fractions of S, peak height), or [M, 4]
        with ``speed``: the shift's length with the peak refined by a parabola through it and its neighbours."""
        w = self.window.to(current.device)
        a = torch.fft.rfft2((previous - previous.mean((-2, -1), keepdim=True)) * w)
        b = torch.fft.rfft2((current - current.mean((-2, -1), keepdim=True)) * w)
        cross = b * a.conj()
        surface = torch.fft.irfft2(cross / (cross.abs() + 1e-9), s=(self.size, self.size))  # [M, S, S]
        flat = surface.flatten(1)
        peak, index = flat.max(1)
        s = self.size
        iy, ix = torch.div(index, s, rounding_mode="floor"), index % s
        # indices past the middle are negative shifts (the correlation wraps around)
        dy = torch.where(iy > s // 2, iy - s, iy).float()
        dx = torch.where(ix > s // 2, ix - s, ix).float()
        out = [dy / s, dx / s, peak.float()]
        if self.speed:
            m = torch.arange(len(index), device=index.device)
            fy = dy + _vertex(surface[m, (iy - 1) % s, ix], peak, surface[m, (iy + 1) % s, ix])
            fx = dx + _vertex(surface[m, iy, (ix - 1) % s], peak, surface[m, iy, (ix + 1) % s])
            out.append(torch.hypot(fy, fx) / s)
        return torch.stack(out, 1)

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 [N, H, W, 3] -> float32 [N, dim]; the previous frame is remembered across calls."""
        grey = self._grey(frames)  # [N, S, S]
        n = grey.shape[0]
        out = torch.zeros(n, self.dim, device=grey.device)
        if n == 0:
            return out
        previous = grey[:-1] if self._previous is None else torch.cat([self._previous[None].to(grey), grey[:-1]])
        current = grey[1:] if self._previous is None else grey
        self._previous = grey[-1].clone()
        if current.shape[0] == 0:
            return out
        d = current - previous  # [M, S, S]
        mag = d.abs()
        g = self.grid
        stats = torch.stack([d.mean((1, 2)), d.flatten(1).std(1, correction=0), mag.mean((1, 2))], 1)
        cells = F.adaptive_avg_pool2d(mag[:, None], g).flatten(1)  # [M, g*g]
        edges = torch.tensor(_HIST_EDGES, dtype=mag.dtype, device=mag.device) / 255
        # a tiny margin so float noise on exact multiples of 1/255 does not flip bins
        which = torch.bucketize(mag.flatten(1) + 1e-6, edges)  # [M, S*S] in 0..bins-1
        hist = F.one_hot(which, self.bins).float().mean(1)
        shift = self._shift(previous, current)
        feats = torch.cat([stats, cells, hist, shift], 1)
        out[n - current.shape[0] :] = feats
        return out

    def to_config(self) -> dict:
        config = {"type": "motion", "size": self.size, "grid": self.grid}
        return {**config, "speed": True} if self.speed else config  # older pipelines read the same without it

    @classmethod
    def load(cls, directory: Path | None, config: dict) -> MotionEncoder:
        REGISTRY.check(config, "motion encoder config", expect="motion")
        return cls(size=config.get("size", 64), grid=config.get("grid", 4), speed=config.get("speed", False))


class ColourEncoder(VisualEncoder):
    """Weight-free colour features: the mean red, green and blue of each cell of a grid x grid layout, and the
    whole frame's standard deviation of each, all in [0, 1].

    A network trained for what is in the picture learns to see past a colour cast, so a grade over the whole
    video (warm against cool) reaches its features entangled with the photograph, and a stage learns it
    poorly for photographs it has not seen. These channels state the colour itself. dim = 3 * grid**2 + 3.
    """

    def __init__(self, size: int = 32, grid: int = 1):
        super().__init__()
        if size < 1 or grid < 1 or grid > size:
            raise ConfigError(f"colour encoder: need size >= 1 and 1 <= grid <= size, got size={size}, grid={grid}")
        self.size, self.grid = int(size), int(grid)
        self.dim = 3 * self.grid**2 + 3
        self.image_size = None

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 [N, H, W, 3] -> float32 [N, dim]."""
        x = frames.permute(0, 3, 1, 2).float().div(255)  # [N, 3, H, W]
        if x.shape[0] == 0:
            return torch.zeros(0, self.dim, device=x.device)
        if x.shape[-2:] != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="area")
        cells = F.adaptive_avg_pool2d(x, self.grid).flatten(1)  # [N, 3 * g * g], channel-major
        spread = x.flatten(2).std(2, correction=0)  # [N, 3]
        return torch.cat([cells, spread], 1)

    def to_config(self) -> dict:
        return {"type": "colour", "size": self.size, "grid": self.grid}

    @classmethod
    def load(cls, directory: Path | None, config: dict) -> ColourEncoder:
        REGISTRY.check(config, "colour encoder config", expect="colour")
        return cls(size=config.get("size", 32), grid=config.get("grid", 1))


def _vertex(before: torch.Tensor, at: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
    """Offset in [-0.5, 0.5] of the top of the parabola through three samples one step apart (0 where flat)."""
    curve = before - 2 * at + after
    offset = torch.where(curve < 0, (before - after) / (2 * curve).clamp_max(-1e-12), torch.zeros_like(at))
    return offset.clamp(-0.5, 0.5)


class ConcatEncoder(VisualEncoder):
    """Members' features side by side, in order: dim = sum of members' dims.

    image_size is the largest member preference; each member resizes frames for itself.
    """

    def __init__(self, members: list[VisualEncoder]):
        super().__init__()
        if not members:
            raise ConfigError("a concatenated visual encoder needs at least one member")
        self.members = torch.nn.ModuleList(members)
        self.dim = sum(m.dim for m in members)
        sizes = [m.image_size for m in members if m.image_size]
        self.image_size = max(sizes) if sizes else None

    def reset(self) -> None:
        for member in self.members:
            member.reset()

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        outs = [m.encode(frames).float() for m in self.members]
        # members may live on different devices (a weight-free motion encoder stays on the CPU)
        return torch.cat([o.to(outs[0].device) for o in outs], dim=-1)

    def to_config(self) -> dict:
        return {"type": "concat", "members": [m.to_config() for m in self.members]}

    def save(self, directory: Path) -> None:
        for i, member in enumerate(self.members):
            sub = Path(directory) / f"member{i}"
            sub.mkdir(exist_ok=True)
            member.save(sub)

    @classmethod
    def load(cls, directory: Path | None, config: dict) -> ConcatEncoder:
        REGISTRY.check(config, "concat encoder config", expect="concat")
        members = config["members"]
        subs = [None if directory is None else Path(directory) / f"member{i}" for i in range(len(members))]
        return cls([from_config(m, s) for m, s in zip(members, subs)])


# Visual encoder configs by "type" (the visual entry of pipeline.json); a concat's members are configs too.
REGISTRY = Registry("visual encoder")
REGISTRY.register("clip", CLIPVisualEncoder.load, {
    "features": choice("pooled", "patch"), "grid": size(), "image_mean": array(number(), 3),
    "image_std": array(positive(), 3), "pretrained": Field(str),  # a name or path, when there is no directory
}, needs_directory=False)
REGISTRY.register("motion", MotionEncoder.load, {"size": size(4096), "grid": size(4096), "speed": Field(bool)},
                  needs_directory=False)
REGISTRY.register("colour", ColourEncoder.load, {"size": size(4096), "grid": size(4096)}, needs_directory=False)
REGISTRY.register("efficientnet_lite0", lambda directory, config: _efficientnet().load(directory, config), {
    "size": Field(int, 32, 1024), "grid": size(32), "image_mean": array(number(), 3),
    "image_std": array(positive(), 3),
}, needs_directory=False)  # weights read from the installed package (efficientnet_encoder.py)
REGISTRY.register("concat", ConcatEncoder.load, {
    "members": array(Field(dict, part=REGISTRY), min_length=1, required=True),
}, needs_directory=False)


def _efficientnet():
    from .efficientnet_encoder import EfficientNetEncoder  # imported when used: it imports this module

    return EfficientNetEncoder


def from_config(config: dict, directory: Path | None = None, *, where: str | None = None,
                key: str = "") -> VisualEncoder:
    """Rebuild an encoder from to_config() output and the directory its save() wrote; errors name `where` and `key`."""
    return REGISTRY.load(config, directory, where=where, key=key)


@dataclass
class VisualFeatures:
    """Per-frame features of a video: features float32 [T, D] at timestamps float64 [T] (seconds).

    duration: seconds covered (the video's, or `seconds` when shorter); fps: the sampling rate used.
    """

    features: torch.Tensor
    timestamps: torch.Tensor
    duration: float
    fps: float


def extract_features(path: str | os.PathLike, encoder: VisualEncoder, fps: float = 2.0, *,
                     seconds: float | None = None, chunk: int = 32, progress: bool = False) -> VisualFeatures:
    """Decode `path` at `fps` and encode it chunk by chunk (never all frames at once), in inference mode.

    Frames are read as squares of the encoder's preferred size (224 if it has none); `seconds` limits the
    span read from the start.
    """
    if seconds is not None and seconds <= 0:
        raise VideoError(f"{path}: seconds must be positive, got {seconds}")
    info = probe(path)
    duration = info.duration if seconds is None else min(float(seconds), info.duration)
    size = encoder.image_size or 224
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(sample_times(0.0, duration, fps)) if fps > 0 else None, unit="frame",
                   desc=f"visual features {Path(path).name}")
    feats, stamps = [], []
    encoder.reset()
    try:
        with torch.inference_mode():
            for frames, times in read_frames(path, fps, size, end=duration, chunk=chunk):
                feats.append(encoder.encode(frames).float().cpu())
                stamps.append(times)
                if bar is not None:
                    bar.update(len(times))
    finally:
        if bar is not None:
            bar.close()
    if not feats:
        raise VideoError(f"{path}: no frames to encode before {duration:.3f} s; pass a longer span")
    return VisualFeatures(torch.cat(feats), torch.cat(stamps), duration, float(fps))
