"""Teacher-forced measurements of a stage on held-out crops: its logits at the positions ``Stage.loss`` scores,
and whether it uses its video (the loss with the true video against another clip's and against the frames
played backwards)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..conditioning import Conditioning

VIDEO_FIELDS = ("visual", "visual_times", "visual_valid", "long", "long_times", "long_valid")


def held_out(stage, shards, items: int) -> list[tuple[Conditioning, torch.Tensor, torch.Tensor]]:
    """The first ``items`` held-out ("valid") crops of one generation window each, as (Conditioning, target
    ``[1, K, T]``, target_valid ``[1, T]``): the crops the trainer's validation loss takes."""
    from ..training.dataset import StageDataset, collate

    dataset = StageDataset(shards, stage.cfg, stage.cfg.window, "valid")
    out = []
    for i in range(min(items, len(dataset))):
        batch = collate([dataset[(i, 0)]])
        target, valid = batch.pop("target"), batch.pop("target_valid")
        out.append((Conditioning(**batch), target, valid))
    return out


@torch.inference_mode()
def teacher_forced(stage, cond: Conditioning, target: torch.Tensor, valid: torch.Tensor):
    """(logits ``[N, V]``, labels ``[N]``) at the positions ``Stage.loss`` scores."""
    v = stage.cfg.target_vocab
    target = target.masked_fill(~valid[:, None, :], v)
    logits = stage(cond, target)
    layout = stage.pattern.layout(target.shape[-1])
    b = target.shape[0]
    mask = (layout >= 0).expand(b, -1, -1) & valid.gather(1, layout.clamp(min=0).flatten().expand(b, -1)).view(
        b, *layout.shape)
    return logits[mask].float(), stage.pattern.build(target)[mask]


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
