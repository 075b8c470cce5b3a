"""Writes models/kquant_logits_reference.json: float64 reference logits (float_ref.py, weights
through gguf's `dequantize`) of the re-quantized SmolLM2 files kquantize.py writes, for
KQuantModelTests (our logits on each file against the float64 pass over the same file).

Written beside the models (never committed), by `make kquant-models` right after kquantize.py, from
the very files the test reads (the files are checked against MANIFEST.json; the reference's BLAS
sums need not be bit-identical across hosts). Small (three prompts, the positions
{0, n/4, n/2, 3n/4, n-1}, the top 20 and 64 probe ids per position); each file's sha256 is
recorded and the test refuses a file whose hash differs.

Usage: OPENBLAS_NUM_THREADS=1 python3 gen_kquant_reference.py [--dir models] [TYPE ...]   (default: every file present)
"""

from __future__ import annotations

import argparse
import json
import pathlib
from collections import Counter

import numpy as np
from gguf import GGUFReader

import common
from float_ref import Cache, FloatLlama, sha256_file
from gen_float_reference import positions_for, r, tokenizer_cases
from kquantize import MIX_NAMES, output_path

PROMPTS = ["chat-1", "logits-plain-short", "logits-plain-code"]
N_PROBE = 64
PROBE_SEED = 20251203


def probe_ids(n_vocab: int) -> list[int]:
    rng = np.random.default_rng(PROBE_SEED)
    ids = rng.choice(np.arange(3, n_vocab), size=N_PROBE - 3, replace=False)
    return sorted([0, 1, 2] + [int(i) for i in ids])


def reference(kind: str, cases: dict, directory: pathlib.Path) -> dict:
    path = output_path(directory, kind)
    model = FloatLlama(str(path))
    types = Counter(t.tensor_type.name for t in GGUFReader(str(path)).tensors)
    probes = probe_ids(model.n_vocab)
    prompts = []
    for name in PROMPTS:
        ids = cases[name]["ids"]
        logits = model.forward(ids, Cache())
        entries = []
        for p in positions_for(len(ids)):
            row = logits[p]
            order = np.argsort(-row, kind="stable")
            entries.append({"pos": p, "argmax": int(order[0]), "margin": r(row[order[0]] - row[order[1]]),
                            "top20": [[int(i), r(row[i])] for i in order[:20]],
                            "probe_logits": [r(row[i]) for i in probes]})
        prompts.append({"name": name, "ids": ids, "positions": entries})
        print(kind, name, [e["argmax"] for e in entries], flush=True)
    return {"type": kind, "file": path.name, "sha256": sha256_file(str(path)), "tensor_types": dict(sorted(types.items())),
            "probe_ids": probes, "prompts": prompts}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", default=str(common.ROOT / "models"), help="where kquantize.py wrote the files")
    ap.add_argument("types", nargs="*")
    args = ap.parse_args()
    directory = pathlib.Path(args.dir)
    args.types = args.types or [k for k in MIX_NAMES if output_path(directory, k).exists()]
    cases = tokenizer_cases()
    doc = {"meta": {"generator": "tools/reference/gen_kquant_reference.py",
                    "source_model_sha256": common.MODEL_SHA256,
                    "requantized_by": "tools/reference/kquantize.py (numpy; llama.cpp's per-tensor types)",
                    "reference": "numpy float64 forward pass over gguf.quants.dequantize'd weights (float_ref.py)",
                    "probe_seed": PROBE_SEED},
           "models": [reference(kind, cases, directory) for kind in args.types]}
    common.write_json(directory / "kquant_logits_reference.json", doc)


if __name__ == "__main__":
    main()
