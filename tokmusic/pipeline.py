"""A whole tokmusic pipeline: visual encoder, control embedder, three stages and the codec, saved as one directory.

    pipeline/
      pipeline.json        format version, sample rate, fps, each part's config and sub-directory
      visual/  codec/  control/  semantic_tokenizer/
      semantic/  coarse/  fine/     config.json + model.safetensors each
"""

from __future__ import annotations

import os
import random
import warnings
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from . import __version__
from .checkpoint import PipelineShape, compatibility_problems, load_stage, read_stage_config, write_stage_files
from .errors import CheckpointError, ConfigError, TokmusicError
from .fileio import atomic_dir, check_replaceable, read_json, write_json
from .lst_fusion import sample_long_term
from .music import Music
from .sampling import SamplingParams
from .sliding_window import generate_long, source_window, token_count, total_steps, visual_window
from .stage import STAGES, Conditioning, Stage

FORMAT_VERSION = 1
SAMPLING_OPTIONS = ("temperature", "top_k", "top_p", "cfg_scale")


def _part_modules():
    from . import codec, control, semantic_tokenizer, visual_encoders

    return {"visual": visual_encoders, "codec": codec, "control": control, "semantic_tokenizer": semantic_tokenizer}


class Pipeline:
    """Video (+ prompt) -> music. Build one from parts, or load one with ``from_pretrained``.

    Args:
        visual_encoder: a ``tokmusic.visual_encoders.VisualEncoder`` (several combine with ConcatEncoder).
        codec: the acoustic tokenizer (``tokmusic.codec.EncodecCodec``).
        stages: ``{"semantic": Stage, "coarse": Stage, "fine": Stage}``.
        control: the text/audio embedder for prompts (optional).
        semantic_tokenizer: k-means semantic tokenizer; needed to prepare training data, not to generate.
        fps: frames per second read from the video.
    """

    def __init__(self, *, visual_encoder, codec, stages: dict[str, Stage], control=None, semantic_tokenizer=None,
                 fps: float = 2.0):
        if fps <= 0:
            raise ConfigError(f"fps must be > 0, got {fps}")
        missing = [name for name in STAGES if name not in stages]
        if missing:
            raise ConfigError(f"a pipeline needs all three stages; missing {missing}")
        self.visual_encoder = visual_encoder
        self.codec = codec
        self.control = control
        self.semantic_tokenizer = semantic_tokenizer
        self.fps = float(fps)
        self.stages = {name: stages[name].eval() for name in STAGES}
        for name in STAGES:
            self._check(name, self.stages[name].cfg, "this pipeline")

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "Pipeline":
        """Move every part to ``device``; ``dtype`` (e.g. torch.bfloat16) applies to the three stages only
        (the encoders and the codec keep their precision). Returns self."""
        if isinstance(device, torch.dtype):  # pipe.to(torch.bfloat16)
            device, dtype = None, device
        for part in (self.visual_encoder, self.codec, self.control, self.semantic_tokenizer):
            if part is not None and device is not None:
                part.to(device)
        for stage in self.stages.values():
            stage.to(device=device, dtype=dtype)
        return self

    # -- compatibility ----------------------------------------------------------------------------------------
    @property
    def sample_rate(self) -> int:
        return self.codec.sample_rate

    def shape(self) -> PipelineShape:
        return PipelineShape.of(self.visual_encoder, self.codec, self.control, self.semantic_tokenizer)

    def _check(self, name: str, cfg, source: str) -> None:
        others = {k: s.cfg for k, s in self.stages.items() if k != name}
        problems = compatibility_problems(name, cfg, self.shape(), others)
        if problems:
            raise CheckpointError(f"{source} cannot be the {name!r} stage of this pipeline: " + "; ".join(problems))

    def replace_stage(self, name: str, stage: str | os.PathLike | Stage) -> None:
        """Swap the ``name`` stage ("semantic" | "coarse" | "fine") for a stage directory or Stage.

        The new stage must fit: its kind, codebook counts, vocabularies, rates and feature widths are checked
        against the codec, encoders and the neighbouring stages; a mismatch raises CheckpointError naming both.
        """
        if name not in STAGES:
            raise ConfigError(f"unknown stage name {name!r}; choose one of {', '.join(STAGES)}")
        if isinstance(stage, Stage):
            self._check(name, stage.cfg, "the given stage")
            self.stages[name] = stage.eval()
            return
        directory = Path(stage)
        self._check(name, read_stage_config(directory), str(directory))
        self.stages[name] = load_stage(directory, kind=name)

    # -- storage ----------------------------------------------------------------------------------------------
    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write the pipeline to ``directory`` (replaced whole, atomically: an interrupted save leaves no half)."""
        check_replaceable(directory, "pipeline.json", "pipeline directory")
        parts: dict[str, Any] = {}
        with atomic_dir(directory) as tmp:
            for key, part in (("visual", self.visual_encoder), ("codec", self.codec), ("control", self.control),
                              ("semantic_tokenizer", self.semantic_tokenizer)):
                if part is None:
                    parts[key] = None
                    continue
                (tmp / key).mkdir()
                part.save(tmp / key)
                parts[key] = {**part.to_config(), "path": key}
            for name, stage in self.stages.items():
                (tmp / name).mkdir()
                write_stage_files(stage, tmp / name)
            write_json(tmp / "pipeline.json", {
                "format_version": FORMAT_VERSION,
                "tokmusic_version": __version__,
                "sample_rate": self.sample_rate,
                "fps": self.fps,
                **parts,
                "stages": {name: name for name in STAGES},
            })

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike) -> "Pipeline":
        """Load a pipeline directory (or a hub id, when the network allows)."""
        directory = _resolve(name_or_path)
        meta = read_json(directory / "pipeline.json", "pipeline description")
        where = directory / "pipeline.json"
        if meta.get("format_version") != FORMAT_VERSION:
            raise CheckpointError(
                f"{where}: format version {meta.get('format_version')!r}; this tokmusic {__version__} reads "
                f"version {FORMAT_VERSION}. Upgrade tokmusic or re-save the pipeline"
            )
        modules = _part_modules()
        parts: dict[str, Any] = {}
        for key, module in modules.items():
            config = meta.get(key)
            if config is None:
                if key in ("visual", "codec"):
                    raise CheckpointError(f"{where}: the {key!r} part is missing; the pipeline is incomplete")
                parts[key] = None
                continue
            if not isinstance(config, dict) or "path" not in config:
                raise CheckpointError(f"{where}: the {key!r} entry must be an object with a 'path'")
            sub = directory / config["path"]
            if not sub.is_dir():
                raise CheckpointError(f"{sub}: directory of the {key!r} part is missing; the pipeline is incomplete")
            config = {k: v for k, v in config.items() if k != "path"}
            try:
                parts[key] = module.from_config(config, sub)
            except ConfigError as exc:
                raise CheckpointError(f"{sub}: {exc}") from None
        if meta.get("sample_rate") not in (None, parts["codec"].sample_rate):
            raise CheckpointError(
                f"{where}: sample_rate {meta['sample_rate']} but the codec in {directory / 'codec'} runs at "
                f"{parts['codec'].sample_rate} Hz; the codec was swapped without re-saving the pipeline"
            )
        stage_dirs = meta.get("stages") or {}
        stages = {}
        for name in STAGES:
            if name not in stage_dirs:
                raise CheckpointError(f"{where}: no {name!r} stage listed; the pipeline is incomplete")
            stages[name] = load_stage(directory / stage_dirs[name], kind=name)
        try:
            return cls(visual_encoder=parts["visual"], codec=parts["codec"], control=parts["control"],
                       semantic_tokenizer=parts["semantic_tokenizer"], stages=stages, fps=meta.get("fps", 2.0))
        except CheckpointError as exc:
            raise CheckpointError(f"{directory}: {exc}") from None

    # -- generation -------------------------------------------------------------------------------------------
    def _sampling(self, overrides: dict[str, Any]) -> dict[str, SamplingParams]:
        unknown = sorted(set(overrides) - set(SAMPLING_OPTIONS))
        if unknown:
            raise ConfigError(f"unknown option(s) {unknown}; sampling options are {', '.join(SAMPLING_OPTIONS)}")
        params = {}
        for name, stage in self.stages.items():
            per_stage = {}
            for key, value in overrides.items():
                if isinstance(value, dict):
                    bad = sorted(set(value) - set(STAGES))
                    if bad:
                        raise ConfigError(f"{key}: unknown stage name(s) {bad}; use {', '.join(STAGES)}")
                    value = value.get(name)
                per_stage[key] = value
            params[name] = stage.cfg.sampling().update(**per_stage)
        return params

    def generate(self, video: str | os.PathLike, prompt: str | None = None, *, seed: int | None = None,
                 seconds: float | None = None, progress: bool = True, **sampling) -> Music:
        """Music for ``video`` (any file ffmpeg reads), as long as the video (or its first ``seconds``).

        ``prompt`` steers the style through the text embedder (classifier-free guidance). Sampling options —
        ``temperature``, ``top_k``, ``top_p``, ``cfg_scale`` — take one value for every stage or a dict per stage,
        e.g. ``temperature={"fine": 0.3}``. The same ``seed`` gives the same music.
        """
        from .video import probe
        from .visual_encoders import extract_features

        params = self._sampling(sampling)
        if seconds is not None and not seconds > 0:
            raise ConfigError(f"seconds must be > 0, got {seconds}")
        control = self._embed_prompt(prompt)
        info = probe(video)
        duration = info.duration if seconds is None else min(float(seconds), info.duration)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**62):
            raise ConfigError(f"seed must be an integer in [0, 2**62), got {seed!r}")
        seed = random.randrange(2**62) if seed is None else seed

        with torch.inference_mode():
            feats = extract_features(video, self.visual_encoder, self.fps, seconds=duration, progress=progress)
            features, times = feats.features.float().cpu(), feats.timestamps

            def conditions(stage: Stage, tokens: torch.Tensor | None = None, rate: float = 0.0):
                """The stage's inputs for the window t0..t1; ``tokens`` at ``rate``/s are its source."""
                cfg = stage.cfg
                weight = stage.segment.weight
                if cfg.visual_dim:
                    long, _ = sample_long_term(features, cfg.lst.long_frames)  # fixed for the whole video
                    long_valid = torch.ones(1, long.shape[0], dtype=torch.bool)

                def condition(t0: float, t1: float) -> Conditioning:
                    cond = Conditioning()
                    if cfg.visual_dim:
                        short, short_times = visual_window(features, times, t0, t1)
                        cond.visual, cond.visual_times = short[None], short_times[None]
                        cond.visual_valid = torch.ones(1, short.shape[0], dtype=torch.bool)
                        cond.long, cond.long_valid = long[None], long_valid
                    if cfg.control_dim and control is not None:
                        cond.control, cond.control_valid = control, torch.ones(1, dtype=torch.bool)
                    if cfg.source_vocab:
                        src, start = source_window(tokens, rate, t0, t1)
                        cond.source, cond.source_start = src[None], torch.tensor([start])
                        cond.source_valid = torch.ones(1, src.shape[-1], dtype=torch.bool)
                    return cond.to(weight.device, weight.dtype)
                return condition

            def run(name: str, condition) -> torch.Tensor:
                stage = self.stages[name]
                # one generator per stage, on the stage's device (sampling draws there)
                generator = torch.Generator(stage.segment.weight.device).manual_seed(seed + STAGES.index(name))
                total = token_count(duration, stage.cfg.target_rate)
                with tqdm(total=total_steps(stage, total), desc=name, unit="step", disable=not progress,
                          leave=False) as bar:
                    return generate_long(stage, total, condition, params[name], generator, bar.update)

            semantic = run("semantic", conditions(self.stages["semantic"]))
            coarse = run("coarse", conditions(self.stages["coarse"], semantic, self.stages["semantic"].cfg.target_rate))
            fine = run("fine", conditions(self.stages["fine"], coarse, self.codec.frame_rate))
            waveform = self.codec.decode(torch.cat([coarse, fine], 0))
        samples = round(duration * self.sample_rate)
        waveform = waveform[:, :samples].float().cpu().contiguous()
        return Music(waveform, self.sample_rate)

    def _embed_prompt(self, prompt: str | None) -> torch.Tensor | None:
        if prompt is None:
            return None
        if not isinstance(prompt, str) or not prompt.strip():
            raise ConfigError("prompt is empty; pass a description such as 'slow melancholic piano', or None")
        if self.control is None:
            raise ConfigError("this pipeline has no text embedder, so it cannot follow a prompt; pass prompt=None")
        with torch.inference_mode():
            return self.control.embed_text([prompt])


def _resolve(name_or_path: str | os.PathLike) -> Path:
    path = Path(name_or_path)
    if path.is_dir():
        return path
    if path.exists():
        raise CheckpointError(f"{path}: is a file; a pipeline is a directory holding pipeline.json")
    text = str(name_or_path)
    if text.count("/") == 1 and not text.startswith((".", "/", "~")):
        try:
            from huggingface_hub import snapshot_download

            return Path(snapshot_download(text, allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model"]))
        except Exception as exc:  # offline, unknown repo, auth: all mean "not loadable from the hub"
            raise CheckpointError(
                f"{text}: not a local directory and not loadable from the hub ({type(exc).__name__}); "
                "pass the path of a saved pipeline directory"
            ) from None
    raise CheckpointError(f"{path}: pipeline directory not found; pass the path of a saved pipeline directory")


_DEFAULT: Pipeline | None = None
DEFAULT_PIPELINE_NOTE = (
    "no trained default pipeline is bundled yet: using tokmusic.testing.tiny_pipeline() (random weights, "
    "noise-like music); pass a trained pipeline directory for real music"
)


def default_pipeline() -> Pipeline:
    """The bundled default pipeline.

    No trained bundle ships yet, so this is ``tokmusic.testing.tiny_pipeline()``: random weights, real
    components. Its music is noise-like; it exercises the whole path end to end.
    """
    global _DEFAULT
    if _DEFAULT is None:
        from .testing import tiny_pipeline

        warnings.warn(DEFAULT_PIPELINE_NOTE, stacklevel=3)
        _DEFAULT = tiny_pipeline(seed=0)
    return _DEFAULT


def generate(video: str | os.PathLike, prompt: str | None = None, *, pipeline=None, seed: int | None = None,
             seconds: float | None = None, progress: bool = True, **sampling) -> Music:
    """Music for ``video``: see ``Pipeline.generate``. ``pipeline``: None (the default pipeline), a directory
    path, or a ``Pipeline``."""
    from .video import probe

    if seconds is not None and not seconds > 0:
        raise ConfigError(f"seconds must be > 0, got {seconds}")
    probe(video)  # a bad video fails before any model loads
    if pipeline is None:
        pipe = default_pipeline()
    elif isinstance(pipeline, Pipeline):
        pipe = pipeline
    elif isinstance(pipeline, (str, os.PathLike)):
        pipe = Pipeline.from_pretrained(pipeline)
    else:
        raise ConfigError(f"pipeline must be None, a directory path or a tokmusic.Pipeline, not {type(pipeline).__name__}")
    return pipe.generate(video, prompt, seed=seed, seconds=seconds, progress=progress, **sampling)


__all__ = ["Pipeline", "generate", "default_pipeline", "TokmusicError"]
