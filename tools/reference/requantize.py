"""Re-quantizes the default model (Q4_1) into the K-quant mixes the real-weights tests use, with
llama.cpp's own quantizer through the llama-cpp-python bindings (`llama_model_quantize`,
allow_requantize: the weights are dequantized from Q4_1 and quantized again, so the files test our
kernels on real K-quant blocks, not a better model).

SmolLM2-135M's 576-wide rows are not whole 256-value super-blocks, so llama.cpp stores those
tensors in its fallback types (Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0, Q2_K/Q3_K -> IQ4_NL) and
only the 1536-wide ffn_down rows in K-quants: every file mixes a K-quant with a 32-block format.

Usage: python3 requantize.py [--out models] [TYPE ...]   (TYPE: Q4_K_M Q5_K_M Q6_K Q2_K; default all)
Needs llama_cpp importable (pip install llama-cpp-python, or the unpacked sdist on PYTHONPATH with
LLAMA_CPP_LIB_PATH, see README.md). Writes models/SmolLM2-135M-Instruct.<TYPE>.gguf (never committed).
"""

from __future__ import annotations

import argparse
import ctypes
import pathlib
import sys

import llama_cpp

import common

FTYPES = {
    "Q4_K_M": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M,
    "Q5_K_M": llama_cpp.LLAMA_FTYPE_MOSTLY_Q5_K_M,
    "Q6_K": llama_cpp.LLAMA_FTYPE_MOSTLY_Q6_K,
    "Q2_K": llama_cpp.LLAMA_FTYPE_MOSTLY_Q2_K,
}


def output_path(out_dir: pathlib.Path, kind: str) -> pathlib.Path:
    return out_dir / f"SmolLM2-135M-Instruct.{kind}.gguf"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(common.ROOT / "models"))
    ap.add_argument("types", nargs="*", default=list(FTYPES))
    args = ap.parse_args()
    out_dir = pathlib.Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    for kind in args.types:
        dst = output_path(out_dir, kind)
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = FTYPES[kind]
        params.allow_requantize = True
        params.nthread = 2
        tmp = dst.with_suffix(".gguf.part")
        rc = llama_cpp.llama_model_quantize(str(common.MODEL).encode(), str(tmp).encode(), ctypes.byref(params))
        if rc != 0:
            sys.exit(f"llama_model_quantize {kind} failed ({rc})")
        tmp.replace(dst)
        print(f"wrote {dst} ({dst.stat().st_size} bytes)", flush=True)


if __name__ == "__main__":
    main()
