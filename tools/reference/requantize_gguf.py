"""Writes a copy of a GGUF file with every weight matrix in one format the engine runs (default
Q8_0): each non-F32 2-D tensor is dequantized by `gguf.quants.dequantize` and re-quantized by
`gguf.quants.quantize`; F32 tensors and all metadata are copied as they are.

For testing an architecture before its file's weight formats are supported:
    python3 tools/reference/requantize_gguf.py models/gemma-3-270m-q4_k_m.gguf /tmp/gemma3-q8_0.gguf
"""

from __future__ import annotations

import sys

import numpy as np
from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType, GGUFWriter
from gguf.quants import dequantize, quantize


def copy_metadata(reader: GGUFReader, writer: GGUFWriter, skip: tuple[str, ...] = ()) -> None:
    """Every key of `reader` but GGUF.*, general.architecture (GGUFWriter writes it) and `skip`."""
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture" or key in skip:
            continue
        vtype = GGUFValueType(field.types[0])
        if vtype == GGUFValueType.ARRAY:
            sub = GGUFValueType(field.types[-1])
            writer.add_key_value(key, field.contents(), vtype, sub_type=sub)
        else:
            writer.add_key_value(key, field.contents(), vtype)


def main(src: str, dst: str, target: str = "Q8_0") -> None:
    qtype = GGMLQuantizationType[target]
    r = GGUFReader(src)
    arch = r.fields["general.architecture"].contents()
    w = GGUFWriter(dst, arch)
    copy_metadata(r, w)
    for t in r.tensors:
        if t.tensor_type in (GGMLQuantizationType.F32,) or len(t.shape) == 1:
            data = np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float32)
            w.add_tensor(t.name, data)
        else:
            f = np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float32)
            q = quantize(f, qtype)
            w.add_tensor(t.name, q, raw_shape=q.shape, raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    main(*sys.argv[1:])
