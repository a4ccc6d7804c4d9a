"""Run the performance figures: ``python -m bench [NAME ...]``.

Every module ``bench/bench_*.py`` exposes ``run() -> dict[str, float]`` and,
optionally, ``TARGETS = {figure: (op, value)}`` with op one of ``>=``, ``<=``,
``>``, ``<``.  Given names, only the modules whose name contains one of them
run (``python -m bench train`` runs ``bench_train``).  A module that fails is
reported and the others still run.  The figures are printed as one table and
merged into ``bench/results.json`` (a flat ``{figure: number}`` map; figures
from modules that did not run this time are kept).  ``BENCH_QUICK=1`` asks the
modules for shorter runs.
"""

from __future__ import annotations

import importlib
import json
import math
import operator
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results.json"
OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}


def discover(patterns: list[str]) -> list[str]:
    names = sorted(p.stem for p in HERE.glob("bench_*.py"))
    if patterns:
        names = [n for n in names if any(pat in n for pat in patterns)]
    return names


def _load_results() -> dict[str, float]:
    try:
        data = json.loads(RESULTS.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: v for k, v in data.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _write_results(results: dict[str, float]) -> None:
    text = json.dumps(dict(sorted(results.items())), indent=2) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=".results.", suffix=".tmp", dir=HERE)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, RESULTS)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _fmt(value: float) -> str:
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer() and abs(value) < 1e15):
        return f"{int(value)}"
    a = abs(value)
    if a >= 1000:
        return f"{value:.1f}"
    if a >= 1:
        return f"{value:.4g}" if a < 100 else f"{value:.2f}"
    return f"{value:.4g}"


def main(argv: list[str] | None = None) -> int:
    patterns = list(sys.argv[1:] if argv is None else argv)
    names = discover(patterns)
    if not names:
        print(f"no benchmark module matches {patterns}", file=sys.stderr)
        return 2
    if str(HERE.parent) not in sys.path:
        sys.path.insert(0, str(HERE.parent))
    rows: list[tuple[str, float, str, str]] = []
    failed: list[str] = []
    figures: dict[str, float] = {}
    for name in names:
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        try:
            module = importlib.import_module(f"bench.{name}")
            result = module.run()
            targets = getattr(module, "TARGETS", {}) or {}
        except Exception:
            failed.append(name)
            print(f"[bench] {name} FAILED:\n{traceback.format_exc()}", file=sys.stderr, flush=True)
            continue
        print(f"[bench] {name} done in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
        for key, value in result.items():
            try:
                value = float(value)
            except (TypeError, ValueError):
                print(f"[bench] {name}: {key} is not a number ({value!r}); skipped", file=sys.stderr)
                continue
            target, status = "", ""
            if key in targets:
                op, ref = targets[key]
                target = f"{op} {_fmt(float(ref))}"
                status = "met" if math.isfinite(value) and OPS[op](value, ref) else "NOT MET"
            rows.append((key, value, target, status))
            if math.isfinite(value):
                figures[key] = value
    if rows:
        w0 = max(len("figure"), *(len(r[0]) for r in rows))
        w1 = max(len("value"), *(len(_fmt(r[1])) for r in rows))
        w2 = max(len("target"), *(len(r[2]) for r in rows))
        print(f"{'figure':<{w0}}  {'value':>{w1}}  {'target':<{w2}}  status")
        print(f"{'-' * w0}  {'-' * w1}  {'-' * w2}  ------")
        for key, value, target, status in rows:
            print(f"{key:<{w0}}  {_fmt(value):>{w1}}  {target:<{w2}}  {status}")
    if failed:
        print(f"failed: {', '.join(failed)}")
    if figures:
        merged = _load_results()
        merged.update(figures)
        _write_results(merged)
        print(f"wrote {RESULTS.relative_to(HERE.parent)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
