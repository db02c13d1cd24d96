"""What both semantic tokenizers share: frames of features -> ids of their nearest k-means centroids.

``SemanticTokenizer`` (a self-supervised model's hidden states) and ``SpectralTokenizer`` (chroma, mel, level,
onset) differ only in ``features``; a subclass sets ``sample_rate``, ``stride`` (samples per token), ``dim``
(feature width), ``centroids`` (float [K, dim] or None) and ``device``; the centroids are saved in
``centroids.safetensors`` beside the tokenizer's other files.
"""

from __future__ import annotations

import torch

from pathlib import Path

from .errors import CheckpointError, ConfigError
from .fileio import check_keys, load_tensors, save_tensors
from .resample import resample

CENTROIDS_FILE = "centroids.safetensors"


class CentroidTokenizer:
    """Base class: checks, token counts and nearest-centroid ids over ``features(waveform, sample_rate)``."""

    sample_rate: int
    stride: int
    dim: int
    centroids: torch.Tensor | None
    device: torch.device

    def features(self, waveform: torch.Tensor, sample_rate: int) -> torch.Tensor:
        """Waveform [C, N] (or [N]) -> float frames [T, dim]."""
        raise NotImplementedError

    def _check_centroids(self, centroids: torch.Tensor, where: str, error: type = ConfigError) -> torch.Tensor:
        if not isinstance(centroids, torch.Tensor) or centroids.dim() != 2 or not torch.is_floating_point(centroids):
            shape = tuple(centroids.shape) if isinstance(centroids, torch.Tensor) else type(centroids).__name__
            raise error(f"{where}: centroids must be a float tensor [K, D], got {shape}")
        if centroids.shape[1] != self.dim:
            raise error(f"{where}: centroids are {centroids.shape[1]} wide but {self.feature_note()}; "
                        "fit them on this tokenizer's features")
        if centroids.shape[0] < 1 or not bool(torch.isfinite(centroids).all()):
            raise error(f"{where}: centroids must hold at least one row and only finite values")
        return centroids.detach().float().to(self.device).contiguous()

    def feature_note(self) -> str:
        """How wide this tokenizer's frames are, for error messages."""
        return f"this tokenizer's frames are {self.dim} wide"

    @property
    def vocab_size(self) -> int:
        """Number of token ids K (0 until centroids are set)."""
        return 0 if self.centroids is None else int(self.centroids.shape[0])

    def num_tokens(self, num_samples: int, sample_rate: int) -> int:
        """Tokens for `num_samples` at `sample_rate`: round(num_samples * frame_rate / sample_rate), halves up."""
        numerator = int(num_samples) * self.sample_rate
        denominator = self.stride * int(sample_rate)
        return (2 * numerator + denominator) // (2 * denominator)

    @torch.inference_mode()
    def tokenize(self, waveform: torch.Tensor, sample_rate: int) -> torch.Tensor:
        """Waveform [C, N] (or [N]) at `sample_rate` -> Long [T] nearest-centroid ids in 0..vocab_size-1."""
        if self.centroids is None:
            raise ConfigError("this semantic tokenizer has no centroids yet; fit k-means and use with_centroids()")
        feats = self.features(waveform, sample_rate)
        # squared distances without the constant |x|^2 term: the argmin is the same
        scores = self.centroids.pow(2).sum(1)[None, :] - 2.0 * feats @ self.centroids.T
        return scores.argmin(dim=1)

    def _mono(self, waveform: torch.Tensor, sample_rate: int) -> torch.Tensor:
        """Check, mix to mono and resample to ``sample_rate`` -> float32 [N'] on the device."""
        if not isinstance(waveform, torch.Tensor) or not torch.is_floating_point(waveform):
            got = waveform.dtype if isinstance(waveform, torch.Tensor) else type(waveform).__name__
            raise ConfigError(f"semantic tokenizer: waveform must be a float tensor [C, N], got {got}")
        if waveform.dim() not in (1, 2):
            raise ConfigError(f"semantic tokenizer: waveform must be [C, N], got shape {tuple(waveform.shape)}")
        if not bool(torch.isfinite(waveform).all()):
            raise ConfigError("semantic tokenizer: waveform holds NaN or infinite samples")
        x = waveform.float().to(self.device)
        x = x.mean(0) if x.dim() == 2 else x
        return resample(x, sample_rate, self.sample_rate)

    # -------------------------------------------------------------------------------------------- centroid file
    def _save_centroids(self, directory: Path) -> None:
        """Write the centroids (if any) to directory/centroids.safetensors."""
        if self.centroids is not None:
            save_tensors(Path(directory) / CENTROIDS_FILE, {"centroids": self.centroids})

    def _load_centroids(self, directory: Path, config: dict):
        """Set the centroids saved by ``_save_centroids`` and check them against ``config`` (its vocab_size and
        dim); a config with vocab_size 0 and no file leaves them unset. Returns self."""
        path = Path(directory) / CENTROIDS_FILE
        if config.get("vocab_size", 1) == 0 and not path.exists():
            return self
        tensors = load_tensors(path)
        check_keys(tensors, {"centroids"}, str(path))
        if "centroids" not in tensors:
            raise CheckpointError(f"{path}: no 'centroids' tensor; save the tokenizer again")
        self.centroids = self._check_centroids(tensors["centroids"], str(path), CheckpointError)
        for key in ("vocab_size", "dim"):
            if key in config and config[key] != getattr(self, key):
                raise CheckpointError(f"{path}: holds {key}={getattr(self, key)} but the tokenizer config "
                                      f"says {config[key]}; save the tokenizer again")
        return self
