"""Is a property of the video observable in a pipeline's visual features? A linear probe per channel group.

    groups = channel_groups(pipe.visual_encoder)       # [("efficientnet_lite0", 0, 1280), ("motion", 1280, 1311), ...]
    linear_probe(train_x, train_y, valid_x, valid_y)   # {"train_accuracy", "held_out_accuracy", "chance", ...}

A stage can only learn a correspondence its features show for pictures it has not seen. The probe is a logistic
regression per frame (features standardised on the training frames, L2-regularised), fitted on the training
clips and scored on the held-out ones: a group that shows the property scores near 1 on held-out frames, one that
does not near ``chance`` (the held-out share of the commonest label).
"""

from __future__ import annotations

import torch

from ..errors import DataError


def channel_groups(encoder) -> list[tuple[str, int, int]]:
    """(type, first, last) channel ranges of a visual encoder's members, in feature order (one group for an
    encoder that is not a concatenation)."""
    members = list(getattr(encoder, "members", [encoder]))
    groups, first = [], 0
    for member in members:
        groups.append((member.to_config().get("type", type(member).__name__), first, first + member.dim))
        first += member.dim
    return groups


def linear_probe(train_x: torch.Tensor, train_y: torch.Tensor, valid_x: torch.Tensor, valid_y: torch.Tensor, *,
                 weight_decay: float = 0.01, steps: int = 300, lr: float = 0.01, seed: int = 0) -> dict:
    """A binary logistic probe: ``*_x`` float ``[N, D]`` frames, ``*_y`` ``[N]`` labels in {0, 1}.

    Returns its accuracy on the training and held-out frames and ``chance``, the held-out share of the commonest
    label. DataError when the training frames hold only one label (nothing to tell apart)."""
    train_y, valid_y = train_y.float(), valid_y.float()
    if train_y.numel() == 0 or valid_y.numel() == 0:
        raise DataError("the probe needs training and held-out frames")
    if train_y.min() == train_y.max():
        raise DataError("the training frames show only one label, so there is nothing to tell apart; use a corpus "
                        "whose training clips show both")
    mean, std = train_x.mean(0), train_x.std(0) + 1e-5
    xt, xv = (train_x - mean) / std, (valid_x - mean) / std
    generator = torch.Generator().manual_seed(seed)
    w = (torch.randn(xt.shape[1], generator=generator) * 1e-3).requires_grad_()
    b = torch.zeros(1, requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(xt @ w + b, train_y) + weight_decay * w.square().sum()
        loss.backward()
        opt.step()
    with torch.no_grad():
        train_acc = ((xt @ w + b > 0).float() == train_y).float().mean().item()
        valid_acc = ((xv @ w + b > 0).float() == valid_y).float().mean().item()
    share = valid_y.mean().item()
    return {"train_accuracy": round(train_acc, 4), "held_out_accuracy": round(valid_acc, 4),
            "chance": round(max(share, 1 - share), 4), "train_frames": int(train_y.numel()),
            "held_out_frames": int(valid_y.numel())}
