"""``make bench``: every benchmark, one table each, numbers merged into results.json.

    python -m tests.bench [--only filemode|cluster] [--filemode-sizes 10000,100000]
                          [--cluster-sizes 1000,10000,25000] [--edits 50]

File mode first (no cluster needed), then cluster mode (starts its own
control plane under .cluster/bench and stops it). Each prints its table; both
tables are printed again together at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys

from tests.bench import cluster, filemode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=["filemode", "cluster"], default=None)
    parser.add_argument("--filemode-sizes", default="10000,100000")
    parser.add_argument("--cluster-sizes", default="1000,10000,25000")
    parser.add_argument("--edits", type=int, default=50)
    args = parser.parse_args(argv)
    tables = []
    if args.only in (None, "filemode"):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = filemode.main(["--sizes", args.filemode_sizes, "--edits", str(args.edits)])
        print(out.getvalue(), end="", flush=True)
        tables.append(out.getvalue())
        if code:
            return code
    if args.only in (None, "cluster"):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = cluster.main(["--sizes", args.cluster_sizes, "--edits", str(args.edits)])
        print(out.getvalue(), end="", flush=True)
        tables.append(out.getvalue())
        if code:
            return code
    if len(tables) > 1:
        print("\n== all benchmarks ==")
        print("\n".join(tables), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
