"""Video embedders for audio–visual scores: CLIP (or any transformers image model) or weight-free statistics.

    vis = load_visual_embedder("video-stats")      # colour histograms, motion, cut rate (no weights)
    vis = load_visual_embedder("path/to/clip")     # transformers CLIPModel / CLIPVisionModel / any image model
    vis.embed_video("clip.mp4") -> [D]             # mean over frames sampled at `fps`
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .embedders import _hf_load, _pooled, default_device
from .video_events import analyze_video, read_frames


class VisualEmbedder:
    """One vector per video. Subclasses set `name` and `dim` and implement `embed_video`."""

    name: str = "visual-embedder"
    dim: int = 0

    def describe(self) -> dict:
        return {"name": self.name, "dim": self.dim}

    def embed_video(self, path: str | Path) -> np.ndarray:
        raise NotImplementedError


class VideoStatsEmbedder(VisualEmbedder):
    """Weight-free: colour-histogram mean/std, motion mean/std, brightness mean/std and cut rate [53]."""

    name = "video-stats"
    dim = 53

    def embed_video(self, path: str | Path) -> np.ndarray:
        return analyze_video(path).features


class HFImageEmbedder(VisualEmbedder):
    """Frames through a transformers image model (CLIP's projected image embedding where there is one),
    averaged over frames sampled at `fps` (at most `max_frames`, spread over the video)."""

    batch_size = 16

    def __init__(self, spec: str, device: torch.device | str | None = None, fps: float = 1.0, max_frames: int = 64):
        from transformers import AutoImageProcessor, AutoModel

        self.name, self.fps, self.max_frames = spec, fps, max_frames
        self.device = torch.device(device) if device is not None else default_device()
        self.processor = _hf_load(AutoImageProcessor.from_pretrained, spec)
        self.model = _hf_load(AutoModel.from_pretrained, spec, use_safetensors=True).eval().to(self.device)
        # the output size depends on which head the checkpoint has: ask the model once
        self.dim = int(self.embed_frames(np.zeros((1, 224, 224, 3), np.uint8)).shape[1])

    @torch.inference_mode()
    def embed_frames(self, frames: np.ndarray) -> torch.Tensor:
        """Embeddings [N, D] of frames uint8 [N, H, W, 3]."""
        outs = []
        for i in range(0, frames.shape[0], self.batch_size):
            pixels = self.processor(images=list(frames[i : i + self.batch_size]), return_tensors="pt")["pixel_values"]
            pixels = pixels.to(self.device)
            if hasattr(self.model, "get_image_features"):
                out = _pooled(self.model.get_image_features(pixel_values=pixels))
            else:
                result = self.model(pixel_values=pixels)
                out = result.image_embeds if getattr(result, "image_embeds", None) is not None else (
                    result.pooler_output if getattr(result, "pooler_output", None) is not None
                    else result.last_hidden_state.mean(dim=1))
            outs.append(out.float().cpu())
        return torch.cat(outs)

    def embed_video(self, path: str | Path) -> np.ndarray:
        frames = np.concatenate([f for f, _ in read_frames(path, self.fps, 224)])
        if frames.shape[0] > self.max_frames:
            frames = frames[np.linspace(0, frames.shape[0] - 1, self.max_frames).round().astype(int)]
        return self.embed_frames(frames).mean(dim=0).double().numpy()


def load_visual_embedder(spec: str, device: torch.device | str | None = None) -> VisualEmbedder:
    """"video-stats" (weight-free), or a directory / hub id of a transformers image model (CLIP, SigLIP...)."""
    if spec == "video-stats":
        return VideoStatsEmbedder()
    return HFImageEmbedder(spec, device)
