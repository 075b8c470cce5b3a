"""Re-quantizes the default model (Q4_1) into the K-quant mixes KQuantModelTests checks, in numpy:
no llama.cpp build. Each weight matrix is dequantized by `gguf.quants.dequantize` and quantized
again into the type llama.cpp's `llama_model_quantize` gives that tensor in the mix (MIXES below,
read from the files llama.cpp 0.3.36 wrote with allow_requantize); the files test our kernels on
real K-quant blocks of real weights, not a better model.

SmolLM2-135M's 576-wide rows are not whole 256-value super-blocks, so llama.cpp stores those
tensors in its 32-value fallbacks (Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0, Q2_K/Q3_K -> Q4_0)
and only the 1536-wide ffn_down rows in K-quants: every file mixes a K-quant with a 32-block
format. The Q2_K mix holds no Q2_K block: its ffn_down is Q3_K.

Block layouts are ggml's, byte for byte: `gguf.quants.dequantize` (independent code) reads them,
and `--check` round-trips real rows of every format and blocks the formats hold exactly (those must
come back bit for bit). Q4_0, Q5_0, Q5_1 and Q8_0 are gguf's own `gguf.quants.quantize`; Q3_K,
Q4_K, Q5_K and Q6_K are written here. The fit is a small search per sub-block: a few candidate
scales around the one that maps the extreme value to the end of the code range, each refitted by
least squares (the scale, and the minimum for the affine formats) on its codes, the least squared
error kept; then the sub-block scales are quantized against the super-block's f16 scale and the
codes recomputed with the stored scales. On SmolLM2's ffn_down rows the error is llama.cpp's or
a little lower (NMSE Q4_K 3.2e-4, Q5_K 3.4e-4, Q6_K 2.8e-4, Q3_K 2.1e-2: the rows are Q4_1 already).

Deterministic: only elementwise IEEE arithmetic, rint and fixed-order sums (no BLAS, no
randomness), so the same gguf and numpy write the same bytes; `make kquant-models` checks them
against tools/reference/MANIFEST.json ("kquant_models").

Usage: python3 kquantize.py [--out models] [TYPE ...]   (TYPE: Q4_K_M Q5_K_M Q6_K Q2_K; default all)
       python3 kquantize.py --check                       (round trips per format through gguf)
Writes <out>/SmolLM2-135M-Instruct.<TYPE>.gguf (never committed).
"""

from __future__ import annotations

import argparse
import pathlib
import re
import sys

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import GGUFReader, GGUFWriter
from gguf.quants import dequantize, quantize

import common
from requantize_gguf import copy_metadata

QK_K = 256
MIX_NAMES = ["Q4_K_M", "Q5_K_M", "Q6_K", "Q2_K"]

# llama_ftype of each mix (general.file_type), as llama.cpp writes it.
FILE_TYPES = {"Q2_K": 10, "Q4_K_M": 15, "Q5_K_M": 17, "Q6_K": 18}


# The layers llama.cpp's use_more_bits(i, 30) picks (i < 3, i >= 26, (i - 3) % 3 == 2).
MORE_BITS = {0, 1, 2, 5, 8, 11, 14, 17, 20, 23, 26, 27, 28, 29}

# Mix -> tensor kind (the name without "blk.N.") -> type, or (type, type in the MORE_BITS layers).
# Read from the files llama.cpp 0.3.36 (llama_model_quantize, allow_requantize; requantize.py checks
# it) wrote from the Q4_1 model; F32 vectors stay F32. token_embd is also the output matrix (tied):
# llama.cpp gives it the output's Q6_K, stored Q8_0.
MIXES: dict[str, dict[str, T | tuple[T, T]]] = {
    "Q4_K_M": {"token_embd.weight": T.Q8_0,
               "attn_q.weight": T.Q5_0, "attn_k.weight": T.Q5_0, "attn_output.weight": T.Q5_0,
               "attn_v.weight": (T.Q5_0, T.Q8_0),
               "ffn_gate.weight": T.Q5_0, "ffn_up.weight": T.Q5_0,
               "ffn_down.weight": (T.Q4_K, T.Q6_K)},
    "Q5_K_M": {"token_embd.weight": T.Q8_0,
               "attn_q.weight": T.Q5_1, "attn_k.weight": T.Q5_1, "attn_output.weight": T.Q5_1,
               "attn_v.weight": (T.Q5_1, T.Q8_0),
               "ffn_gate.weight": T.Q5_1, "ffn_up.weight": T.Q5_1,
               "ffn_down.weight": (T.Q5_K, T.Q6_K)},
    "Q6_K": {"token_embd.weight": T.Q8_0,
             "attn_q.weight": T.Q8_0, "attn_k.weight": T.Q8_0, "attn_output.weight": T.Q8_0,
             "attn_v.weight": T.Q8_0, "ffn_gate.weight": T.Q8_0, "ffn_up.weight": T.Q8_0,
             "ffn_down.weight": T.Q6_K},
    "Q2_K": {"token_embd.weight": T.Q8_0,
             "attn_q.weight": T.Q4_0, "attn_k.weight": T.Q4_0, "attn_output.weight": T.Q4_0,
             "attn_v.weight": T.Q4_0, "ffn_gate.weight": T.Q4_0, "ffn_up.weight": T.Q4_0,
             "ffn_down.weight": T.Q3_K},
}


def tensor_type(mix: str, name: str) -> T:
    """The type `mix` stores the 2-D tensor `name` in."""
    m = re.fullmatch(r"blk\.(\d+)\.(.+)", name)
    kind, layer = (m.group(2), int(m.group(1))) if m else (name, -1)
    rule = MIXES[mix].get(kind)
    if rule is None:
        raise KeyError(f"{name}: no type for this tensor in the {mix} table of kquantize.py (MIXES)")
    return rule if isinstance(rule, T) else rule[1] if layer in MORE_BITS else rule[0]


# ---- fitting ---------------------------------------------------------------------------------------

def _sum(a: np.ndarray) -> np.ndarray:
    """Sum over the last axis in float64 (the fit compares errors; float64 keeps ties away)."""
    return a.astype(np.float64).sum(axis=-1)


def _fit_symmetric(x: np.ndarray, lo: int, hi: int, deltas: np.ndarray) -> np.ndarray:
    """Per group (last axis) the signed scale s minimising sum (x - s*q)^2, q = clamp(rint(x/s), lo, hi):
    candidates put the largest-magnitude value at code lo + delta (the long end of the range), each
    refitted by least squares on its codes. Returns s (float32, 0 for an all-zero group)."""
    amax_i = np.argmax(np.abs(x), axis=-1)
    peak = np.take_along_axis(x, amax_i[..., None], axis=-1)  # signed, (..., 1)
    best_s = np.zeros(x.shape[:-1], dtype=np.float32)
    best_e = np.full(x.shape[:-1], np.inf)
    nz = peak != 0
    safe_peak = np.where(nz, peak, np.float32(1))
    for d in deltas:
        inv = np.float32(lo + d) / safe_peak  # x * inv maps peak to lo + d
        q = np.clip(np.rint(x * inv), lo, hi)
        qq = _sum(q * q)
        s = np.where(qq > 0, _sum(x * q) / np.where(qq > 0, qq, 1), 0).astype(np.float32)
        e = _sum((x - s[..., None] * q) ** 2)
        take = e < best_e
        best_s = np.where(take, s, best_s)
        best_e = np.where(take, e, best_e)
    return np.where(nz[..., 0], best_s, np.float32(0))


def _fit_affine(x: np.ndarray, hi: int, deltas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per group (last axis) scale s >= 0 and minimum m >= 0 minimising sum (x - (s*q - m))^2,
    q = clamp(rint((x + m)/s), 0, hi): candidates spread [min(x, 0), max(x)] over hi + delta steps,
    each refitted by least squares on its codes (m clamped at 0). Returns (s, m) as float32."""
    xmin = np.minimum(x.min(axis=-1, keepdims=True), 0)
    xmax = x.max(axis=-1, keepdims=True)
    span = xmax - xmin
    flat = span[..., 0] == 0
    safe_span = np.where(span > 0, span, np.float32(1))
    n = x.shape[-1]
    sx = _sum(x)
    best_s = np.zeros(x.shape[:-1], dtype=np.float32)
    best_m = (-xmin[..., 0]).astype(np.float32)
    best_e = np.full(x.shape[:-1], np.inf)
    for d in deltas:
        inv = np.float32(hi + d) / safe_span
        q = np.clip(np.rint((x - xmin) * inv), 0, hi)
        sq, sqq, sxq = _sum(q), _sum(q * q), _sum(x * q)
        det = n * sqq - sq * sq
        ok = det > 0
        safe_det = np.where(ok, det, 1)
        s = np.where(ok, (n * sxq - sq * sx) / safe_det, 0)
        off = np.where(ok, (sqq * sx - sq * sxq) / safe_det, 0)
        # The format stores value = s*q - m with m >= 0: a positive offset is refitted with m = 0.
        pos = off > 0
        s = np.where(pos, np.where(sqq > 0, sxq / np.where(sqq > 0, sqq, 1), 0), s)
        off = np.where(pos, 0, off)
        s32, m32 = s.astype(np.float32), (-off).astype(np.float32)
        e = _sum((x - (s32[..., None] * q - m32[..., None])) ** 2)
        take = (e < best_e) & (s32 >= 0)
        best_s = np.where(take, s32, best_s)
        best_m = np.where(take, m32, best_m)
        best_e = np.where(take, e, best_e)
    return np.where(flat, 0, best_s).astype(np.float32), np.where(flat, -xmin[..., 0], best_m).astype(np.float32)


def _super_scale(v: np.ndarray, top: int) -> tuple[np.ndarray, np.ndarray]:
    """Quantizes per-sub-block values v (n_blocks, n_sub), all >= 0, to 0..top against one f16 scale
    per block (max(v)/top). Returns (the f16 scale, the codes)."""
    d = (v.max(axis=-1) / np.float32(top)).astype(np.float16)
    d32 = d.astype(np.float32)[:, None]
    codes = np.clip(np.rint(v / np.where(d32 > 0, d32, 1)), 0, top)
    return d, np.where(d32 > 0, codes, 0).astype(np.uint8)


def _super_scale_signed(v: np.ndarray, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
    """Quantizes signed per-sub-block scales v (n_blocks, n_sub) to lo..hi against one f16 scale per
    block that puts the largest-magnitude one at lo. Returns (the f16 scale, the codes as int)."""
    peak = np.take_along_axis(v, np.argmax(np.abs(v), axis=-1)[:, None], axis=-1)[:, 0]
    d = (peak / np.float32(lo)).astype(np.float16)
    d32 = d.astype(np.float32)[:, None]
    codes = np.clip(np.rint(v / np.where(d32 != 0, d32, 1)), lo, hi)
    return d, np.where(d32 != 0, codes, 0).astype(np.int32)


def _codes_affine(x: np.ndarray, scale: np.ndarray, minimum: np.ndarray, hi: int) -> np.ndarray:
    """Codes of x (n, n_sub, k) under the stored per-sub-block scale and minimum (n, n_sub)."""
    s, m = scale[..., None], minimum[..., None]
    q = np.clip(np.rint((x + m) / np.where(s > 0, s, 1)), 0, hi)
    return np.where(s > 0, q, 0).astype(np.uint8)


def _codes_symmetric(x: np.ndarray, scale: np.ndarray, lo: int, hi: int) -> np.ndarray:
    s = scale[..., None]
    q = np.clip(np.rint(x / np.where(s != 0, s, 1)), lo, hi)
    return np.where(s != 0, q, 0).astype(np.int32)


DELTAS_AFFINE = np.arange(-5, 11, dtype=np.float32) / np.float32(10)  # hi - 0.5 ... hi + 1.0
DELTAS_SYMMETRIC = np.arange(-10, 11, 2, dtype=np.float32) / np.float32(10)  # lo - 1.0 ... lo + 1.0


# ---- block packing (ggml's layouts) --------------------------------------------------------------

def _f16_bytes(d: np.ndarray) -> np.ndarray:
    return d.astype("<f2").view(np.uint8).reshape(-1, 2)


def _pack_k_scales(sc: np.ndarray, mn: np.ndarray) -> np.ndarray:
    """Q4_K/Q5_K's 12 bytes of eight 6-bit scales and minimums (get_scale_min_k4's inverse)."""
    out = np.empty((sc.shape[0], 12), dtype=np.uint8)
    out[:, 0:4] = sc[:, 0:4] | ((sc[:, 4:8] >> 4) << 6)
    out[:, 4:8] = mn[:, 0:4] | ((mn[:, 4:8] >> 4) << 6)
    out[:, 8:12] = (sc[:, 4:8] & 0x0F) | ((mn[:, 4:8] & 0x0F) << 4)
    return out


def _pack_nibbles_k(q: np.ndarray) -> np.ndarray:
    """Low 4 bits of 256 codes as Q4_K/Q5_K store them: per 64 values, 32 bytes, the first 32 in
    the low nibbles, the next 32 in the high ones."""
    q = (q & 0x0F).reshape(-1, 4, 2, 32)
    return (q[:, :, 0] | (q[:, :, 1] << 4)).reshape(-1, 128)


def _pack_2bit(q: np.ndarray) -> np.ndarray:
    """Low 2 bits of 256 codes as Q2_K/Q3_K (and Q6_K's high bits) store them: per 128 values,
    32 bytes, value 32*j + l at bits 2j of byte l."""
    q = (q & 0x03).reshape(-1, 2, 4, 32)
    return (q[:, :, 0] | (q[:, :, 1] << 2) | (q[:, :, 2] << 4) | (q[:, :, 3] << 6)).reshape(-1, 64)


def _pack_bitplane(bits: np.ndarray) -> np.ndarray:
    """One bit of 256 codes in 32 bytes: value 32*j + l at bit j of byte l (Q3_K's hmask, Q5_K's qh)."""
    b = bits.reshape(-1, 8, 32).astype(np.uint8)
    out = np.zeros((b.shape[0], 32), dtype=np.uint8)
    for j in range(8):
        out |= b[:, j] << j
    return out


def _affine_k(x: np.ndarray, qmax: int):
    """Q4_K's and Q5_K's common part: 8 sub-blocks of 32 with a scale and a minimum each, both 6-bit
    against the super-block's f16 d and dmin; codes 0..qmax. Returns (d, dmin, sc, mn, q)."""
    xb = x.reshape(-1, 8, 32)
    s, m = _fit_affine(xb, qmax, DELTAS_AFFINE)
    d, sc = _super_scale(s, 63)
    dmin, mn = _super_scale(m, 63)
    q = _codes_affine(xb, d.astype(np.float32)[:, None] * sc, dmin.astype(np.float32)[:, None] * mn, qmax)
    return d, dmin, sc, mn, q


def quantize_q4_k(x: np.ndarray) -> np.ndarray:
    """Q4_K: d, dmin (f16), 12 bytes of 6-bit scales/minimums for 8 sub-blocks of 32, 128 bytes of codes."""
    d, dmin, sc, mn, q = _affine_k(x, 15)
    return np.concatenate([_f16_bytes(d), _f16_bytes(dmin), _pack_k_scales(sc, mn), _pack_nibbles_k(q)], axis=1)


def quantize_q5_k(x: np.ndarray) -> np.ndarray:
    """Q5_K: Q4_K's scales with 5-bit codes: d, dmin, 12 scale bytes, 32 bytes of high bits, 128 of low nibbles."""
    d, dmin, sc, mn, q = _affine_k(x, 31)
    return np.concatenate([_f16_bytes(d), _f16_bytes(dmin), _pack_k_scales(sc, mn),
                           _pack_bitplane(q >> 4), _pack_nibbles_k(q)], axis=1)


def quantize_q6_k(x: np.ndarray) -> np.ndarray:
    """Q6_K: 128 bytes of low nibbles, 64 of high 2 bits, 16 int8 scales (sub-blocks of 16), d (f16)."""
    xb = x.reshape(-1, 16, 16)
    s = _fit_symmetric(xb, -32, 31, DELTAS_SYMMETRIC)
    d, sc = _super_scale_signed(s, -128, 127)
    q = _codes_symmetric(xb, d.astype(np.float32)[:, None] * sc, -32, 31).reshape(-1, 256) + 32
    low = (q & 0x0F).astype(np.uint8).reshape(-1, 2, 2, 64)  # per 128 values: 64 bytes, two nibbles
    ql = (low[:, :, 0] | (low[:, :, 1] << 4)).reshape(-1, 128)
    qh = _pack_2bit((q >> 4).astype(np.uint8))
    return np.concatenate([ql, qh, sc.astype(np.int8).view(np.uint8), _f16_bytes(d)], axis=1)


def quantize_q3_k(x: np.ndarray) -> np.ndarray:
    """Q3_K: 32 bytes of high bits (set: code >= 0), 64 of low 2 bits, 12 bytes of 6-bit signed scales
    (sub-blocks of 16, stored + 32), d (f16)."""
    xb = x.reshape(-1, 16, 16)
    s = _fit_symmetric(xb, -4, 3, DELTAS_SYMMETRIC)
    d, sc = _super_scale_signed(s, -32, 31)
    q = _codes_symmetric(xb, d.astype(np.float32)[:, None] * sc, -4, 3).reshape(-1, 256) + 4
    u = (sc + 32).astype(np.uint8)
    scales = np.empty((u.shape[0], 12), dtype=np.uint8)
    scales[:, 0:8] = (u[:, 0:8] & 0x0F) | ((u[:, 8:16] & 0x0F) << 4)
    scales[:, 8:12] = ((u[:, 0:4] >> 4) | ((u[:, 4:8] >> 4) << 2) | ((u[:, 8:12] >> 4) << 4)
                       | ((u[:, 12:16] >> 4) << 6))
    q = q.astype(np.uint8)
    return np.concatenate([_pack_bitplane(q >> 2), _pack_2bit(q), scales, _f16_bytes(d)], axis=1)


QUANTIZERS = {T.Q3_K: quantize_q3_k, T.Q4_K: quantize_q4_k, T.Q5_K: quantize_q5_k, T.Q6_K: quantize_q6_k}


def quantize_matrix(values: np.ndarray, qtype: T) -> np.ndarray:
    """float32 matrix (rows, cols) -> ggml blocks (rows, bytes per row) of qtype."""
    values = np.ascontiguousarray(values, dtype=np.float32)
    rows, cols = values.shape
    if qtype not in QUANTIZERS:
        return quantize(values, qtype)
    if cols % QK_K != 0:
        raise ValueError(f"{qtype.name} needs rows of whole {QK_K}-value super-blocks, got {cols}")
    out = []
    step = max(1, (1 << 20) // cols)  # about 1M values per chunk: bounded memory, same result
    for r0 in range(0, rows, step):
        out.append(QUANTIZERS[qtype](values[r0:r0 + step].reshape(-1, QK_K)).reshape(-1))
    return np.concatenate(out).reshape(rows, -1)


# ---- files -----------------------------------------------------------------------------------------

def output_path(out_dir: pathlib.Path, kind: str) -> pathlib.Path:
    return out_dir / f"SmolLM2-135M-Instruct.{kind}.gguf"


def write_mix(src: GGUFReader, mix: str, dst: pathlib.Path) -> None:
    tmp = dst.with_suffix(".gguf.part")
    w = GGUFWriter(str(tmp), src.fields["general.architecture"].contents())
    copy_metadata(src, w, skip=("general.file_type",))
    w.add_file_type(FILE_TYPES[mix])
    for t in src.tensors:
        values = np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float32)
        if len(t.shape) == 1:
            w.add_tensor(t.name, values)
            continue
        qtype = tensor_type(mix, t.name)
        q = quantize_matrix(values, qtype)
        w.add_tensor(t.name, q, raw_shape=q.shape, raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    tmp.replace(dst)


# Largest NMSE --check accepts per format on real rows (measured 2-4x lower; a wrong layout gives ~1).
NMSE_BOUND = {T.Q3_K: 5e-2, T.Q4_K: 1e-2, T.Q5_K: 5e-3, T.Q6_K: 2e-3,
              T.Q4_0: 2e-2, T.Q5_0: 5e-3, T.Q5_1: 5e-3, T.Q8_0: 1e-4}


def _exact_blocks(qtype: T, n: int, rng: np.random.Generator) -> np.ndarray:
    """n blocks of values the format holds exactly (float32, computed as gguf's dequantize does),
    each sub-block with a code at the long end of its range and each block's largest sub-block
    scale at the end of the scale range: the fit has one answer, which must come back bit for bit."""
    def f16(lo: float, hi: float, shape, signed: bool) -> np.ndarray:
        v = rng.uniform(lo, hi, shape) * (rng.choice([-1, 1], shape) if signed else 1)
        return v.astype(np.float16).astype(np.float32)

    def codes(shape, lo: int, hi: int, *pinned: int) -> np.ndarray:
        c = rng.integers(lo, hi + 1, shape)
        for i, p in enumerate(pinned):
            c[..., i] = p  # then shuffled along the last axis
        return rng.permuted(c, axis=-1).astype(np.float32)

    if qtype in (T.Q4_K, T.Q5_K):
        top = 15 if qtype == T.Q4_K else 31
        d, dmin = f16(1e-4, 1e-2, (n, 1, 1), False), f16(1e-4, 1e-2, (n, 1, 1), False)
        sc = codes((n, 8), 1, 63, 63)[..., None]
        mn = codes((n, 8), 0, 63, 63)[..., None]
        q = codes((n, 8, 32), 0, top, 0, top)
        return ((d * sc) * q - (dmin * mn)).reshape(n, QK_K)
    if qtype in (T.Q3_K, T.Q6_K):
        lo, hi, slo, shi = (-4, 3, -32, 31) if qtype == T.Q3_K else (-32, 31, -128, 127)
        d = f16(1e-4, 1e-2, (n, 1, 1), True)
        sc = codes((n, 16), 1, shi, slo)[..., None] * rng.choice([-1, 1], (n, 16, 1))
        sc = np.where(np.abs(sc) == -slo, slo, sc)
        q = codes((n, 16, 16), lo + 1, hi, lo)
        return ((d * sc) * q).reshape(n, QK_K)
    raise ValueError(qtype)


def check() -> int:
    """Round trips per format through gguf's `dequantize`: NMSE of dequantize(quantize(x)) on real
    rows and how far re-quantizing that moves it; and blocks the format holds exactly, which must
    come back bit for bit. Returns the number of failures."""
    src = GGUFReader(str(common.MODEL))
    by_name = {t.name: t for t in src.tensors}

    def values(name: str) -> np.ndarray:
        t = by_name[name]
        return np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float32)

    # What the files quantize (Q4_1 rows) and near-original weights (the Q8_0 embedding).
    sources = {"blk.5.ffn_down (Q4_1)": (values("blk.5.ffn_down.weight")[:96], values("blk.5.ffn_up.weight")[:256]),
               "token_embd (Q8_0)": (values("token_embd.weight")[:256].reshape(-1, 1536),
                                     values("token_embd.weight")[256:512])}
    rng = np.random.default_rng(7)
    failed = 0
    for qtype in [T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K, T.Q4_0, T.Q5_0, T.Q5_1, T.Q8_0]:
        for label, (wide, narrow) in sources.items():
            x = wide if qtype in QUANTIZERS else narrow
            q = quantize_matrix(x, qtype)
            y = dequantize(q, qtype).reshape(x.shape)
            nmse = float(((y - x).astype(np.float64) ** 2).sum() / (x.astype(np.float64) ** 2).sum())
            q2 = quantize_matrix(y, qtype)
            same = float(np.mean(np.all(q == q2, axis=-1)))
            drift = float(np.abs(dequantize(q2, qtype).reshape(x.shape) - y).max() / np.abs(y).max())
            ok = nmse <= NMSE_BOUND[qtype]
            failed += not ok
            print(f"{qtype.name:7s} {label:22s} {x.shape[0]:4d}x{x.shape[1]}: NMSE {nmse:.2e}; re-quantized: "
                  f"rows unchanged {same:.3f}, max |change| / max |value| {drift:.1e}{'' if ok else '  FAIL'}")
        if qtype in QUANTIZERS:
            x = _exact_blocks(qtype, 512, rng).reshape(-1, QK_K * 4)
            q = quantize_matrix(x, qtype)
            y = dequantize(q, qtype).reshape(x.shape)
            exact = np.array_equal(y, x) and np.array_equal(quantize_matrix(y, qtype), q)
            failed += not exact
            print(f"{qtype.name:7s} {'exact blocks':22s} {x.shape[0]:4d}x{x.shape[1]}: "
                  f"{'back bit for bit' if exact else f'FAIL: {int(np.sum(y != x))} values differ'}")
    return failed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(common.ROOT / "models"))
    ap.add_argument("--check", action="store_true", help="round trip of every format through gguf's dequantize")
    ap.add_argument("types", nargs="*", default=list(MIX_NAMES))
    args = ap.parse_args()
    if args.check:
        sys.exit(1 if check() else 0)
    out_dir = pathlib.Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    src = GGUFReader(str(common.MODEL))
    for mix in args.types:
        dst = output_path(out_dir, mix)
        write_mix(src, mix, dst)
        print(f"wrote {dst} ({dst.stat().st_size} bytes)", flush=True)


if __name__ == "__main__":
    main()
