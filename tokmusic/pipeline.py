"""A whole tokmusic pipeline: visual encoder, control embedder, three stages and the codec, saved as one directory.

    pipeline/
      pipeline.json        format version, sample rate, fps, each part's config and sub-directory
      visual/  codec/  control/  semantic_tokenizer/
      semantic/  coarse/  fine/     config.json + model.safetensors each
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import torch

from . import __version__
from .compatibility import PipelineShape, compatibility_problems
from .stage_files import load_stage, read_stage_config, write_stage_files
from .errors import CheckpointError, ConfigError, TokmusicError
from .fileio import atomic_dir, check_output, check_replaceable, read_json, write_json
from .generation import request_tokens
from .music import Music
from .schema import MAX_SEED, Field, check, check_generate_arguments, check_object, inside, pipeline_fields, shown
from .sampling import SamplingParams
from .stage import STAGES, Stage

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

    def quantize(self, weights: str = "int8") -> "Pipeline":
        """Give the three stages' decoders and output heads int8 weights (``tokmusic.quantize``), in place;
        returns self. Only ``"int8"`` is accepted; a second call changes nothing. A quantized pipeline cannot be
        saved: int8 weights are a load-time option. Accuracy and speed: see ``tokmusic/quantize.py``."""
        from .quantize import check_weights, quantize_stage

        check_weights(weights, accepted=("int8",))
        for stage in self.stages.values():
            quantize_stage(stage)
        return self

    # -- compatibility ----------------------------------------------------------------------------------------
    @property
    def sample_rate(self) -> int:
        return self.codec.sample_rate

    def shape(self) -> PipelineShape:
        return PipelineShape.of(self.visual_encoder, self.codec, self.control, self.semantic_tokenizer, self.fps)

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
        if not isinstance(name, str) or name not in STAGES:
            raise ConfigError(f"unknown stage name {name!r}; choose one of {', '.join(STAGES)}")
        if not isinstance(stage, (Stage, str, os.PathLike)):
            raise ConfigError(f"replace_stage: pass a stage directory or a tokmusic Stage, got {shown(stage)}")
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
        from .quantize import refuse_saving_quantized

        refuse_saving_quantized(*self.stages.values())
        directory = check_output(directory, "pipeline directory", directory=True)
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
        """Load a pipeline directory (or a hub id, when the network allows).

        Every JSON file is checked key by key (``schema.py``) before any weights load, and every weights file
        against its config; errors are CheckpointErrors naming the file and the key.
        """
        directory = _resolve(name_or_path)
        where = directory / "pipeline.json"
        meta = read_json(where, "pipeline description")
        if meta.get("format_version") != FORMAT_VERSION or isinstance(meta.get("format_version"), bool):
            raise CheckpointError(
                f"{where}: format version {shown(meta.get('format_version'))} (format_version); this tokmusic "
                f"{__version__} reads format version {FORMAT_VERSION}. Upgrade tokmusic or re-save the pipeline"
            )
        modules = _part_modules()
        try:
            check_object(meta, pipeline_fields(), str(where))
            parts: dict[str, Any] = dict.fromkeys(modules)
            entries = {}  # part -> (its config, its directory)
            for key, module in modules.items():
                if meta.get(key) is None:
                    continue
                config = {k: v for k, v in meta[key].items() if k != "path"}
                check(meta[key].get("path"), Field(str), str(where), f"{key}.path")
                module.REGISTRY.check(config, str(where), key)
                sub = inside(directory, meta[key]["path"], str(where), f"{key}.path")
                if not sub.is_dir() and not module.REGISTRY.needs_directory(config):
                    sub = None  # a part with no files (read from its package): git keeps no empty folder
                elif not sub.is_dir():
                    raise CheckpointError(f"{sub}: directory of the {key!r} part ({where}: {key}.path) is missing; "
                                          "the pipeline is incomplete")
                entries[key] = (config, sub)
            stage_dirs = {name: inside(directory, meta["stages"][name], str(where), f"stages.{name}")
                          for name in STAGES}
            configs = {name: read_stage_config(stage_dirs[name]) for name in STAGES}
            # every file checked: now the parts load
            for key, (config, sub) in entries.items():
                parts[key] = modules[key].from_config(config, sub, where=str(where), key=key)
        except ConfigError as exc:
            raise CheckpointError(str(exc)) from None
        if meta.get("sample_rate") not in (None, parts["codec"].sample_rate):
            raise CheckpointError(
                f"{where}: sample_rate {meta['sample_rate']} but the codec in {directory / 'codec'} runs at "
                f"{parts['codec'].sample_rate} Hz; the codec was swapped without re-saving the pipeline"
            )
        fps = meta.get("fps", 2.0)
        shape = PipelineShape.of(parts["visual"], parts["codec"], parts["control"], parts["semantic_tokenizer"], fps)
        for name, cfg in configs.items():
            if cfg.kind != name:
                raise CheckpointError(f"{stage_dirs[name]}: holds a {cfg.kind!r} stage where a {name!r} stage is "
                                      f"needed ({where}: stages.{name})")
        for name, cfg in configs.items():
            problems = compatibility_problems(name, cfg, shape, {k: c for k, c in configs.items() if k != name})
            if problems:
                raise CheckpointError(f"{stage_dirs[name] / 'config.json'} cannot be the {name!r} stage of this "
                                      "pipeline: " + "; ".join(problems))
        # each stage's kind was checked above, with the pipeline.json key that names it
        stages = {name: load_stage(stage_dirs[name], cfg=configs[name]) for name in STAGES}
        try:
            return cls(visual_encoder=parts["visual"], codec=parts["codec"], control=parts["control"],
                       semantic_tokenizer=parts["semantic_tokenizer"], stages=stages, fps=fps)
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

    def check_request(self, prompt: str | None = None, **sampling) -> None:
        """Raise the ConfigError ``generate`` would for this prompt and these sampling options, without a video
        (a batch checks once, not once per video)."""
        self._sampling(sampling)
        self._embed_prompt(prompt)

    def generate(self, video: str | os.PathLike, prompt: str | None = None, *, seed: int | None = None,
                 seconds: float | None = None, progress: bool = True, **sampling) -> Music:
        """Music for ``video`` (any file ffmpeg reads), as long as the video (or its first ``seconds``).

        ``prompt`` steers the style through the text embedder (classifier-free guidance). Sampling options —
        ``temperature``, ``top_k``, ``top_p``, ``cfg_scale`` — take one value for every stage or a dict per stage,
        e.g. ``temperature={"fine": 0.3}``. The same ``seed`` gives the same music.
        """
        tokens = self.generate_tokens(video, prompt, seed=seed, seconds=seconds, progress=progress, **sampling)
        return self._decode(tokens)

    def generate_samples(self, video: str | os.PathLike, prompt: str | None = None, *, seeds: list[int],
                         seconds: float | None = None, progress: bool = True, **sampling) -> list[Music]:
        """One piece of music per seed for one video, decoded together: each decode step serves every sample,
        which costs far less than a step per sample (``benchmarks/generation_speed.py --samples N``).

        Sample k is the music ``generate(video, prompt, seed=seeds[k], ...)`` gives, up to the rounding of
        matrix products over more rows. Other arguments as ``generate``.
        """
        if not isinstance(seeds, (list, tuple)) or not seeds:
            raise ConfigError(f"seeds must be a non-empty list of integers in [0, 2**62), got {shown(seeds)}")
        for seed in seeds:
            check_generate_arguments(prompt=prompt, seed=seed, seconds=seconds, progress=progress)
        return [self._decode(tokens) for tokens in self._tokens(video, prompt, list(seeds), seconds, progress,
                                                                sampling)]

    def generate_tokens(self, video: str | os.PathLike, prompt: str | None = None, *, seed: int | None = None,
                        seconds: float | None = None, progress: bool = True, **sampling) -> dict:
        """The tokens ``generate`` decodes: {"semantic": Long ``[1, T_s]``, "coarse": Long ``[N_c, T_a]``,
        "fine": Long ``[N_f, T_a]``, "duration": seconds covered}. Same arguments as ``generate``."""
        check_generate_arguments(prompt=prompt, seed=seed, seconds=seconds, progress=progress)
        seed = random.randrange(MAX_SEED) if seed is None else seed
        return self._tokens(video, prompt, [seed], seconds, progress, sampling)[0]

    def generate_many(self, videos: list[str | os.PathLike], prompts: str | list[str | None] | None = None, *,
                      seeds: list[int] | None = None, seconds: float | None = None, progress: bool = True,
                      **sampling) -> list[Music]:
        """Music for several videos, decoded together: videos whose music has as many tokens at every stage (the
        same length, as with clips of a dataset) share each decode step, which costs far less than a step per
        video (``benchmarks/generation_speed.py --videos N``); the others are decoded in groups of equal length.

        ``prompts``: one for every video, or one per video (None: no prompt for that one). ``seeds``: one per video
        (default: fresh random seeds). Music n is what ``generate(videos[n], prompts[n], seed=seeds[n], ...)``
        gives, up to the rounding of matrix products over more rows. Other arguments as ``generate``.
        """
        if not isinstance(videos, (list, tuple)) or not videos:
            raise ConfigError(f"videos must be a non-empty list of video paths, got {shown(videos)}")
        if prompts is None or isinstance(prompts, str):
            prompts = [prompts] * len(videos)
        if not isinstance(prompts, (list, tuple)) or len(prompts) != len(videos):
            raise ConfigError(f"prompts must be one prompt or a list of {len(videos)} (one per video), got "
                              f"{shown(prompts)}")
        if seeds is None:
            seeds = [random.randrange(MAX_SEED) for _ in videos]
        if not isinstance(seeds, (list, tuple)) or len(seeds) != len(videos):
            raise ConfigError(f"seeds must be a list of {len(videos)} integers in [0, 2**62) (one per video), got "
                              f"{shown(seeds)}")
        for prompt, seed in zip(prompts, seeds):
            check_generate_arguments(prompt=prompt, seed=seed, seconds=seconds, progress=progress)
        requests = list(zip(videos, prompts, seeds))
        return [self._decode(tokens) for tokens in request_tokens(self, requests, seconds, progress, sampling)]

    def _tokens(self, video, prompt, seeds: list[int], seconds, progress: bool, sampling: dict,
                given: dict[str, torch.Tensor] | None = None) -> list[dict]:
        """The tokens of one sample per seed of one video, all samples decoded together, stage after stage.
        ``given`` maps a stage name to the tokens to use instead of generating them (every sample gets the same;
        the evaluation uses it to run the later stages on the truth's tokens)."""
        return request_tokens(self, [(video, prompt, seed) for seed in seeds], seconds, progress, sampling, given)

    def _decode(self, tokens: dict) -> Music:
        """The waveform of one sample's tokens, cut to its duration."""
        with torch.inference_mode():
            waveform = self.codec.decode(torch.cat([tokens["coarse"], tokens["fine"]], 0))
        samples = round(tokens["duration"] * self.sample_rate)
        # a clone made outside inference mode is an ordinary tensor: callers may modify it in place
        return Music(waveform[:, :samples].float().cpu().clone(), self.sample_rate)

    def _embed_prompt(self, prompt: str | None) -> torch.Tensor | None:
        if prompt is None:
            return None
        if not isinstance(prompt, str) or not prompt.strip():
            raise ConfigError("prompt is empty; pass a description such as 'slow melancholic piano', or None")
        if self.control is None:
            raise ConfigError("this pipeline has no text embedder, so it cannot follow a prompt; pass prompt=None")
        with torch.inference_mode():
            return self.control.embed_prompt([prompt])


def _resolve(name_or_path: str | os.PathLike) -> Path:
    if not isinstance(name_or_path, (str, os.PathLike)) or not str(name_or_path):
        raise ConfigError(f"pass a pipeline directory (or hub id) as a string or path, got {shown(name_or_path)}")
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


__all__ = ["Pipeline", "TokmusicError"]
