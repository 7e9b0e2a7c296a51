"""The command line and the summary of the namespace scenario benchmarks
(bench_faults, bench_gateways): ``--runs``, ``--only``, each run's figures as
it ends, then the medians with every run's value."""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable, Sequence

Result = dict[str, float]


def run_scenarios(
    description: str,
    scenarios: Sequence[str],
    measure: Callable[[str], Result],
    argv: list[str] | None = None,
    *,
    key_width: int = 20,
    unit: str = "",
) -> int:
    """Run ``measure(name)`` (one fresh testbed, one run) ``--runs`` times for
    each scenario chosen with ``--only``; print the medians."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--only", default=",".join(scenarios), help="comma-separated scenarios")
    args = ap.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in scenarios]
    if unknown:
        ap.error(f"unknown scenario {', '.join(unknown)}; choose from {', '.join(scenarios)}")
    if not 1 <= args.runs <= 20:
        ap.error("--runs must be within [1, 20]")
    summary: list[str] = []
    for name in names:
        results: list[Result] = []
        for index in range(args.runs):
            result = measure(name)
            results.append(result)
            shown = "  ".join(f"{k} {v:.2f}" for k, v in result.items())
            print(f"{name} run {index + 1}: {shown}", flush=True)
        for key in results[0]:
            values = [r[key] for r in results]
            each = ", ".join(f"{v:.2f}" for v in values)
            median = statistics.median(values)
            summary.append(f"{name:10} {key:{key_width}} median {median:8.2f}{unit}  ({each})")
    print("\n".join(["", f"medians of {args.runs} runs:", *summary]))
    return 0
