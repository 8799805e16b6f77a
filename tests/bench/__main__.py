"""``make bench``: every benchmark, one table each, numbers merged into results.json."""

from __future__ import annotations

import sys

from tests.bench import filemode


def main() -> int:
    return filemode.main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
