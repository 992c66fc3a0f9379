"""The ``raybt`` command: ``demo``, ``run SPEC.py``, ``results DIR``, ``report DIR``, ``bench SPEC.py``, ``info``.

Exit codes: 0 success; 1 the work failed (bad data, a failing backtest, a missing checkpoint directory); 2 bad
command-line arguments or spec file; 130 interrupted (Ctrl-C: one line says what was saved, no traceback).
"""

from __future__ import annotations

import argparse
import difflib
import importlib.util
import inspect
import os
import socket
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import pandas as pd

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
_SUMMARY_COLUMNS = ["strategy", "range", "total_return", "sharpe", "max_drawdown", "n_trades"]


class UsageError(Exception):
    """A problem with what was asked (arguments, spec file): exit code 2."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except UsageError as exc:
        print(f"raybt {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as exc:  # run_backtests says what it saved; elsewhere there is nothing to say
        print(f"raybt {args.command}: {exc or 'interrupted'}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (OSError, ValueError, RuntimeError, KeyError, TypeError) as exc:
        print(f"raybt {args.command}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILED


def _parser() -> argparse.ArgumentParser:
    from raybt import __version__

    parser = argparse.ArgumentParser(prog="raybt", description="Vectorized trading backtests in parallel on Ray.")
    parser.add_argument("--version", action="version", version=f"raybt {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser("demo", help="run the embedded SMA-crossover sweep on synthetic data",
                               description="An SMA-crossover sweep on two years of synthetic hourly data (local "
                                           "Ray, all CPUs), checkpointed; prints the top strategies.")
    demo.add_argument("--strategies", type=_positive_int, default=5_000, help="parameter sets (default 5000)")
    demo.add_argument("--n-workers", type=_workers, default=-1, help="-1 = all CPUs (default), 1 = no Ray")
    demo.add_argument("--checkpoint-dir", default="runs/demo", help="where results go (default runs/demo)")
    demo.add_argument("--top", type=_positive_int, default=10, help="rows to show (default 10)")
    demo.add_argument("--no-progress", action="store_true", help="no progress bar")
    demo.set_defaults(handler=_demo)

    run = commands.add_parser("run", help="run the sweep a Python spec file defines",
                              description="SPEC.py defines `strategies`, `data` and optionally `date_ranges` and "
                                          "any run_backtests option as a module-level name (e.g. fees = 0.001, "
                                          "checkpoint_dir = 'runs/x'); the flags below override the file. A "
                                          "lowercase name close to an option's (fee, chekpoint_dir) is an error.")
    run.add_argument("spec", help="path to the spec file")
    run.add_argument("--address", help="Ray cluster to join (e.g. auto, ray://head:10001)")
    run.add_argument("--n-workers", type=_workers, help="-1 = all CPUs of the cluster, N = at most N tasks")
    run.add_argument("--batch-size", type=_positive_int, help="jobs per Ray task")
    run.add_argument("--checkpoint-dir", help="checkpoint directory or URI (s3://bucket/run)")
    run.add_argument("--checkpoint-batch-size", type=_positive_int, help="rows per Parquet part")
    run.add_argument("--continue-on-error", action="store_true", default=None, help="record failures and go on")
    run.add_argument("--force", action="store_true", default=None,
                     help="recompute every job, replacing the rows stored in the checkpoint directory")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument("--top", type=_positive_int, default=10, help="rows to show (default 10)")
    run.set_defaults(handler=_run)

    results = commands.add_parser("results", help="summarise a checkpoint directory",
                                  description="Counts, errors and the top rows of a checkpoint directory.")
    results.add_argument("directory", help="checkpoint directory or URI")
    results.add_argument("--sort", default="sharpe", help="metric to rank by (default sharpe)")
    results.add_argument("--top", type=_positive_int, default=10, help="rows to show (default 10)")
    results.add_argument("--ascending", action="store_true", help="smallest first (e.g. for max_drawdown)")
    results.add_argument("--csv", help="also write every row to this CSV file")
    results.set_defaults(handler=_results)

    report = commands.add_parser("report", help="write a self-contained HTML report of a checkpoint directory",
                                 description="One HTML file that opens offline: the run (manifest), a sortable "
                                             "leaderboard, heatmaps, distributions, consistency across ranges and, "
                                             "with --spec, equity and drawdown of the best rows recomputed with "
                                             "the spec's strategy classes and data. Needs plotly (raybt[plot]).")
    report.add_argument("directory", help="checkpoint directory or URI")
    report.add_argument("--spec", help="the spec file the sweep ran: its strategies and data replay the best rows")
    report.add_argument("-o", "--output", default="report.html", help="HTML file to write (default report.html)")
    report.add_argument("--metric", default="sharpe", help="metric to rank and plot by (default sharpe)")
    report.add_argument("--top", type=_positive_int, default=5, help="best rows to replay (default 5)")
    report.set_defaults(handler=_report)

    bench = commands.add_parser("bench", help="time a sample of a spec with 1..N workers and extrapolate",
                                description="Runs a sample of SPEC.py's strategies (on all its ranges, with its "
                                            "costs; nothing written) in this process and with 2..N Ray workers, and "
                                            "prints the cost per backtest, the speed-up, the extrapolated time of "
                                            "the whole spec and what recommended_workers() would choose.")
    bench.add_argument("spec", help="path to the spec file")
    bench.add_argument("--sample", type=_positive_int, default=100, help="strategies to time (default 100)")
    bench.add_argument("--max-workers", type=_positive_int, default=os.cpu_count() or 1,
                       help="most workers to try (default: this machine's CPUs)")
    bench.add_argument("--address", help="Ray cluster to run on (default: a local Ray)")
    bench.set_defaults(handler=_bench)

    info = commands.add_parser("info", help="show Ray cluster or local resources and recommended settings",
                               description="Ray cluster resources when --address (or RAY_ADDRESS) is given, "
                                           "otherwise local CPUs and memory; plus recommended_workers().")
    info.add_argument("--address", help="Ray cluster to query")
    info.set_defaults(handler=_info)
    return parser


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _workers(text: str) -> int:
    value = int(text)
    if value == 0 or value < -1:
        raise argparse.ArgumentTypeError(f"must be -1 (all CPUs) or a positive integer, got {text}")
    return value


# -------------------------------------------------------------------------------------------------- commands

def _demo(args: argparse.Namespace) -> int:
    from raybt.demo import run_demo

    results = run_demo(args.strategies, n_workers=args.n_workers, checkpoint_dir=args.checkpoint_dir,
                       show_progress=not args.no_progress)
    _print_summary(results.df, "sharpe", args.top)
    print(f"\n{results}\ncheckpoints: {os.path.abspath(args.checkpoint_dir)}  "
          f"(explore: raybt results {args.checkpoint_dir})")
    return EXIT_OK


def _run(args: argparse.Namespace) -> int:
    import raybt

    spec = load_spec(args.spec)
    options = _spec_options(spec)
    overrides = {"address": args.address, "n_workers": args.n_workers, "batch_size": args.batch_size,
                 "checkpoint_dir": args.checkpoint_dir, "checkpoint_batch_size": args.checkpoint_batch_size,
                 "continue_on_error": args.continue_on_error, "force": args.force}
    options.update({k: v for k, v in overrides.items() if v is not None})
    if args.no_progress:
        options["show_progress"] = False
    if options.get("address"):
        _check_listening(options["address"])
    results = raybt.run_backtests(spec.strategies, spec.data, **options)
    _print_summary(results.df, "sharpe", args.top)
    print(f"\n{results}")
    return EXIT_OK


def _results(args: argparse.Namespace) -> int:
    from raybt.permuted_rows import rows_of_one_market
    from raybt.results import load_results

    if "://" not in args.directory and not Path(args.directory, "parts").is_dir():
        raise FileNotFoundError(f"{args.directory} is not a raybt checkpoint directory (no parts/ folder)")
    df = load_results(args.directory).df  # warns about damaged or foreign parts and rows of another results version
    if args.sort not in df.columns:
        raise UsageError(f"unknown column --sort {args.sort!r};{_did_you_mean(args.sort, df.columns)} choose one of "
                         f"{list(df.columns)}")
    # the top list compares rows of one market; the CSV has every row
    _print_summary(rows_of_one_market(df, "raybt results"), args.sort, args.top, ascending=args.ascending)
    if args.csv:
        df.to_csv(args.csv, index=False)
        print(f"\nwrote {len(df)} rows to {args.csv}")
    return EXIT_OK


def _report(args: argparse.Namespace) -> int:
    from raybt.results import load_results

    if "://" not in args.directory and not Path(args.directory, "parts").is_dir():
        raise FileNotFoundError(f"{args.directory} is not a raybt checkpoint directory (no parts/ folder)")
    results = load_results(args.directory)
    data, classes = None, None
    if args.spec:
        spec = load_spec(args.spec)
        data, classes = spec.data, {type(s).__qualname__: type(s) for s in spec.strategies}
    if args.metric not in results.df.columns:
        raise UsageError(f"unknown column --metric {args.metric!r}; choose one of {list(results.df.columns)}")
    path = results.report(args.output, data, classes, metric=args.metric, top=args.top)
    replayed = f", best {args.top} rows replayed" if args.spec else " (no --spec: best rows not replayed)"
    print(f"wrote {path}: {len(results.df)} rows{replayed}")
    return EXIT_OK


def _bench(args: argparse.Namespace) -> int:
    from raybt.bench import bench, format_table

    spec = load_spec(args.spec)
    options = _spec_options(spec)
    table, recommendation = bench(spec.strategies, spec.data, options, sample=args.sample,
                                  max_workers=args.max_workers, address=args.address or options.get("address"))
    print(format_table(table, recommendation))
    return EXIT_OK


def _info(args: argparse.Namespace) -> int:
    import psutil

    import raybt

    if args.address or os.environ.get("RAY_ADDRESS"):
        _check_listening(args.address or os.environ["RAY_ADDRESS"])
        from raybt.executors.ray_tasks import connect

        import ray

        connect(args.address, 0)
        resources = ray.cluster_resources()
        print(f"Ray cluster: {len(ray.nodes())} node(s), {resources.get('CPU', 0):g} CPUs, "
              f"{resources.get('memory', 0) / 2**30:.1f} GiB memory, "
              f"{resources.get('object_store_memory', 0) / 2**30:.1f} GiB object store")
    else:
        memory = psutil.virtual_memory()
        print(f"local machine: {os.cpu_count()} CPUs, {memory.total / 2**30:.1f} GiB memory "
              f"({memory.available / 2**30:.1f} GiB available); no Ray cluster given (--address)")
    print(f"recommended: {raybt.recommended_workers()}")
    return EXIT_OK


# ------------------------------------------------------------------------------------------------ helpers

def load_spec(path: str) -> ModuleType:
    """Import a spec file as a module of its own (so its strategy classes have a source file and stable ids)."""
    file = Path(path)
    if not file.is_file():
        raise UsageError(f"spec file not found: {path}")
    name = f"raybt_spec_{file.stem}"
    module_spec = importlib.util.spec_from_file_location(name, file)
    if module_spec is None or module_spec.loader is None:
        raise UsageError(f"cannot import {path} as Python")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    sys.path.insert(0, str(file.parent.resolve()))
    try:
        module_spec.loader.exec_module(module)
    except SyntaxError as exc:
        raise UsageError(f"{path}, line {exc.lineno}: {exc.msg}") from None
    finally:
        sys.path.remove(str(file.parent.resolve()))
    missing = [n for n in ("strategies", "data") if not hasattr(module, n)]
    if missing:
        raise UsageError(f"{path} must define {' and '.join(missing)}")
    return module


def _spec_options(spec: ModuleType) -> dict[str, Any]:
    """Module-level names of the spec that are run_backtests keywords (besides strategies and data).

    A name that looks like a misspelt option is an error, not silently ignored: a lowercase name not starting with
    ``_`` and not a keyword, bound to an option-like value (``None``, a bool, number, string or path, a
    :class:`~raybt.DateRange` or a list of them), whose name is close to a keyword's (``difflib`` similarity ≥ 0.8:
    ``fee``, ``chekpoint_dir``, ``date_range``; not ``ranges``). Helpers such as ``symbols = [...]``, a list of
    strategies or a DataFrame are never taken for options."""
    import raybt

    keywords = set(inspect.signature(raybt.run_backtests).parameters)
    for name, value in vars(spec).items():
        if name in keywords or name.startswith("_") or name != name.lower() or not _option_like(value):
            continue
        close = difflib.get_close_matches(name, sorted(keywords), n=1, cutoff=_OPTION_SIMILARITY)
        if close:
            raise UsageError(f"{spec.__file__}: unknown option {name!r} (did you mean {close[0]!r}?); rename it, or "
                             f"start it with '_' if it is not meant as an option")
    return {name: getattr(spec, name) for name in keywords - {"strategies", "data"} if hasattr(spec, name)}


def _option_like(value: object) -> bool:
    from raybt.data import DateRange

    if isinstance(value, (list, tuple)):
        return bool(value) and all(isinstance(v, DateRange) for v in value)
    return value is None or isinstance(value, (bool, int, float, str, os.PathLike, DateRange))


_OPTION_SIMILARITY = 0.8


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" did you mean {close[0]!r}?" if close else ""


def _check_listening(address: str) -> None:
    """Fail fast when nothing listens at a ``host:port`` or ``ray://host:port`` address (``ray.init`` would retry
    for many minutes); other forms (``auto``) are left to Ray."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=_CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise ConnectionError(f"no Ray cluster at {address}: cannot connect to {host}:{port} "
                              f"({exc.strerror or exc})") from None


_CONNECT_TIMEOUT_S = 5


def _print_summary(df: pd.DataFrame, sort: str, top: int, ascending: bool = False) -> None:
    if df.empty:
        print("no results")
        return
    failed = int(df["error"].notna().sum())
    print(f"{len(df)} backtests: {df['strategy_id'].nunique()} strategies × {df['range'].nunique()} range(s), "
          f"{failed} failed")
    shown = [c for c in dict.fromkeys(["strategy", *_param_columns(df), "range", sort, *_SUMMARY_COLUMNS[2:]])
             if c in df.columns]
    best = df[df["error"].isna()].sort_values(sort, ascending=ascending, na_position="last").head(top)
    print(f"top {len(best)} by {sort}:")
    with pd.option_context("display.width", 160, "display.max_columns", 20, "display.float_format", "{:.4f}".format):
        print(best[shown].to_string(index=False))


def _param_columns(df: pd.DataFrame) -> list[str]:
    from raybt.metrics import METRIC_NAMES
    from raybt.strategy import RESULT_COLUMNS

    return [c for c in df.columns if c not in RESULT_COLUMNS and c not in METRIC_NAMES]


if __name__ == "__main__":
    sys.exit(main())
