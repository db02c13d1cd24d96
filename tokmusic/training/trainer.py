"""The training loop the three stage recipes share (``recipes/stage1.py`` .. ``stage3.py``).

Distribution, mixed precision and FSDP come from accelerate's own configuration (``accelerate config`` /
``accelerate launch`` flags); this loop adds AdamW with cosine decay after linear warm-up, gradient clipping and
accumulation, EMA weights, resumable checkpoints, TensorBoard logging and a console line every ``log_every``
steps. At the end the stage (EMA weights when EMA is on) is exported to ``RUN_DIR/stage/``.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..cards import read_card, stage_config
from ..stage_files import save_stage
from ..errors import CheckpointError, ConfigError
from ..fileio import atomic_file, read_json
from ..stage import Conditioning, Stage, StageConfig
from .checkpoints import check_data_order, checkpoint_dirs, data_order, load_checkpoint, save_checkpoint
from .cli import RecipeParser, distributed_cpu
from .config import TrainConfig
from .dataset import StageDataset, StepSampler, collate
from .ema import EMA
from .shards import TokenShards, pipeline_meta

RECIPES = {"semantic": "stage1", "coarse": "stage2", "fine": "stage3"}


class StageLoss(nn.Module):
    """Wraps a Stage so that DDP/FSDP see the loss computation as ``forward`` (hooks, autocast, grad sync)."""

    def __init__(self, stage: Stage):
        super().__init__()
        self.stage = stage

    def forward(self, target: torch.Tensor, target_valid: torch.Tensor, keep_control: torch.Tensor | None = None,
                **conditioning) -> torch.Tensor:
        return self.stage.loss(Conditioning(**conditioning), target, target_valid, keep_control)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up to ``lr`` over ``warmup_steps``, then cosine decay to ``lr * min_lr_ratio`` at max_steps."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(1, cfg.max_steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def param_groups(stage: Stage, weight_decay: float) -> list[dict]:
    """Weight decay on matrices only; norms, biases, embeddings and the null control token are not decayed."""
    decay, plain = [], []
    for name, p in stage.named_parameters():
        if not p.requires_grad:
            continue
        matrix = p.dim() >= 2 and "emb" not in name.split(".")[0] and "segment" not in name
        (decay if matrix else plain).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0.0}]


@dataclass
class RunSetup:
    """Everything checked before any training starts."""

    stage_cfg: StageConfig
    train_cfg: TrainConfig
    crop_seconds: float
    card_path: Path


def parse_args(kind: str, argv: list[str] | None, default_card: Path):
    p = RecipeParser(prog=f"recipes/{RECIPES[kind]}.py",
                     description=f"Train the {kind!r} stage (accelerate launch recipes/{RECIPES[kind]}.py ...).")
    p.add_argument("--data", required=True, help="data directory made by recipes/preprocess.py")
    p.add_argument("--pipeline", required=True, help="the pipeline directory the data was made with")
    p.add_argument("--out", required=True, help="run directory (re-running the same command resumes)")
    p.add_argument("--config", default=str(default_card), help=f"stage card (default {default_card})")
    p.add_argument("--max-steps", type=int, help="override train.max_steps")
    p.add_argument("--save-every", type=int, help="override train.save_every")
    p.add_argument("--log-every", type=int, help="override train.log_every")
    p.add_argument("--batch-size", type=int, help="override train.batch_size (crops per process)")
    p.add_argument("--grad-accum", type=int, help="override train.grad_accum")
    p.add_argument("--stop-after", type=int,
                   help="end this invocation after step N without exporting (as a pre-empted job would); "
                        "re-run the command to resume")
    return p.parse_args(argv)


def setup(kind: str, args, shape) -> RunSetup:
    """Read and check the card against the pipeline; ConfigError before anything runs."""
    card_path = Path(args.config)
    card = read_card(card_path)
    if card["kind"] != kind:
        raise ConfigError(f"{card_path}: a {card['kind']!r} card given to the {kind!r} recipe "
                          f"(recipes/{RECIPES[kind]}.py); pass stages/{kind}-<size>.json")
    stage_cfg = stage_config(card, shape, where=str(card_path))
    overrides = {k: getattr(args, k) for k in ("max_steps", "save_every", "log_every", "batch_size", "grad_accum")
                 if getattr(args, k) is not None}
    train_cfg = TrainConfig.from_dict({**card.get("train", {}), **overrides}, where=str(card_path))
    crop = train_cfg.crop_for(stage_cfg, where=str(card_path))
    if args.stop_after is not None and args.stop_after < 1:
        raise ConfigError(f"--stop-after must be >= 1, got {args.stop_after}")
    return RunSetup(stage_cfg, train_cfg, crop, card_path)


def _mixed_precision(setting: str) -> str | None:
    if setting != "auto":
        return setting
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16"
    return None  # whatever accelerate launch / its config file says


def hop_mismatch(prior_hop: float | None, entries: list[dict], data, pipeline) -> str | None:
    """Why prompts would miss what a stage learns from ``data`` (None when they would not): its items' controls
    embed the music in chunks of another length than the one ``pipeline``'s prompt prior was fitted at."""
    data_hops = {e.get("control_hop") for e in entries} - {None}
    if prior_hop is None or not data_hops - {prior_hop}:
        return None
    hops = "/".join(f"{h:g}" for h in sorted(data_hops))
    return (f"{data} embeds the music in {hops} s chunks but {pipeline}'s prompt prior in {prior_hop:g} s ones, so "
            "prompts will miss what the stage learns; fit the prior again with recipes/fit_control.py --steps 0 "
            f"--control-hop {max(data_hops):g}, as the data was preprocessed")


def train(kind: str, argv: list[str] | None, default_card: Path) -> int:
    """Run (or resume) the training of stage ``kind``; the body of ``recipes/stageN.py``."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedType, is_tensorboard_available, set_seed

    from ..pipeline import Pipeline

    args = parse_args(kind, argv, default_card)
    pipeline = Pipeline.from_pretrained(args.pipeline)
    run = setup(kind, args, pipeline.shape())
    tc = run.train_cfg
    shards = TokenShards(args.data, pipeline_meta(pipeline))
    dataset = StageDataset(shards, run.stage_cfg, run.crop_seconds, "train", tc.seed)
    held_out = (StageDataset(shards, run.stage_cfg, run.crop_seconds, "valid", tc.seed)
                if tc.eval_every and shards.entries("valid") else None)
    prior_hop = getattr(getattr(pipeline.control, "prior", None), "hop", None)
    del pipeline  # only its shape and its prompt prior's chunk length were needed

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: --out is a file; pass a run directory (new, or an earlier run's to resume)")
    try:  # before any step: a run directory that cannot be made fails now, not at the first log line
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{out}: cannot create the run directory ({exc.strerror}); pass a writable --out") from None
    trackers = "tensorboard" if tc.log_with == "tensorboard" and is_tensorboard_available() else None
    accelerator = Accelerator(cpu=distributed_cpu(), mixed_precision=_mixed_precision(tc.mixed_precision),
                              log_with=trackers, project_dir=str(out), gradient_accumulation_steps=tc.grad_accum)
    sharded = accelerator.distributed_type == DistributedType.FSDP
    if sharded and tc.ema_decay > 0:
        raise ConfigError(f"{run.card_path}: EMA is not kept under FSDP; set train.ema_decay to 0")

    set_seed(tc.seed)  # the same initial weights on every process
    stage = Stage(run.stage_cfg)
    if tc.init_from:
        from .musicgen_init import init_from_musicgen

        report = init_from_musicgen(stage, tc.init_from)
        accelerator.print(f"{kind}: initialised {report} from {tc.init_from}")
    if run.stage_cfg.visual_dim and run.stage_cfg.lst.normalize:  # a resumed run loads them with its checkpoint
        stage.lst.set_feature_statistics(*shards.visual_statistics("train"))
    stage.train()
    ema = EMA(stage, tc.ema_decay) if tc.ema_decay > 0 else None
    model = accelerator.prepare(StageLoss(stage))
    optimizer = accelerator.prepare(torch.optim.AdamW(param_groups(accelerator.unwrap_model(model).stage,
                                                                   tc.weight_decay),
                                                      lr=tc.lr, betas=tuple(tc.betas)))
    stage = accelerator.unwrap_model(model).stage

    step = 0
    previous = checkpoint_dirs(out)
    run_state = {"kind": kind, "stage": run.stage_cfg.to_dict(), "train": tc.to_dict(), "data": str(args.data),
                 "data_order": data_order(tc, accelerator.num_processes)}
    if previous:
        saved = read_json(previous[-1] / "state.json", "training state")
        if saved.get("stage") != run_state["stage"]:
            raise CheckpointError(f"{out}: holds a run of another stage config; use a new --out, or the card it "
                                  "was started with")
        check_data_order(saved, run_state["data_order"], out)
        step = load_checkpoint(previous[-1], accelerator, stage, optimizer, ema, sharded)["step"]
        accelerator.print(f"{kind}: resuming from {previous[-1]} (step {step})")
    else:
        torch.manual_seed(tc.seed + 1 + accelerator.process_index)  # per-process dropout / control-drop draws
    if accelerator.is_main_process:
        _forget_log_after(out / "log.jsonl", step)  # also a torn last line, or records of a run never saved
    if run.stage_cfg.control_dim and any("control_hop" not in e for e in dataset.entries):
        accelerator.print(f"{kind}: {args.data} was made before per-chunk control embeddings, so every crop gets "
                          "its whole track's control; preprocess the manifest again into a new data dir to fix")
    mismatch = run.stage_cfg.control_dim and hop_mismatch(prior_hop, dataset.entries, args.data, args.pipeline)
    if mismatch:
        accelerator.print(f"{kind}: {mismatch}")

    if trackers and step < tc.max_steps:
        accelerator.init_trackers(f"tokmusic-{kind}", config={k: v for k, v in tc.to_dict().items()
                                                              if isinstance(v, (int, float, str, bool))})
    sampler = StepSampler(len(dataset), tc.batch_size, accum=tc.grad_accum, rank=accelerator.process_index,
                          world=accelerator.num_processes, seed=tc.seed, start_step=step)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, collate_fn=collate,
                                         num_workers=tc.num_workers,
                                         # its own generator: creating the iterator must not draw from the
                                         # global RNG, which a resumed run has just restored
                                         generator=torch.Generator().manual_seed(tc.seed))
    batches = iter(loader)
    log_path = out / "log.jsonl"
    window_loss, window_tokens, window_start = [], 0, time.perf_counter()
    codebooks = run.stage_cfg.target_codebooks
    stopped = False
    while step < tc.max_steps:
        lr = lr_at(step, tc)
        for group in optimizer.param_groups:
            group["lr"] = lr
        grad_norm = None
        for _ in range(tc.grad_accum):
            batch = {k: v.to(accelerator.device, non_blocking=True) for k, v in next(batches).items()}
            with accelerator.accumulate(model):
                loss = model(**batch)
                accelerator.backward(loss)
                if accelerator.sync_gradients and tc.clip_norm > 0:
                    grad_norm = accelerator.clip_grad_norm_(model.parameters(), tc.clip_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            window_loss.append(loss.detach().float())
            window_tokens += int(batch["target_valid"].sum()) * codebooks
        step += 1
        if ema is not None:
            ema.update(stage)

        valid_loss = None
        if held_out is not None and (step % tc.eval_every == 0 or step == tc.max_steps):
            valid_loss = validation_loss(accelerator, model, held_out, tc.eval_items, tc.batch_size)
        if step % tc.log_every == 0 or step == tc.max_steps or valid_loss is not None:
            mean_loss = accelerator.reduce(torch.stack(window_loss).mean(), "mean").item()
            tokens = accelerator.reduce(torch.tensor(window_tokens, device=accelerator.device), "sum").item()
            elapsed = time.perf_counter() - window_start
            record = {"step": step, "loss": round(mean_loss, 5), "lr": lr, "tokens_per_s": round(tokens / elapsed, 1)}
            if grad_norm is not None:
                record["grad_norm"] = round(float(grad_norm), 4)
            if valid_loss is not None:
                record["valid_loss"] = round(valid_loss, 5)
            accelerator.log({k: v for k, v in record.items() if k != "step"}, step=step)
            if accelerator.is_main_process:
                valid = f"  valid {record['valid_loss']:.4f}" if "valid_loss" in record else ""
                print(f"{kind} step {step}/{tc.max_steps}  loss {mean_loss:.4f}{valid}  lr {lr:.2e}  "
                      f"{record['tokens_per_s']:.0f} tok/s", flush=True)
                append_log(log_path, record)
            window_loss, window_tokens, window_start = [], 0, time.perf_counter()

        if step % tc.save_every == 0 or step == tc.max_steps:
            save_checkpoint(out, step, accelerator, model, optimizer, ema, run_state, tc.keep_checkpoints, sharded)
        if args.stop_after is not None and step >= args.stop_after and step < tc.max_steps:
            accelerator.print(f"{kind}: stopping after step {step} as asked; re-run the command to resume")
            stopped = True
            break

    if not stopped:
        export(accelerator, model, ema, run.stage_cfg, out / "stage")
        accelerator.print(f"{kind}: exported the trained stage to {out / 'stage'}")
    accelerator.end_training()
    return 0


@torch.no_grad()
def validation_loss(accelerator, model: nn.Module, dataset: StageDataset, items: int, batch_size: int) -> float:
    """Mean loss per target token over one fixed crop of each of the first ``items`` held-out items.

    The same crops every time (sample number 0), split between the processes; the model is in eval mode, so
    nothing draws from the random state a resumed run relies on.
    """
    refs = [(i, 0) for i in range(min(items, len(dataset)))][accelerator.process_index :: accelerator.num_processes]
    was_training = model.training
    model.eval()
    total = torch.zeros(2, dtype=torch.float64, device=accelerator.device)  # summed loss, tokens
    for start in range(0, len(refs), batch_size):
        batch = collate([dataset[r] for r in refs[start : start + batch_size]])
        batch = {k: v.to(accelerator.device) for k, v in batch.items()}
        loss = model(**batch)  # the prepared model: DDP/FSDP wrapping and autocast as in training
        tokens = int(batch["target_valid"].sum()) * batch["target"].shape[1]
        total += torch.tensor([loss.item() * tokens, tokens], dtype=torch.float64, device=accelerator.device)
    model.train(was_training)
    total = accelerator.reduce(total, "sum")
    return float(total[0] / total[1]) if total[1] > 0 else float("nan")


def append_log(path: Path, record: dict) -> None:
    """Append ``record`` to log.jsonl as one unbuffered write of the whole line: a crash tears at most that line."""
    with open(path, "ab", buffering=0) as f:
        f.write((json.dumps(record) + "\n").encode())


def _forget_log_after(path: Path, step: int) -> None:
    """Drop log records past ``step`` (the resumed checkpoint; 0 for a fresh start): those steps are about to be
    run (and logged) again. A line that is not a record — the torn last line of a crash mid-write — is dropped."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int) and record["step"] <= step:
            kept.append(line)
    with atomic_file(path) as tmp:
        tmp.write_text("".join(line + "\n" for line in kept))


def export(accelerator, model, ema, cfg: StageConfig, directory: Path) -> None:
    """Write the trained stage (EMA weights when kept) as config.json + model.safetensors (collective)."""
    weights = accelerator.get_state_dict(model)
    if accelerator.is_main_process:
        final = Stage(cfg)
        final.load_state_dict({k.removeprefix("stage."): v for k, v in weights.items()})
        if ema is not None:
            ema.copy_to(final)
        save_stage(final.eval(), directory)
    accelerator.wait_for_everyone()
