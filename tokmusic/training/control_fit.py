"""Fitting the sentence_audio control: train its audio tower so that a crop of each item's music embeds near the
frozen MiniLM embedding of the item's caption (symmetric InfoNCE with a learnable temperature, as in CLIP/CLAP).

    waves, captions, failed = load_corpus(items, control.sample_rate)
    history = fit_audio_tower(control, waves, captions, steps=2000, batch_size=32, crop_seconds=10.0)
    print(retrieval(control, valid_waves, valid_captions))

Captions repeat across items (the same tempo and instrument), so each batch compares audio with its *distinct*
captions: audio -> text is a softmax over them, text -> audio has every crop of that caption as a positive.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..errors import DataError
from ..sentence_control import PRIOR_TEMPERATURE, PromptPrior
from .manifest import ManifestItem
from .preprocess import CONTROL_HOP


def load_corpus(items: list[ManifestItem], sample_rate: int, *, progress: bool = False
                ) -> tuple[list[torch.Tensor], list[str], list[dict]]:
    """Decode each captioned item's music once, mono at ``sample_rate`` -> (waves ``[N_i]``, captions, failures).

    Items without "text" are skipped silently; an unreadable file is listed in failures ({"line", "video",
    "reason"}) and skipped.
    """
    from ..audio import load_audio

    waves, captions, failed = [], [], []
    for item in tqdm(items, desc="audio", unit="item", disable=not progress):
        if not item.text or not item.text.strip():
            continue
        try:
            wave = load_audio(item.music_path, sample_rate, 1)[0]
        except Exception as exc:  # one bad file must not stop the fit
            failed.append({"line": item.line, "video": str(item.video), "reason": f"{type(exc).__name__}: {exc}"})
            continue
        if wave.shape[0] < sample_rate // 10:
            failed.append({"line": item.line, "video": str(item.video), "reason": "less than 0.1 s of audio"})
            continue
        waves.append(wave)
        captions.append(item.text.strip())
    return waves, captions, failed


def random_crops(waves: list[torch.Tensor], indices: list[int], samples: int, generator: torch.Generator
                 ) -> torch.Tensor:
    """One random ``samples``-long crop of each ``waves[i]`` -> ``[B, samples]``; shorter audio is repeated."""
    out = torch.empty(len(indices), samples)
    for row, i in enumerate(indices):
        wave = waves[i]
        if wave.shape[0] < samples:
            wave = wave.repeat(-(-samples // wave.shape[0]))
        start = int(torch.randint(0, wave.shape[0] - samples + 1, (1,), generator=generator))
        out[row] = wave[start : start + samples]
    return out


def contrastive_loss(audio: torch.Tensor, text: torch.Tensor, labels: torch.Tensor,
                     logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE over distinct captions.

    audio: ``[B, D]`` and text: ``[K, D]`` L2-normalised; labels: Long ``[B]`` in 0..K-1 (every caption used).
    audio -> text: cross-entropy over the K captions; text -> audio: each caption's positives are all its crops.
    """
    logits = logit_scale.exp() * audio @ text.T  # [B, K]
    a2t = F.cross_entropy(logits, labels)
    positives = F.one_hot(labels, text.shape[0]).T.float()  # [K, B]
    log_p = F.log_softmax(logits.T, dim=1)  # [K, B]
    t2a = -((log_p * positives).sum(1) / positives.sum(1)).mean()
    return (a2t + t2a) / 2


def fit_audio_tower(control, waves: list[torch.Tensor], captions: list[str], *, steps: int, batch_size: int = 32,
                    crop_seconds: float = 10.0, min_crop_seconds: float = 1.0, lr: float = 1e-3,
                    weight_decay: float = 0.01, seed: int = 0, progress: bool = False) -> list[float]:
    """Train ``control.tower`` in place; returns the loss of every step.

    Each step draws ``batch_size`` distinct items (all of them, repeated, when there are fewer) and one crop each,
    of a length drawn log-uniformly in [min_crop_seconds, crop_seconds] (the same for the batch): the pipeline
    embeds 1 s chunks of music for training and whole windows at inference, so both lengths must land near the
    caption. Random gain of +-6 dB. AdamW, linear warm-up over 5% of the steps, cosine decay.
    """
    if not waves:
        raise DataError("no captioned audio to train the control on; give manifest items a \"text\" caption")
    if len(set(captions)) < 2:
        raise DataError(f"all {len(captions)} captions are the same ({captions[0]!r}); a contrastive fit needs at "
                        "least two different captions")
    tower = control.tower
    device = control.device
    distinct = sorted(set(captions))
    caption_ids = torch.tensor([distinct.index(c) for c in captions])
    text = control.embed_text(distinct).to(device).clone()  # [K, D], frozen
    logit_scale = torch.nn.Parameter(torch.tensor(math.log(1 / 0.07), device=device))
    params = [p for p in tower.parameters()]
    optimizer = torch.optim.AdamW([{"params": params, "weight_decay": weight_decay},
                                   {"params": [logit_scale], "weight_decay": 0.0}], lr=lr)
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (
        1 + math.cos(math.pi * min(1.0, s / steps))))
    generator = torch.Generator().manual_seed(seed)
    sr = control.sample_rate
    low, high = math.log(min(min_crop_seconds, crop_seconds)), math.log(crop_seconds)
    losses = []
    tower.train()
    try:
        with tqdm(range(steps), desc="control", unit="step", disable=not progress) as bar:
            for _ in bar:
                order = torch.randperm(len(waves), generator=generator)
                picks = order.repeat(-(-batch_size // len(waves)))[:batch_size].tolist()
                seconds = math.exp(low + (high - low) * float(torch.rand((), generator=generator)))
                crops = random_crops(waves, picks, max(1, round(seconds * sr)), generator)  # [B, n]
                gain = 10 ** ((torch.rand(len(picks), 1, generator=generator) * 12 - 6) / 20)
                ids = caption_ids[picks]
                used, labels = ids.unique(return_inverse=True)
                audio = tower((crops * gain).to(device))
                loss = contrastive_loss(audio, text[used.to(device)], labels.to(device), logit_scale)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                optimizer.step()
                schedule.step()
                with torch.no_grad():
                    logit_scale.clamp_(0, math.log(100))
                losses.append(float(loss.detach()))
                bar.set_postfix(loss=f"{losses[-1]:.3f}", temp=f"{float(logit_scale.detach().exp()):.1f}", refresh=False)
    finally:
        tower.eval()
    return losses


@torch.inference_mode()
def retrieval(control, waves: list[torch.Tensor], captions: list[str]) -> dict:
    """How well audio finds its caption among the distinct ``captions`` (and back), with ``control.embed_audio``.

    audio_to_text: fraction of items whose nearest distinct caption is theirs; text_to_audio: fraction of distinct
    captions whose nearest item has that caption; right_cosine / wrong_cosine: mean cosine of each item with its
    caption / with the other captions; chance: 1 / number of distinct captions.
    """
    distinct = sorted(set(captions))
    text = control.embed_text(distinct).float().cpu()  # [K, D]
    audio = torch.stack([control.embed_audio(w, control.sample_rate).float().cpu() for w in waves])  # [N, D]
    ids = torch.tensor([distinct.index(c) for c in captions])
    sims = audio @ text.T  # [N, K]
    right = sims.gather(1, ids[:, None])[:, 0]
    wrong = (sims.sum(1) - right) / max(1, len(distinct) - 1)
    nearest_item = sims.argmax(0)  # [K]
    return {
        "items": len(waves),
        "captions": len(distinct),
        "audio_to_text": float((sims.argmax(1) == ids).float().mean()),
        "text_to_audio": float((ids[nearest_item] == torch.arange(len(distinct))).float().mean()),
        "right_cosine": float(right.mean()),
        "wrong_cosine": float(wrong.mean()) if len(distinct) > 1 else float("nan"),
        "chance": 1 / len(distinct),
    }


@torch.inference_mode()
def chunk_accuracy(control, train: tuple[list[torch.Tensor], list[str]], test: tuple[list[torch.Tensor], list[str]],
                   hop: float, words: tuple[str, ...] = ()) -> dict:
    """How much of its caption one ``hop``-second chunk of music tells: the chunk length a stage's controls (and
    the prompt prior) should use.

    Each caption's centroid is the prompt prior's (``caption_centroids`` of the ``train`` (waves, captions)); each
    chunk of ``test`` music is assigned the caption of the nearest centroid. caption: share of test chunks given
    their own caption (chance: 1 / the captions); with ``words`` (e.g. the tempo words), also word: share of the
    test chunks whose caption holds one of them that are given a caption with the same one; centroid_cosine: the
    mean cosine between distinct captions' centroids (lower: the chunks keep the captions further apart).
    """
    def word_of(caption):
        return next((w for w in words if w in caption.split()), None)

    distinct, centroids = caption_centroids(control, *train, hop)  # centroids [K, D]
    right = total = word_right = word_total = 0
    for wave, caption in zip(*test):
        emb = control.embed_audio_chunks(wave, control.sample_rate, hop).float().cpu()  # [chunks, D]
        guesses = [distinct[k] for k in (emb @ centroids.T).argmax(1).tolist()]
        right += sum(g == caption for g in guesses)
        total += len(guesses)
        if word_of(caption) is not None:
            word_right += sum(word_of(g) == word_of(caption) for g in guesses)
            word_total += len(guesses)
    k = len(distinct)
    off = (centroids @ centroids.T).sum() - k
    return {"hop": float(hop), "chunks": total, "captions": k, "caption": right / max(1, total), "chance": 1 / k,
            **({"word": word_right / word_total, "word_chunks": word_total} if word_total else {}),
            "centroid_cosine": float(off / (k * (k - 1))) if k > 1 else float("nan")}


@torch.inference_mode()
def fit_prompt_prior(control, waves: list[torch.Tensor], captions: list[str], *,
                     temperature: float = PRIOR_TEMPERATURE, hop: float | None = None, progress: bool = False):
    """The ``PromptPrior`` of ``control``: for each distinct caption, the mean audio embedding of its music, taken
    in ``hop``-second chunks as preprocessing takes the training controls (default: preprocess's CONTROL_HOP)."""
    if not waves:
        raise DataError("no captioned audio to fit the prompt prior on; give manifest items a \"text\" caption")
    if not temperature > 0:
        raise DataError(f"the prompt prior's temperature must be > 0, got {temperature}")
    hop = float(CONTROL_HOP if hop is None else hop)
    distinct, audio = caption_centroids(control, waves, captions, hop, progress=progress)
    text = control.embed_text(distinct).float().cpu()
    return PromptPrior(distinct, text, audio, float(temperature), hop)


@torch.inference_mode()
def caption_centroids(control, waves: list[torch.Tensor], captions: list[str], hop: float, *,
                      progress: bool = False) -> tuple[list[str], torch.Tensor]:
    """(the distinct captions, sorted; float32 ``[K, D]``): where each caption's music lies in ``control``'s audio
    space. Each item's music is embedded in ``hop``-second chunks and their mean taken; a caption's centroid is
    the L2-normalised sum of its items' means, so every item counts once, however long."""
    distinct = sorted(set(captions))
    sums = torch.zeros(len(distinct), control.dim)
    for wave, caption in tqdm(list(zip(waves, captions)), desc="prompt prior", unit="item", disable=not progress):
        chunks = control.embed_audio_chunks(wave, control.sample_rate, hop)
        sums[distinct.index(caption)] += chunks.float().cpu().mean(0)
    return distinct, F.normalize(sums, dim=-1)


def with_control(pipeline, control, seed: int = 0):
    """The pipeline with ``control`` as its text/audio embedder.

    Stages that read a control token of another width are re-initialised at the new width (train them next);
    the others keep their weights.
    """
    from ..pipeline import Pipeline
    from ..stage import Stage, StageConfig

    stages = dict(pipeline.stages)
    with torch.random.fork_rng(devices=[]):  # seeded re-initialisation; the caller's random state is untouched
        torch.manual_seed(seed)
        for name, stage in stages.items():
            if stage.cfg.control_dim and stage.cfg.control_dim != control.dim:
                cfg = StageConfig.from_dict({**stage.cfg.to_dict(), "control_dim": control.dim})
                stages[name] = Stage(cfg).eval()
    return Pipeline(visual_encoder=pipeline.visual_encoder, codec=pipeline.codec, stages=stages, control=control,
                    semantic_tokenizer=pipeline.semantic_tokenizer, fps=pipeline.fps)
