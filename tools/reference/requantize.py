"""Re-quantizes the default model (Q4_1) into the K-quant mixes with llama.cpp's own quantizer, through
the llama-cpp-python bindings (`llama_model_quantize`, allow_requantize), and checks that every
tensor's type is the one kquantize.py's table (MIXES) gives it. Not part of `make test` (that uses
kquantize.py, no llama.cpp build): run it by hand after a llama.cpp update to re-read the table, or
to get llama.cpp's own blocks (gen_kquant_fixture.py --real).

Usage: python3 requantize.py [--out models] [TYPE ...]   (TYPE: Q4_K_M Q5_K_M Q6_K Q2_K; default all)
Needs llama_cpp importable (pip install llama-cpp-python==0.3.36, a source build of 10+ minutes on
2 cores, or the unpacked sdist on PYTHONPATH with LLAMA_CPP_LIB_PATH, see README.md). Writes
<out>/SmolLM2-135M-Instruct.<TYPE>.gguf (never committed); exits 1 when a type differs from MIXES.
"""

from __future__ import annotations

import argparse
import ctypes
import pathlib
import sys

from gguf import GGUFReader

import common
from kquantize import MIX_NAMES, output_path, tensor_type


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(common.ROOT / "models"))
    ap.add_argument("types", nargs="*", default=list(MIX_NAMES))
    args = ap.parse_args()
    import llama_cpp  # only here: the rest of tools/reference runs without the bindings

    out_dir = pathlib.Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    differ = []
    for kind in args.types:
        dst = output_path(out_dir, kind)
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{kind}")
        params.allow_requantize = True
        params.nthread = 2
        tmp = dst.with_suffix(".gguf.part")
        rc = llama_cpp.llama_model_quantize(str(common.MODEL).encode(), str(tmp).encode(), ctypes.byref(params))
        if rc != 0:
            sys.exit(f"llama_model_quantize {kind} failed ({rc})")
        tmp.replace(dst)
        print(f"wrote {dst} ({dst.stat().st_size} bytes)", flush=True)
        for t in GGUFReader(str(dst)).tensors:
            if len(t.shape) > 1 and t.tensor_type != tensor_type(kind, t.name):
                differ.append(f"{kind} {t.name}: llama.cpp {t.tensor_type.name}, kquantize.py {tensor_type(kind, t.name).name}")
    if differ:
        sys.exit("the types differ from kquantize.py's MIXES:\n" + "\n".join(differ))
    print("every tensor's type is the one kquantize.py's MIXES gives it")


if __name__ == "__main__":
    main()
