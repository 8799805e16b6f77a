"""``make bench``: every benchmark, one table each, numbers merged into results.json.

    python -m tests.bench [--only filemode|cluster|gateway|admission]
                          [--filemode-sizes 10000,100000]
                          [--cluster-sizes 1000,10000,25000] [--edits 50]
                          [--gateway-rates 100,500,1000] [--gateway-seconds 5]

File mode first (no cluster needed), then cluster mode (starts its own
control plane under .cluster/bench and stops it), then the gateway (direct to the
provider simulator against through the gateway), then the admission policies'
cost on other writers and on the operator's writes (admission.py, a fresh
control plane of its own). Each prints its table; all are printed again
together at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys

from tests.bench import admission, cluster, filemode, gateway


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--only", choices=["filemode", "cluster", "gateway", "admission"], default=None
    )
    parser.add_argument("--filemode-sizes", default="10000,100000")
    parser.add_argument("--cluster-sizes", default="1000,10000,25000")
    parser.add_argument("--edits", type=int, default=50)
    parser.add_argument("--gateway-rates", default="100,500,1000")
    parser.add_argument("--gateway-seconds", default="5")
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
    if args.only in (None, "gateway"):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = gateway.main(["--rates", args.gateway_rates, "--seconds", args.gateway_seconds])
        print(out.getvalue(), end="", flush=True)
        tables.append(out.getvalue())
        if code:
            return code
    if args.only in (None, "admission"):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = admission.main([])
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
