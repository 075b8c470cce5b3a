"""llama.cpp's own Gemma 3 logits against the float64 reference (Tests/Fixtures/gemma3_logits.json):
the same file, prompts and positions as CastServe's Gemma3Tests, through llama-cpp-python; prints
argmax agreement and max / median |Δlogit| over the probe ids per position, so CastServe's figures
can be read beside the peer's.

Usage: python3 tools/reference/compare_gemma3_logits_llamacpp.py [--model models/gemma-3-270m-q4_k_m.gguf]
"""

from __future__ import annotations

import argparse
import json
import pathlib

import numpy as np
from llama_cpp import Llama

ROOT = pathlib.Path(__file__).resolve().parents[2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(ROOT / "models/gemma-3-270m-q4_k_m.gguf"))
    args = ap.parse_args()
    fixture = json.loads((ROOT / "Tests/Fixtures/gemma3_logits.json").read_text(encoding="utf-8"))
    probe = fixture["probe_ids"]
    model = Llama(model_path=args.model, n_ctx=2048, logits_all=True, verbose=False, n_threads=2)
    agree = total = 0
    worst = []
    for prompt in fixture["prompts"]:
        model.reset()
        model.eval(prompt["ids"])
        for position in prompt["positions"]:
            logits = np.array(model.scores[position["pos"]], dtype=np.float64)
            diff = np.abs(logits[probe] - np.array(position["probe_logits"]))
            same = int(logits.argmax()) == position["argmax"]
            agree += same
            total += 1
            worst.append(float(diff.max()))
            print(f"{prompt['name']:>18} pos {position['pos']:4d}  margin {position['margin']:.3f}  "
                  f"argmax {'same' if same else 'DIFFERENT'}  max |d| {diff.max():.3f}  median {np.median(diff):.3f}")
    print(f"argmax agrees at {agree}/{total} positions; max |d| {min(worst):.2f}-{max(worst):.2f}")


if __name__ == "__main__":
    main()
