"""Teacher-forced measurements of a stage on held-out crops: its logits at the positions ``Stage.loss`` scores,
whether it uses its video (the loss with the true video against another clip's and against the frames played
backwards) and whether it uses its control (the crop's own audio embedding against another clip's, none, or a
caption as a prompt)."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from ..conditioning import Conditioning

VIDEO_FIELDS = ("visual", "visual_times", "visual_valid", "long", "long_times", "long_valid")


def held_out(stage, shards, items: int) -> list[tuple[Conditioning, torch.Tensor, torch.Tensor]]:
    """The first ``items`` held-out ("valid") crops of one generation window each, as (Conditioning, target
    ``[1, K, T]``, target_valid ``[1, T]``): the crops the trainer's validation loss takes."""
    from ..training.dataset import StageDataset

    dataset = StageDataset(shards, stage.cfg, stage.cfg.window, "valid")
    return [as_inputs(dataset[(i, 0)]) for i in range(min(items, len(dataset)))]


def as_inputs(crop: dict) -> tuple[Conditioning, torch.Tensor, torch.Tensor]:
    """One dataset crop as a batch of 1: (Conditioning, target ``[1, K, T]``, target_valid ``[1, T]``)."""
    from ..training.dataset import collate

    batch = collate([crop])
    target, valid = batch.pop("target"), batch.pop("target_valid")
    batch.pop("keep_control")  # a training-only flag
    return Conditioning(**batch), target, valid


@torch.inference_mode()
def teacher_forced(stage, cond: Conditioning, target: torch.Tensor, valid: torch.Tensor, with_times: bool = False):
    """(logits ``[N, V]``, labels ``[N]``) at the positions ``Stage.loss`` scores; ``with_times`` adds each
    label's timestep ``[N]`` (batch 1)."""
    v = stage.cfg.target_vocab
    target = target.masked_fill(~valid[:, None, :], v)
    logits = stage(cond, target)
    layout = stage.pattern.layout(target.shape[-1])
    b = target.shape[0]
    mask = (layout >= 0).expand(b, -1, -1) & valid.gather(1, layout.clamp(min=0).flatten().expand(b, -1)).view(
        b, *layout.shape)
    out = logits[mask].float(), stage.pattern.build(target)[mask]
    return (*out, layout[mask[0]]) if with_times else out


def loss(stage, cond: Conditioning, target: torch.Tensor, valid: torch.Tensor) -> float:
    """Teacher-forced cross-entropy per target token (nats)."""
    logits, labels = teacher_forced(stage, cond, target, valid)
    return float(F.cross_entropy(logits, labels))


def with_video_of(cond: Conditioning, other: Conditioning) -> Conditioning:
    """``cond`` with ``other``'s video (short- and long-term features, times and validity)."""
    return Conditioning(**{k: getattr(other, k) if k in VIDEO_FIELDS else v for k, v in vars(cond).items()})


def frames_reversed(cond: Conditioning) -> Conditioning:
    """``cond`` with time running backwards inside the window: its short-term frames in reverse order, and so are
    the long-term frames that fall inside the window (the rest of the video stays where it was). Batch 1,
    no padding: the crops ``held_out`` gives."""
    out = Conditioning(**vars(cond))
    out.visual = cond.visual.flip(1)
    if cond.long is not None:
        start = 0.0 if cond.window_start is None else float(cond.window_start.reshape(-1)[0])
        end = start + float(cond.visual_times.max())
        inside = ((cond.long_times[0] >= start) & (cond.long_times[0] <= end)).nonzero().flatten()
        if len(inside) > 1:
            out.long = cond.long.clone()
            out.long[:, inside] = cond.long[:, inside.flip(0)]
    return out


def video_probe(stage, crops) -> dict:
    """Does ``stage`` use its video, and the order of its frames? Mean held-out loss with the true video, with
    the video of the crop half a list away, and with the window's frames reversed; and the share of crops each
    change made worse. A stage that reads its video loses more with another clip's; one that can line its
    output up with the video loses more with the frames reversed."""
    n = len(crops)
    true = torch.tensor([loss(stage, *c) for c in crops])
    other = torch.tensor([loss(stage, with_video_of(c, crops[(i + n // 2) % n][0]), t, v)
                          for i, (c, t, v) in enumerate(crops)])
    backwards = torch.tensor([loss(stage, frames_reversed(c), t, v) for c, t, v in crops])
    return {"crops": n, "loss_true_video": float(true.mean()), "loss_other_video": float(other.mean()),
            "loss_frames_reversed": float(backwards.mean()), "other_video_worse": float((other > true).float().mean()),
            "frames_reversed_worse": float((backwards > true).float().mean())}


def by_video_path(table: dict[str, object]):
    """A lookup ``video path -> table value or None``, where a key matches a path it ends with (the whole path,
    or its last components such as ``clips/0001.mp4`` as a manifest gives them)."""
    wanted = {Path(key).parts: value for key, value in table.items()}

    def lookup(video: str):
        parts = Path(video).parts
        return next((value for key, value in wanted.items() if parts[-len(key):] == key), None)

    return lookup


def control_probe(stage, crops, texts: torch.Tensor | None = None) -> dict:
    """Does ``stage`` use its control, and would a prompt stand in for it? Mean held-out loss with each crop's own
    control (the audio embedding of its music, as in training), with the control of the crop half a list away,
    with none (the null token), and, given ``texts`` (``[len(crops), Dc]``, e.g. each crop's caption through
    ``control.embed_prompt``), with that embedding; and the share of crops each change made worse. A stage whose
    loss with a caption is no better than with none gets nothing from a prompt that says the same."""
    n = len(crops)

    def control_of(cond: Conditioning, control: torch.Tensor | None) -> Conditioning:
        out = Conditioning(**vars(cond))
        if control is None:
            out.control_valid = torch.zeros_like(cond.control_valid)
        else:
            out.control = control.reshape(cond.control.shape).to(cond.control)
        return out

    true = torch.tensor([loss(stage, *c) for c in crops])
    rows = {"other": [control_of(c, crops[(i + n // 2) % n][0].control) for i, (c, _, _) in enumerate(crops)],
            "none": [control_of(c, None) for c, _, _ in crops]}
    if texts is not None:
        rows["text"] = [control_of(c, texts[i]) for i, (c, _, _) in enumerate(crops)]
    out = {"crops": n, "loss_own_control": float(true.mean())}
    for name, conds in rows.items():
        changed = torch.tensor([loss(stage, cond, t, v) for cond, (_, t, v) in zip(conds, crops)])
        out[f"loss_{name}_control"] = float(changed.mean())
        out[f"{name}_control_worse"] = float((changed > true).float().mean())
    return out


def event_probe(stage, shards, events: dict[str, list[float]], radius: float = 0.12) -> dict:
    """Does ``stage`` line its output up with events in its video (cuts)? Teacher-forced loss on the target tokens
    within ``radius`` seconds of an event and on the rest, with the true video and with each window's frames
    reversed (which moves the events), over the held-out items that ``events`` names (video path, or its last
    components such as ``clips/0001.mp4`` as a manifest gives them -> event times in seconds), each tiled into
    windows as generation tiles it; every token is scored once."""
    from ..training.dataset import StageDataset

    dataset = StageDataset(shards, stage.cfg, stage.cfg.window, "valid")
    sums = {key: [0.0, 0] for key in ("near_true", "near_reversed", "elsewhere_true", "elsewhere_reversed")}
    items = 0
    events_of = by_video_path(events)
    for index, entry in enumerate(dataset.entries):
        times = events_of(entry["video"])
        if times is None:
            continue
        items += 1
        marks = torch.tensor(times, dtype=torch.float32)
        for crop in dataset.windows(index):
            first, new = crop.pop("first"), crop.pop("new")
            cond, target, valid = as_inputs(crop)
            for name, c in (("true", cond), ("reversed", frames_reversed(cond))):
                logits, labels, steps = teacher_forced(stage, c, target, valid, with_times=True)
                nll = F.cross_entropy(logits, labels, reduction="none")
                seconds = (first + steps.float()) / stage.cfg.target_rate
                near = ((seconds[:, None] - marks[None]).abs() <= radius).any(1)  # no events: none near
                scored = steps >= new
                for where, m in (("near", near & scored), ("elsewhere", ~near & scored)):
                    sums[f"{where}_{name}"][0] += float(nll[m].sum())
                    sums[f"{where}_{name}"][1] += int(m.sum())
    out = {"items": items, "radius_s": radius, "tokens_near": sums["near_true"][1],
           "tokens_elsewhere": sums["elsewhere_true"][1]}
    out.update({f"loss_{key}": total / max(count, 1) for key, (total, count) in sums.items()})
    return out
