"""Entry point of the V-GRPO Studio web app (`python app.py`).

The browser studio is built on the storage and job-queue layers, which are not
in this version yet; until then this prints how to use the command line.
"""

from __future__ import annotations

import sys


def main() -> int:
    print(
        "The V-GRPO Studio web app is not part of this version yet.\n"
        "Use the command line meanwhile: `vgrpo sample`, `vgrpo eval`, `vgrpo pretrain-shapes` (see README.md).",
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    sys.exit(main())
