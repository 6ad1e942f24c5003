"""``python -m bench --out FILE [--sizes 100,1000,2000] [--subaccounts 20] [--repeats 3]``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console

from .report import markdown, print_tables
from .run import DEFAULT_REPEATS, DEFAULT_SIZES, DEFAULT_SUBACCOUNTS, BenchConfig, run, write


def _sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of process counts"
        ) from None
    if not sizes or any(s < 1 for s in sizes) or len(set(sizes)) != len(sizes):
        raise argparse.ArgumentTypeError(f"{text!r}: give distinct positive process counts")
    return sizes


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return value


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="Time keyfence at fleet scale against the Pulumi SDK's floor, on an embedded OpenBao.",
    )
    p.add_argument("--out", required=True, type=Path, help="where to write the figures as JSON")
    p.add_argument(
        "--sizes", type=_sizes, default=DEFAULT_SIZES, help="process counts (default 100,1000,2000,4000)"
    )
    p.add_argument("--subaccounts", type=_positive, default=DEFAULT_SUBACCOUNTS, help="default 20")
    p.add_argument(
        "--repeats",
        type=_positive,
        default=DEFAULT_REPEATS,
        help="rounds over all sizes; a time is the best of its runs (default 3)",
    )
    p.add_argument("--markdown", type=Path, help="also write the tables as markdown to this file")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    console = Console(stderr=True)
    config = BenchConfig(sizes=tuple(args.sizes), subaccounts=args.subaccounts, repeats=args.repeats)
    results = run(config, progress=lambda text: console.print(f"[dim]bench:[/dim] {text}"))
    write(results, args.out)
    if args.markdown is not None:
        args.markdown.write_text(markdown(results), encoding="utf-8")
    print_tables(results, Console())
    console.print(f"figures written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
