"""What ``import pyrovae`` costs over the torch + Pyro imports any Pyro user pays.

Each measurement runs in a fresh interpreter: wall time of the import and the process's
peak resident memory after it. Also checks that ArviZ, matplotlib and xarray are not
imported (they load only when ``pyrovae.diagnostics`` is used).

    python benchmarks/import_cost.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

PROBE = """
import json, resource, sys, time
start = time.perf_counter()
{statement}
seconds = time.perf_counter() - start
heavy = [m for m in ("arviz", "arviz_base", "matplotlib", "xarray") if m in sys.modules]
rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({{"seconds": seconds, "rss_mb": rss_mb, "heavy": heavy}}))
"""

STATEMENTS = {
    "torch + pyro": "import torch, pyro",
    "pyrovae": "import pyrovae, models, guides",
    "pyrovae.diagnostics": "import pyrovae.diagnostics",
}


def measure(statement: str) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", PROBE.format(statement=statement)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(args: argparse.Namespace) -> float:
    runs = {name: [measure(s) for _ in range(args.rounds)] for name, s in STATEMENTS.items()}
    seconds = {name: statistics.median(r["seconds"] for r in rs) for name, rs in runs.items()}
    print(f"import cost, median of {args.rounds} fresh interpreters:")
    for name, rs in runs.items():
        rss = statistics.median(r["rss_mb"] for r in rs)
        heavy = ", ".join(rs[0]["heavy"]) or "none"
        print(f"  {name:20s} {seconds[name]:.2f} s, peak RSS {rss:.0f} MB, loads {heavy}")
    ratio = seconds["pyrovae"] / seconds["torch + pyro"]
    print(f"  ratio pyrovae / (torch + pyro) import time: {ratio:.3f}")
    return ratio


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5, help="fresh interpreters per import")
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())
