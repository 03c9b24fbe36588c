"""`python -m benchmarks [--quick] [--no-write]` (`make bench`): run the benchmarks that write BENCHMARKS.md.

In order: the embedded authority (`bench_authority`), governance on real agent runs (`bench_agents`) and governed-span
throughput (`bench_spans`); each rewrites its own section of BENCHMARKS.md and its `benchmarks/results/*.json`. A full
run takes about ten minutes on a 2-core machine, `--quick` about three. The load and soak benchmarks write
RELIABILITY.md and run on their own (`python -m benchmarks.bench_load`, `python -m benchmarks.bench_soak`).
"""

from __future__ import annotations

import argparse

from benchmarks import bench_agents, bench_authority, bench_spans


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer rounds and rows: a few minutes in all")
    parser.add_argument("--no-write", action="store_true", help="print the figures only")
    args = parser.parse_args(argv)
    common = ["--no-write"] if args.no_write else []
    quick = ["--quick"] if args.quick else []
    authority = ["--iterations", "500", "--seconds", "2"] if args.quick else []
    status = bench_authority.main(authority + common)
    status |= bench_agents.main(quick + common)
    status |= bench_spans.main(quick + common)
    return status


if __name__ == "__main__":
    raise SystemExit(main())
