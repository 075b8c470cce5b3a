#!/usr/bin/env python3
"""Runs the end-to-end test modules (tests/test_*.py) in parallel worker processes.

Most of an end-to-end test's time is spent waiting: for a server to load and calibrate, for a
stream, for a timeout to pass. `make test` therefore runs the modules `--jobs` at a time (each in
its own `python3 -m unittest -v MODULE` process, from the caller's directory with tests/ on
PYTHONPATH as `unittest discover -s tests` has it, so servers, ports and cost caches never mix:
the harness reads each server's port from its log and keeps a cost cache per process), the
modules known to take longest first. Each module's output is printed whole when it finishes;
a summary with every module's time and result comes last, and the exit status is 1 when any
module failed.

Usage: python3 tests/run_e2e.py [--jobs N] [MODULE ...]   (default: every test_*.py, jobs = 2)
"""
import argparse
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed

HERE = os.path.dirname(os.path.abspath(__file__))

# The slowest modules on a 2-core host (measured 2026-12-07: 40-145 s each), started first so that
# the last one to finish is not a long one started late.
LONG_FIRST = ["test_kernels", "test_structured_outputs", "test_soak_tool", "test_prompt_logprobs",
              "test_multimodel", "test_cast_bench_matrix", "test_speculation", "test_tools"]


def modules(names):
    found = sorted(f[:-3] for f in os.listdir(HERE) if f.startswith("test_") and f.endswith(".py"))
    if names:
        unknown = [n for n in names if n not in found]
        if unknown:
            sys.exit(f"run_e2e.py: no test module {', '.join(unknown)} in {HERE}; modules: {', '.join(found)}")
        found = names
    return sorted(found, key=lambda m: (LONG_FIRST.index(m) if m in LONG_FIRST else len(LONG_FIRST), m))


def run(module):
    # As `unittest discover -s tests` runs them: from the caller's directory (paths such as
    # CASTSERVE_BIN=.build/release/cast-serve are relative to it), with tests/ importable.
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (HERE, os.environ.get("PYTHONPATH")) if p))
    start = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "unittest", "-v", module], env=env,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    ran = re.findall(r"^Ran (\d+) tests?", p.stdout, re.M)
    return module, p.returncode, time.monotonic() - start, int(ran[-1]) if ran else 0, p.stdout


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=2, help="modules run at once (default 2)")
    ap.add_argument("modules", nargs="*", help="test modules (default: every tests/test_*.py)")
    args = ap.parse_args()
    if args.jobs < 1:
        sys.exit("run_e2e.py: --jobs must be at least 1")
    todo = modules(args.modules)
    start = time.monotonic()
    results = []
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        for done in as_completed([pool.submit(run, m) for m in todo]):
            module, rc, seconds, ran, output = done.result()
            results.append((module, rc, seconds, ran))
            print(f"===== {module}: {'ok' if rc == 0 else f'FAILED (exit {rc})'}, {ran} tests, {seconds:.0f} s", flush=True)
            print(output, flush=True)
    failed = [r for r in results if r[1] != 0]
    print(f"\n{'module':<28} {'tests':>5} {'seconds':>8}  result")
    for module, rc, seconds, ran in sorted(results, key=lambda r: -r[2]):
        print(f"{module:<28} {ran:>5} {seconds:>8.0f}  {'ok' if rc == 0 else 'FAILED'}")
    total = sum(r[3] for r in results)
    print(f"{len(results)} modules, {total} tests, {time.monotonic() - start:.0f} s wall with {args.jobs} jobs: "
          + ("OK" if not failed else f"FAILED: {', '.join(r[0] for r in failed)}"), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
