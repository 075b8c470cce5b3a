"""Writes Tests/Fixtures/logits_reference.json and Tests/Fixtures/greedy_reference.json from the
independent numpy float64 forward pass (float_ref.py). Needs only numpy + gguf: token ids are read
from Tests/Fixtures/tokenizer.json (llama.cpp's tokenizer), so run gen_tokenizer.py first.

Usage: python3 gen_float_reference.py [--only logits|greedy]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

import common
from float_ref import FloatLlama, sha256_file

N_NEW = 32
N_PROBE = 256
PROBE_SEED = 20240531
ROUND = 5  # decimals kept for logits (reference is float64; 1e-5 is far below any test tolerance)

LOGITS_CASES = ["chat-1", "code-1", "math-1", "logits-plain-short", "logits-plain-code", "logits-plain-long"]


def probe_ids(n_vocab: int) -> list[int]:
    rng = np.random.default_rng(PROBE_SEED)
    ids = rng.choice(np.arange(3, n_vocab), size=N_PROBE - 3, replace=False)
    # Always include the three most important special tokens.
    return sorted([0, 1, 2] + [int(i) for i in ids])


def tokenizer_cases() -> dict[str, dict]:
    with open(common.FIXTURES / "tokenizer.json", encoding="utf-8") as f:
        return {c["name"]: c for c in json.load(f)}


def positions_for(n: int) -> list[int]:
    return sorted({0, n // 4, n // 2, (3 * n) // 4, n - 1})


def r(x: float) -> float:
    return round(float(x), ROUND)


def gen_logits(model: FloatLlama, cases: dict, meta: dict) -> None:
    from float_ref import Cache

    probes = probe_ids(model.n_vocab)
    out = []
    for name in LOGITS_CASES:
        ids = cases[name]["ids"]
        logits = model.forward(ids, Cache())  # (n, vocab)
        entries = []
        for p in positions_for(len(ids)):
            row = logits[p]
            order = np.argsort(-row, kind="stable")
            m = row.max()
            lse = m + np.log(np.exp(row - m).sum())
            entries.append(
                {
                    "pos": p,
                    "argmax": int(order[0]),
                    "margin": r(row[order[0]] - row[order[1]]),
                    "logsumexp": r(lse),
                    "top20": [[int(i), r(row[i])] for i in order[:20]],
                    "probe_logits": [r(row[i]) for i in probes],
                }
            )
        out.append({"name": name, "ids": ids, "positions": entries})
        print(name, len(ids), [e["argmax"] for e in entries], flush=True)
    doc = {
        "meta": {
            **meta,
            "generator": "tools/reference/gen_float_reference.py",
            "probe_seed": PROBE_SEED,
            "positions": "sorted unique {0, n/4, n/2, 3n/4, n-1} (integer division); logits at pos predict token pos+1",
            "rounding": f"logits rounded to {ROUND} decimals",
        },
        "probe_ids": probes,
        "prompts": out,
    }
    common.write_json(common.FIXTURES / "logits_reference.json", doc)


def gen_greedy(model: FloatLlama, cases: dict, meta: dict) -> None:
    rows = []
    for row in common.load_prompts():
        ids = cases[row["id"]]["ids"]
        t = time.time()
        toks, margins = model.greedy(ids, N_NEW, eos=common.EOS)
        rows.append(
            {
                "id": row["id"],
                "category": row["category"],
                "prompt_ids": ids,
                "tokens": toks,
                "margins": [r(m) for m in margins],
                "stopped_at_eos": toks[-1] == common.EOS,
            }
        )
        print(row["id"], len(ids), toks[:8], f"min margin {min(margins):.3f}", f"{time.time() - t:.1f}s", flush=True)
    doc = {
        "meta": {
            **meta,
            "generator": "tools/reference/gen_float_reference.py",
            "n_new": N_NEW,
            "eos": common.EOS,
            "greedy": "argmax of float64 logits (ties: lowest id); stop after eos (included)",
            "margins": "per step, top1 logit minus top2 logit; trust tokens only up to the first small margin",
        },
        "prompts": rows,
    }
    common.write_json(common.FIXTURES / "greedy_reference.json", doc)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", choices=["logits", "greedy"])
    args = ap.parse_args()
    sha = sha256_file(str(common.MODEL))
    assert sha == common.MODEL_SHA256, f"model sha256 {sha} != {common.MODEL_SHA256}"
    model = FloatLlama(str(common.MODEL))
    meta = {
        "model_sha256": sha,
        "reference": "numpy float64 forward pass over gguf.quants.dequantize'd weights (tools/reference/float_ref.py)",
        "token_ids_from": "Tests/Fixtures/tokenizer.json (llama.cpp tokenizer)",
    }
    cases = tokenizer_cases()
    if args.only in (None, "logits"):
        gen_logits(model, cases, meta)
    if args.only in (None, "greedy"):
        gen_greedy(model, cases, meta)


if __name__ == "__main__":
    main()
