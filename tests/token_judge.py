"""Judge generated tokens against the known answer of a `recipes/tiny_corpus.py --classes N` corpus.

The tiny pipeline's codec has random weights, so its decoded audio is noise: the answer is checked on tokens.
Every class is a pure tone (labels.json: "tones_hz"); each tone is tokenized by the pipeline's own codec and
semantic tokenizer, and each token frame is placed in a space where nearby tokens sound alike:

  coarse codes   -> the codec's quantized latent of the coarse codebooks (sum of their codebook vectors)
  semantic ids   -> the semantic tokenizer's k-means centroid of the id

A frame of generated tokens gets the class of its nearest reference frame (over the middle of each reference
tone, away from its edges); a unit of ``unit`` seconds (default 1 s) gets the majority class of its frames
(ties: the class with the smaller summed distance). The unit's true class is the class on screen at the unit's
centre. Accuracy = fraction of units right; chance = 1 / classes, and the corpus's balanced segments make it
exactly that for any output that ignores the video.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch

REFERENCE_SECONDS = 2.0
EDGE_SECONDS = 0.3  # reference frames this close to the tone's start or end are not used


def tone(freq: float, seconds: float, sample_rate: int, amplitude: float = 0.3) -> torch.Tensor:
    """The corpus's sound of a class: a sine of ``freq`` Hz, phase 0 at t = 0, as float32 ``[samples]``."""
    t = torch.arange(round(seconds * sample_rate), dtype=torch.float64) / sample_rate
    return (amplitude * torch.sin(2 * math.pi * freq * t)).float()


@dataclass
class Answers:
    """labels.json of a known-answer corpus."""

    classes: int
    segment: float
    tones_hz: list[float]
    items: dict[str, list[int]]
    amplitude: float = 0.3

    @classmethod
    def read(cls, corpus: str | Path) -> "Answers":
        data = json.loads((Path(corpus) / "labels.json").read_text())
        return cls(data["classes"], float(data["segment"]), [float(f) for f in data["tones_hz"]], data["items"],
                   float(data.get("amplitude", 0.3)))

    def unit_labels(self, item: str, seconds: float, unit: float = 1.0) -> list[int]:
        """True class of each whole ``unit`` of the first ``seconds``: the class at the unit's centre."""
        labels = self.items[item]
        count = int(seconds / unit + 1e-6)
        return [labels[min(int(((j + 0.5) * unit) / self.segment), len(labels) - 1)] for j in range(count)]


class Judge:
    """Classify token frames of a pipeline's coarse codes or semantic ids as one of the corpus's tones."""

    def __init__(self, pipe, answers: Answers):
        self.pipe, self.answers = pipe, answers
        codec, semantic = pipe.codec, pipe.semantic_tokenizer
        self.rates = {"coarse": codec.frame_rate, "semantic": semantic.frame_rate}
        self.refs: dict[str, list[torch.Tensor]] = {"coarse": [], "semantic": []}
        with torch.inference_mode():
            for freq in answers.tones_hz:
                wave = tone(freq, REFERENCE_SECONDS, codec.sample_rate, answers.amplitude)
                codes = codec.encode(wave[None])[: codec.n_coarse]
                ids = semantic.tokenize(wave, codec.sample_rate).long()[None]
                for kind, tokens in (("coarse", codes), ("semantic", ids)):
                    edge = round(EDGE_SECONDS * self.rates[kind])
                    self.refs[kind].append(self.embed(kind, tokens)[edge:-edge])

    def embed(self, kind: str, tokens: torch.Tensor) -> torch.Tensor:
        """Tokens ``[K, T]`` -> one vector per frame ``[T, D]``."""
        with torch.inference_mode():
            if kind == "coarse":
                codes = tokens[: self.pipe.codec.n_coarse].long()
                latent = self.pipe.codec.model.quantizer.decode(codes[:, None])  # [1, D, T]
                return latent[0].T.float()
            return self.pipe.semantic_tokenizer.centroids[tokens[0].long()].float()

    def frame_distances(self, kind: str, tokens: torch.Tensor) -> torch.Tensor:
        """``[T, classes]``: distance of each frame to the nearest reference frame of each class."""
        x = self.embed(kind, tokens)
        return torch.stack([torch.cdist(x, ref).min(1).values for ref in self.refs[kind]], 1)

    def classify(self, kind: str, tokens: torch.Tensor, unit: float = 1.0) -> list[int]:
        """The class of every whole ``unit`` seconds of ``tokens`` ``[K, T]``."""
        rate = self.rates[kind]
        dist = self.frame_distances(kind, tokens)
        nearest = dist.argmin(1)
        out = []
        for j in range(int(tokens.shape[-1] / rate / unit + 1e-6)):
            a, b = round(j * unit * rate), round((j + 1) * unit * rate)
            votes = torch.bincount(nearest[a:b], minlength=dist.shape[1]).float()
            # majority; ties go to the class nearer in total (tiny tiebreak term below one vote)
            score = votes - 1e-3 * dist[a:b].sum(0) / (dist[a:b].sum() + 1e-9)
            out.append(int(score.argmax()))
        return out

    def accuracy(self, kind: str, results: dict[str, torch.Tensor], unit: float = 1.0) -> tuple[float, int]:
        """``results``: item name -> tokens ``[K, T]`` from the clip's start -> (accuracy, units judged)."""
        right = total = 0
        for item, tokens in results.items():
            guess = self.classify(kind, tokens, unit)
            truth = self.answers.unit_labels(item, tokens.shape[-1] / self.rates[kind], unit)
            n = min(len(guess), len(truth))
            right += sum(g == t for g, t in zip(guess[:n], truth[:n]))
            total += n
        return right / max(total, 1), total
