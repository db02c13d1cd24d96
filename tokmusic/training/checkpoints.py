"""Resumable training state under ``RUN_DIR/checkpoints/step-NNNNNNNN/``, without pickles.

    model.safetensors       the stage's weights          ema.safetensors   its EMA weights
    optimizer.safetensors   AdamW moments (+ .json: param groups and non-tensor state)
    rng-<rank>.safetensors  each process's torch RNG state
    state.json              step, EMA update count, grad-scaler state, the stage and train configs and the
                            settings the data order depends on (``data_order``)

All processes write into ``.step-N.tmp``; the main process renames it to ``step-N`` once everyone is done, so a
checkpoint either exists whole or not at all. The data position is the step itself (see dataset.StepSampler)
and the learning rate a function of the step, so nothing else needs saving — as long as the batch size,
accumulation, process count and seed stay the same (``check_data_order`` refuses a resume that changes them).
Under FSDP, the sharded model and optimizer go through ``accelerator.save_state`` instead (accelerate's own
format).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import torch

from ..errors import ConfigError
from ..fileio import load_tensors, read_json, save_tensors, write_json

_NAME = re.compile(r"^step-(\d{8})$")

# What decides which crops step s sees (dataset.StepSampler): setting -> (what a user changed, how to undo it).
DATA_ORDER = {
    "batch_size": ("--batch-size", "pass --batch-size {old}"),
    "grad_accum": ("--grad-accum", "pass --grad-accum {old}"),
    "num_processes": ("the number of processes", "launch with --num_processes {old}"),
    "seed": ("train.seed", "set train.seed to {old} in the --config card"),
}


def data_order(train_cfg, num_processes: int) -> dict:
    """The ``DATA_ORDER`` settings of this invocation (stored in state.json as "data_order")."""
    return {"batch_size": train_cfg.batch_size, "grad_accum": train_cfg.grad_accum,
            "num_processes": num_processes, "seed": train_cfg.seed}


def check_data_order(saved: dict, now: dict, where: Path) -> None:
    """ConfigError if resuming ``saved`` (a state.json) with the settings ``now`` would change the data order.

    Only the keys of ``now`` are compared. Checkpoints written before "data_order" was stored give the same
    settings in "train" and "num_processes".
    """
    before = saved.get("data_order") or {**saved.get("train", {}), "num_processes": saved.get("num_processes")}
    for key, new in now.items():
        old = before.get(key)
        if old is not None and old != new:
            what, fix = DATA_ORDER[key]
            raise ConfigError(
                f"{where}: this run was started with {what} {old} and is resumed with {new}, which would change "
                f"the crops every later step sees; {fix.format(old=old)} to resume it, or start a new --out")


def checkpoint_dirs(run_dir: Path) -> list[Path]:
    """Finished checkpoints, oldest first."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if _NAME.match(p.name) and (p / "state.json").is_file()]
    return sorted(found, key=lambda p: p.name)


def optimizer_tensors(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer state dict into tensors (for safetensors) and the JSON-able rest."""
    tensors, scalars = {}, {}
    for index, values in state["state"].items():
        for key, value in values.items():
            if torch.is_tensor(value):
                tensors[f"{index}.{key}"] = value
            else:
                scalars[f"{index}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def optimizer_state(tensors: dict[str, torch.Tensor], rest: dict) -> dict:
    """Inverse of ``optimizer_tensors``."""
    state: dict[int, dict] = {}
    for name, value in [*tensors.items(), *rest["scalars"].items()]:
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    groups = [{**g, "betas": tuple(g["betas"])} if "betas" in g else g for g in rest["param_groups"]]
    return {"state": state, "param_groups": groups}


def rng_tensors() -> dict[str, torch.Tensor]:
    out = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            out[f"cuda{i}"] = s
    return out


def set_rng(tensors: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(tensors["cpu"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("cuda")]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def save_checkpoint(run_dir: Path, step: int, accelerator, model, optimizer, ema, state: dict, keep: int,
                    sharded: bool = False) -> Path:
    """Write the checkpoint of ``step`` (collective: every process calls it) and keep the last ``keep``."""
    root = Path(run_dir) / "checkpoints"
    final = root / f"step-{step:08d}"
    tmp = root / f".step-{step:08d}.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    if sharded:
        accelerator.save_state(str(tmp / "accelerate"), safe_serialization=True)
    else:
        weights = accelerator.get_state_dict(model)  # gathers; identical on every process under DDP
        if accelerator.is_main_process:
            save_tensors(tmp / "model.safetensors", {k.removeprefix("stage."): v for k, v in weights.items()})
            tensors, rest = optimizer_tensors(optimizer.state_dict())
            save_tensors(tmp / "optimizer.safetensors", tensors)
            write_json(tmp / "optimizer.json", rest)
    if accelerator.is_main_process and ema is not None:
        save_tensors(tmp / "ema.safetensors", ema.state_dict())
    save_tensors(tmp / f"rng-{accelerator.process_index}.safetensors", rng_tensors())
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        scaler = accelerator.scaler.state_dict() if accelerator.scaler is not None else None
        write_json(tmp / "state.json", {**state, "step": step, "ema_updates": ema.updates if ema else 0,
                                        "scaler": scaler, "num_processes": accelerator.num_processes})
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        for old in checkpoint_dirs(run_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(directory: Path, accelerator, stage, optimizer, ema, sharded: bool = False) -> dict:
    """Restore a checkpoint written by ``save_checkpoint``; returns its state.json."""
    state = read_json(directory / "state.json", "training state")
    check_data_order(state, {"num_processes": accelerator.num_processes}, directory)  # one RNG file per process
    if sharded:
        accelerator.load_state(str(directory / "accelerate"))
    else:
        weights = load_tensors(directory / "model.safetensors")
        stage.load_state_dict(weights)
        optimizer.load_state_dict(optimizer_state(load_tensors(directory / "optimizer.safetensors"),
                                                  read_json(directory / "optimizer.json", "optimizer state")))
    if ema is not None:
        ema.load_state_dict(load_tensors(directory / "ema.safetensors"), state["ema_updates"])
    if accelerator.scaler is not None and state.get("scaler"):
        accelerator.scaler.load_state_dict(state["scaler"])
    rng = directory / f"rng-{accelerator.process_index}.safetensors"
    if rng.is_file():
        set_rng(load_tensors(rng))
    return state
