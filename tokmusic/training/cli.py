"""What every recipe shares on the command line: a parser whose errors are one line, and the exit-2 wrapper."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Callable

from ..errors import ConfigError, TokmusicError


class RecipeParser(argparse.ArgumentParser):
    """argparse with errors raised as ConfigError (printed as one ``tokmusic: error:`` line)."""

    def error(self, message: str):
        raise ConfigError(f"{message} (see `{self.prog} --help`)")


def run(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> None:
    """Call ``main(argv)``; a TokmusicError prints ``tokmusic: error: ...`` and exits 2, without a traceback."""
    try:
        code = main(argv)
    except TokmusicError as exc:
        print(f"tokmusic: error: {exc}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        print("tokmusic: interrupted; re-run the same command to resume", file=sys.stderr)
        code = 130
    sys.exit(code or 0)


def distributed_cpu() -> bool:
    """True for several processes on a machine without CUDA (``accelerate launch --multi_gpu`` on CPUs).

    accelerate only forms a (gloo) process group there when told ``cpu=True``; without it every process would
    silently train alone.
    """
    import torch

    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()
