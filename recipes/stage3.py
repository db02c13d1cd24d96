"""Train the fine stage (stage 3).

    accelerate launch recipes/stage3.py --data DATA_DIR --pipeline DIR --out RUN_DIR [--config stages/fine-small.json]
        [--max-steps N] [--save-every N]

Re-running the same command resumes from RUN_DIR/checkpoints/; the trained stage is written to RUN_DIR/stage/.
"""

from __future__ import annotations

from pathlib import Path

from tokmusic.training.cli import run
from tokmusic.training.trainer import train

DEFAULT_CARD = Path(__file__).resolve().parents[1] / "stages" / "fine-small.json"


def main(argv: list[str] | None = None) -> int:
    return train("fine", argv, DEFAULT_CARD)


if __name__ == "__main__":
    run(main)
