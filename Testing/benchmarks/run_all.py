"""Run the benchmarks: `python -m Testing.benchmarks.run_all [--only NAME ...] [--list] [--quick] [--device D]`
(`make benchmark`).

A module in this package takes part when it defines `RUN_ALL = {"forwards": [...]}` at module level (a
literal: it is read from the source, the module is not imported) or is listed in KNOWN below, and can be run
as `python -m Testing.benchmarks.NAME`; "forwards" lists which of run_all's shared options (--quick,
--device) it accepts, and only those are passed on. Each benchmark runs in its own process (so
one's memory and threads do not colour another's figures) and writes its own results under results/.
Extra options for one benchmark: `--args NAME "OPTIONS"`, e.g. `--args speed "--only translation"`.
"""

from __future__ import annotations

import argparse
import ast
import shlex
import subprocess
import sys
import time
from pathlib import Path

PACKAGE = "Testing.benchmarks"
HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
NOT_BENCHMARKS = {"common", "run_all"}
# Benchmarks known by name, for modules that do not (yet) declare RUN_ALL themselves.
KNOWN = {"speed": {"forwards": ["--quick", "--device"]}, "real_images": {"forwards": ["--quick"]}}


def _declared(path: Path):
    """The module's top-level `RUN_ALL = {...}` literal, or None."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError):
        return None
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "RUN_ALL" for t in node.targets):
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                return None
            return value if isinstance(value, dict) else None
    return None


def discover() -> dict:
    """name -> RUN_ALL dict, for the modules of this package that declare one or are KNOWN (in name order)."""
    found = {}
    for path in sorted(HERE.glob("*.py")):
        name = path.stem
        if name in NOT_BENCHMARKS or name.startswith("_"):
            continue
        spec = _declared(path) or KNOWN.get(name)
        if spec is not None:
            found[name] = spec
    return found


def command(name: str, spec: dict, args) -> list:
    forwards = set(spec.get("forwards", ()))
    argv = [sys.executable, "-m", f"{PACKAGE}.{name}"]
    if args.quick and "--quick" in forwards:
        argv.append("--quick")
    if args.device and "--device" in forwards:
        argv += ["--device", args.device]
    for target, options in args.args or []:
        if target == name:
            argv += shlex.split(options)
    return argv


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m Testing.benchmarks.run_all", description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these benchmarks")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for checking that they run")
    parser.add_argument("--device", help="cpu | cuda | auto (for benchmarks that take one)")
    parser.add_argument("--args", nargs=2, action="append", metavar=("NAME", "OPTIONS"),
                        help="extra options for one benchmark")
    args = parser.parse_args(argv)
    benchmarks = discover()
    if args.list:
        for name, spec in benchmarks.items():
            print(f"{name}: python -m {PACKAGE}.{name} (forwards {', '.join(spec.get('forwards', ())) or 'nothing'})")
        return 0
    names = args.only or list(benchmarks)
    unknown = [n for n in names if n not in benchmarks]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(benchmarks)}")
    failed = []
    for name in names:
        argv_ = command(name, benchmarks[name], args)
        print(f"[run_all] {' '.join(argv_[1:])}", file=sys.stderr, flush=True)
        started = time.monotonic()
        code = subprocess.call(argv_, cwd=ROOT)
        print(f"[run_all] {name}: exit {code} after {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
        if code:
            failed.append(name)
    if failed:
        print(f"[run_all] failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
