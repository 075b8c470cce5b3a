"""Writes Tests/Fixtures/kquant_dequant.json: raw ggml blocks of the 5-bit, K-quant and BF16 formats
with their values as gguf's `dequantize` computes them (the oracle for DequantFixtureTests).

Needs numpy and gguf (PyPI). Per format, a small matrix (2 rows) of:
  - "random": seeded random block bytes with modest, finite f16 scale fields (every value, every
    sub-block scale and minimum pattern occurs); the K-quants have no quantizer in gguf, and any
    bytes are a valid block;
  - "quantized": for Q5_0, Q5_1 and BF16, random floats put through `gguf.quants.quantize`;
  - "real" (optional, --real FILE...): the leading 256 (K-quants) or 128 values of the first 2 rows
    of the first tensor of each format found in the given GGUF files (the committed fixture used the
    SmolLM2 files llama.cpp re-quantized, requantize.py: Q4_K, Q5_K, Q6_K, Q3_K, Q5_0, Q5_1 blocks).
Values are stored as little-endian float32 bytes in base64, raw blocks likewise in base64.

Usage: python3 gen_kquant_fixture.py [--real models/SmolLM2-135M-Instruct.{Q4_K_M,Q5_K_M,Q6_K,Q2_K}.gguf]
"""

from __future__ import annotations

import argparse
import base64
import json
import pathlib

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T

HERE = pathlib.Path(__file__).resolve().parent
OUT = HERE.parent.parent / "Tests" / "Fixtures" / "kquant_dequant.json"
SEED = 13
ROWS = 2

# Format -> (values per row in the fixture, byte offsets of the f16 scale fields in a raw block).
FORMATS = {
    "Q5_0": (T.Q5_0, 128, [0]),
    "Q5_1": (T.Q5_1, 128, [0, 2]),
    "Q2_K": (T.Q2_K, 256, [80, 82]),
    "Q3_K": (T.Q3_K, 256, [108]),
    "Q4_K": (T.Q4_K, 256, [0, 2]),
    "Q5_K": (T.Q5_K, 256, [0, 2]),
    "Q6_K": (T.Q6_K, 256, [208]),
    "BF16": (T.BF16, 64, []),
    "IQ4_NL": (T.IQ4_NL, 128, [0]),
}


def b64(a: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(a).tobytes()).decode("ascii")


def case(name: str, source: str, raw: np.ndarray, in_features: int) -> dict:
    qtype = FORMATS[name][0]
    raw = np.ascontiguousarray(raw, dtype=np.uint8).reshape(ROWS, -1)
    values = gguf.quants.dequantize(raw, qtype).astype(np.float32).reshape(ROWS, in_features)
    assert np.all(np.isfinite(values)), f"{name} {source}: non-finite values"
    return {"format": name, "source": source, "rows": ROWS, "in_features": in_features,
            "raw": b64(raw), "values_f32": b64(values.astype("<f4"))}


def random_case(name: str, rng: np.random.Generator) -> dict:
    qtype, n, f16_at = FORMATS[name]
    block_values, block_bytes = gguf.GGML_QUANT_SIZES[qtype]
    if qtype == T.BF16:
        x = (rng.standard_normal(ROWS * n) * 0.1).astype(np.float32)
        raw = (x.view(np.uint32) >> 16).astype("<u2").view(np.uint8)
        return case(name, "random", raw, n)
    blocks = rng.integers(0, 256, size=(ROWS * n // block_values, block_bytes), dtype=np.uint8)
    for at in f16_at:
        scale = rng.uniform(1e-4, 2e-3 if block_values == 256 else 2e-2, size=len(blocks)).astype(np.float16)
        if name == "Q5_1" and at == 2:
            scale = (-scale * 8).astype(np.float16)
        blocks[:, at:at + 2] = scale.view(np.uint8).reshape(-1, 2)
    return case(name, "random", blocks, n)


def quantized_case(name: str, rng: np.random.Generator) -> dict:
    qtype, n, _ = FORMATS[name]
    x = (rng.standard_normal((ROWS, n)) * 0.05).astype(np.float32)
    raw = gguf.quants.quantize(x, qtype)
    return case(name, "quantized", raw.view(np.uint8), n)


def real_cases(paths: list[str]) -> list[dict]:
    """The first 256 (K-quants) or 128 values of each of the first 2 rows of the first tensor of each
    format, as a 2-row matrix (blocks are independent, so a row's leading blocks are a valid row)."""
    found: dict[str, dict] = {}
    for path in paths:
        reader = gguf.GGUFReader(path)
        for t in reader.tensors:
            name = t.tensor_type.name
            if name not in FORMATS or name in found or FORMATS[name][0] == T.BF16:
                continue
            block_values, block_bytes = gguf.GGML_QUANT_SIZES[t.tensor_type]
            take = FORMATS[name][1]
            row_bytes = int(t.shape[0]) // block_values * block_bytes
            data = np.asarray(t.data).view(np.uint8).reshape(-1)
            raw = np.concatenate([data[r * row_bytes: r * row_bytes + take // block_values * block_bytes] for r in range(ROWS)])
            found[name] = case(name, f"real: {pathlib.Path(path).name} {t.name}", raw, take)
    return [found[k] for k in FORMATS if k in found]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--real", nargs="*", default=[])
    args = ap.parse_args()
    rng = np.random.default_rng(SEED)
    cases = [random_case(name, rng) for name in FORMATS]
    cases += [quantized_case(name, rng) for name in ("Q5_0", "Q5_1", "BF16")]
    cases += real_cases(args.real)
    from importlib.metadata import version

    doc = {"generator": "tools/reference/gen_kquant_fixture.py", "seed": SEED,
           "gguf": version("gguf"), "numpy": version("numpy"), "cases": cases}
    OUT.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes, {len(cases)} cases)")


if __name__ == "__main__":
    main()
