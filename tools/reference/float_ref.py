"""Independent float64 reference forward pass for llama-architecture GGUF models.

Reads the GGUF with the `gguf` package, dequantizes every tensor with
`gguf.quants.dequantize`, and runs the llama forward pass in numpy float64.
It shares no code with llama.cpp: it is the "what the math says" oracle.

Conventions (match llama.cpp's LLM_ARCH_LLAMA graph):
  * ggml tensor dims are [in, out]; gguf-py reverses them, so a weight array
    here has shape (out, in) and a projection is `h @ W.T`.
  * RoPE "normal" mode: rotate ADJACENT pairs (x[2i], x[2i+1]) of each head
    by angle pos * theta ** (-2i / head_dim). (The GGUF converter permutes
    the HF q/k weights so this is the right pairing for GGUF files.)
  * GQA: query head h reads kv head h // (n_head / n_head_kv).
  * Tied output: logits = norm(x) @ token_embd.T when output.weight is absent.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _field(reader: GGUFReader, key: str):
    return reader.fields[key].contents()


@dataclass
class Layer:
    attn_norm: np.ndarray
    wq: np.ndarray
    wk: np.ndarray
    wv: np.ndarray
    wo: np.ndarray
    ffn_norm: np.ndarray
    w_gate: np.ndarray
    w_up: np.ndarray
    w_down: np.ndarray


@dataclass
class Cache:
    """Per-layer K/V for positions [0, n): arrays of shape (n, n_head_kv, head_dim)."""

    k: list = field(default_factory=list)
    v: list = field(default_factory=list)

    @property
    def n(self) -> int:
        return 0 if not self.k else self.k[0].shape[0]


class FloatLlama:
    def __init__(self, model_path: str):
        r = GGUFReader(model_path)
        arch = _field(r, "general.architecture")
        assert arch == "llama", arch
        self.n_layer = int(_field(r, "llama.block_count"))
        self.n_embd = int(_field(r, "llama.embedding_length"))
        self.n_head = int(_field(r, "llama.attention.head_count"))
        self.n_head_kv = int(_field(r, "llama.attention.head_count_kv"))
        self.head_dim = self.n_embd // self.n_head
        self.rope_theta = float(_field(r, "llama.rope.freq_base"))
        # llama.cpp stores eps as float32; use that exact value.
        self.eps = float(np.float32(_field(r, "llama.attention.layer_norm_rms_epsilon")))
        tensors = {t.name: t for t in r.tensors}

        def get(name: str) -> np.ndarray:
            t = tensors[name]
            return np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float64)

        self.tok_embd = get("token_embd.weight")  # (vocab, n_embd)
        self.n_vocab = self.tok_embd.shape[0]
        self.output = get("output.weight") if "output.weight" in tensors else self.tok_embd
        self.output_norm = get("output_norm.weight")
        self.layers = []
        for i in range(self.n_layer):
            p = f"blk.{i}."
            self.layers.append(
                Layer(
                    attn_norm=get(p + "attn_norm.weight"),
                    wq=get(p + "attn_q.weight"),
                    wk=get(p + "attn_k.weight"),
                    wv=get(p + "attn_v.weight"),
                    wo=get(p + "attn_output.weight"),
                    ffn_norm=get(p + "ffn_norm.weight"),
                    w_gate=get(p + "ffn_gate.weight"),
                    w_up=get(p + "ffn_up.weight"),
                    w_down=get(p + "ffn_down.weight"),
                )
            )
        half = self.head_dim // 2
        self.inv_freq = self.rope_theta ** (-2.0 * np.arange(half, dtype=np.float64) / self.head_dim)

    def rmsnorm(self, x: np.ndarray, w: np.ndarray) -> np.ndarray:
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + self.eps) * w

    def rope(self, x: np.ndarray, pos: np.ndarray) -> np.ndarray:
        """x: (n, heads, head_dim); rotate adjacent pairs (2i, 2i+1)."""
        ang = pos[:, None].astype(np.float64) * self.inv_freq[None, :]  # (n, half)
        c = np.cos(ang)[:, None, :]
        s = np.sin(ang)[:, None, :]
        x0 = x[..., 0::2]
        x1 = x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2] = x0 * c - x1 * s
        out[..., 1::2] = x0 * s + x1 * c
        return out

    def forward(self, tokens, cache: Cache) -> np.ndarray:
        """Appends `tokens` after the cached positions; returns logits (len(tokens), vocab)."""
        tokens = np.asarray(tokens, dtype=np.int64)
        n = len(tokens)
        start = cache.n
        pos = np.arange(start, start + n)
        hd, nh, nkv = self.head_dim, self.n_head, self.n_head_kv
        group = nh // nkv
        x = self.tok_embd[tokens]  # (n, n_embd)
        scale = 1.0 / np.sqrt(hd)
        total = start + n
        # causal mask for the new rows against all keys
        key_pos = np.arange(total)
        mask = np.where(key_pos[None, :] <= pos[:, None], 0.0, -np.inf)  # (n, total)
        for li, L in enumerate(self.layers):
            h = self.rmsnorm(x, L.attn_norm)
            q = (h @ L.wq.T).reshape(n, nh, hd)
            k = (h @ L.wk.T).reshape(n, nkv, hd)
            v = (h @ L.wv.T).reshape(n, nkv, hd)
            q = self.rope(q, pos)
            k = self.rope(k, pos)
            if len(cache.k) <= li:
                cache.k.append(k)
                cache.v.append(v)
            else:
                cache.k[li] = np.concatenate([cache.k[li], k], axis=0)
                cache.v[li] = np.concatenate([cache.v[li], v], axis=0)
            K = cache.k[li]  # (total, nkv, hd)
            V = cache.v[li]
            att_out = np.empty((n, nh, hd))
            for hh in range(nh):
                kv = hh // group
                s = (q[:, hh, :] @ K[:, kv, :].T) * scale + mask  # (n, total)
                s = s - s.max(axis=1, keepdims=True)
                p = np.exp(s)
                p /= p.sum(axis=1, keepdims=True)
                att_out[:, hh, :] = p @ V[:, kv, :]
            x = x + att_out.reshape(n, nh * hd) @ L.wo.T
            h = self.rmsnorm(x, L.ffn_norm)
            g = h @ L.w_gate.T
            u = h @ L.w_up.T
            x = x + ((g / (1.0 + np.exp(-g))) * u) @ L.w_down.T
        x = self.rmsnorm(x, self.output_norm)
        return x @ self.output.T

    def greedy(self, prompt_ids, n_new: int, eos: int | None):
        """Greedy continuation. Returns (tokens, margins): margins[i] = top1 - top2 logit at step i.
        Stops after emitting `eos` (eos is included in tokens)."""
        cache = Cache()
        logits = self.forward(prompt_ids, cache)[-1]
        out, margins = [], []
        for _ in range(n_new):
            top2 = np.argpartition(-logits, 2)[:2]
            a, b = sorted(top2, key=lambda i: -logits[i])
            tok = int(np.argmax(logits))
            out.append(tok)
            margins.append(float(logits[a] - logits[b]))
            if eos is not None and tok == eos:
                break
            logits = self.forward([tok], cache)[-1]
        return out, margins


if __name__ == "__main__":
    import sys

    m = FloatLlama(sys.argv[1])
    ids = json.loads(sys.argv[2])
    toks, margins = m.greedy(ids, 8, eos=2)
    print(toks, [round(x, 3) for x in margins])
