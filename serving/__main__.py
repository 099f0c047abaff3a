"""`python -m serving [--host H] [--port P] [--feast-repo PATH]`: settings from the environment (LTRR_*)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ml.settings import Settings
from serving.app import run


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m serving", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--feast-repo", type=Path, default=None, help="default: settings.feast_repo")
    args = parser.parse_args()
    settings = Settings()
    run(settings, args.feast_repo or settings.feast_repo, host=args.host, port=args.port)


if __name__ == "__main__":
    main()
