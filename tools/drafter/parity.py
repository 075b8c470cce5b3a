#!/usr/bin/env python3
"""The runtime's learned drafter against this folder's numpy reference forward (drafter.py).

Inputs: the `--dump` of `cast-bench drafter-check` (per greedy reply: its tokens and, at every
reply position t, the Swift drafter's depth-1 top-1 token and probability from the prefill
feature of row t and the token at t + 1) and the features of the same sequences written by
`cast-bench features --input DUMP`. For every position the numpy forward runs on the same
inputs; the report gives how often the top-1 tokens agree, the probability differences, and
both sides' chain acceptance per depth from every reply position.

The runtime holds the drafter's matrices and the draft-vocabulary head as Q8_0 and quantizes
activations to 8 bits, so the two sides differ by rounding: the check fails when fewer than
--min-agreement of the top-1 tokens agree or the median probability difference is above
--max-median-diff.

    python3 tools/drafter/parity.py --model M --drafter D --dump dump.jsonl --features f.bin
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from drafter import DrafterError, Head, Target, read_features, read_gguf  # noqa: E402


def chain(model, head, target, seq, depth: int):
    """Numpy top-1 chains from every reply start t (feature t, token t + 1, then its own features
    and the reply's tokens): (top-1 ids [starts, depth] with -1 past the end, depth-1 probabilities)."""
    p, n = seq.prompt_tokens, len(seq.tokens)
    starts = np.arange(p - 1, n - 1)
    f = seq.features[starts - seq.first].astype(np.float32)
    ids = np.full((len(starts), depth), -1, dtype=np.int64)
    probability = None
    for k in range(depth):
        live = starts + k + 2 < n
        rows = np.where(live, starts + k + 1, starts)
        out, _ = model.step(target.embeddings(seq.tokens[rows]), f, target.eps)
        logits, _ = head.forward(out)
        top = np.argmax(logits, axis=1)
        ids[:, k] = np.where(live, top, -1)
        if k == 0:
            z = logits - logits.max(axis=1, keepdims=True)
            probability = 1.0 / np.exp(z).sum(axis=1)
        f = out
    return ids, probability


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, type=Path, help="the target GGUF")
    ap.add_argument("--drafter", required=True, type=Path, help="the drafter GGUF")
    ap.add_argument("--dump", required=True, type=Path, help="cast-bench drafter-check --dump output")
    ap.add_argument("--features", required=True, type=Path, help="cast-bench features --input DUMP output")
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--min-agreement", type=float, default=0.95)
    ap.add_argument("--max-median-diff", type=float, default=0.02)
    ap.add_argument("--json", action="store_true", help="print the report as JSON")
    args = ap.parse_args(argv)
    try:
        target = Target.load(args.model)
        model, vocab = read_gguf(args.drafter)
        head = Head(target, vocab)
        lines = [json.loads(l) for l in args.dump.read_text().splitlines() if l.strip()]
        d, _, seqs = read_features(args.features)
        if len(seqs) != len(lines) or any(s.tokens.tolist() != l["tokens"] for s, l in zip(seqs, lines)):
            raise DrafterError(f"{args.features} does not hold the sequences of {args.dump}; "
                               "run cast-bench features --input on that dump")
        agree = total = 0
        diffs = []
        every = np.zeros((args.depth, 2), dtype=np.int64)  # observed, accepted
        for seq, line in zip(seqs, lines):
            ids, probability = chain(model, head, target, seq, args.depth)
            swift = np.asarray(line["draft_top1"], dtype=np.int64)
            live = ids[:, 0] >= 0   # starts whose depth-1 draft has a reply token to meet
            mine = vocab[ids[live, 0]]
            if len(swift) != len(mine):
                raise DrafterError(f"{args.dump}: {len(swift)} drafts for a reply of {len(mine)} positions")
            agree += int(np.sum(swift == mine))
            total += len(mine)
            diffs.append(np.abs(np.asarray(line["draft_top1_probability"]) - probability[live]))
            n = len(seq.tokens)
            for i, t in enumerate(range(seq.prompt_tokens - 1, n - 1)):
                for k in range(args.depth):
                    if t + k + 2 >= n:
                        break
                    every[k, 0] += 1
                    if vocab[ids[i, k]] != seq.tokens[t + k + 2]:
                        break
                    every[k, 1] += 1
        diffs = np.concatenate(diffs) if diffs else np.zeros(0)
        report = {
            "positions": total, "top1_agreement": round(agree / max(total, 1), 4),
            "probability_diff_median": round(float(np.median(diffs)), 5) if total else 0.0,
            "probability_diff_max": round(float(diffs.max()), 5) if total else 0.0,
            "numpy_every_position": [{"observed": int(o), "accepted": int(a)} for o, a in every],
        }
        if args.json:
            print(json.dumps(report, indent=2, sort_keys=True))
        else:
            print(f"parity: {total} positions; top-1 agreement {report['top1_agreement']:.4f}; |p swift - p numpy| "
                  f"median {report['probability_diff_median']:.5f}, max {report['probability_diff_max']:.5f}")
            print("parity: numpy chain acceptance from every reply position by depth: " +
                  ", ".join(f"{a / max(o, 1):.3f} ({a}/{o})" for o, a in every))
        ok = report["top1_agreement"] >= args.min_agreement and report["probability_diff_median"] <= args.max_median_diff
        if not ok:
            print(f"parity: FAILED (need agreement >= {args.min_agreement} and median diff <= {args.max_median_diff})",
                  file=sys.stderr)
        return 0 if ok else 1
    except DrafterError as e:
        print(f"parity: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
