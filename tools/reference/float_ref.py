"""Independent float64 reference forward pass for llama, qwen2, qwen3 and gemma3 GGUF models.

Reads the GGUF with the `gguf` package, dequantizes every tensor with
`gguf.quants.dequantize`, and runs the forward pass in numpy float64.
It shares no code with llama.cpp: it is the "what the math says" oracle.

Architecture differences (as HF transformers and llama.cpp define them):
  * qwen2: biases on q, k, v; NeoX RoPE (pairs (x[i], x[i + head_dim/2])).
  * qwen3: RMSNorm of each q and k head (attn_q_norm / attn_k_norm) before RoPE; NeoX RoPE;
    head_dim from `qwen3.attention.key_length`.
  * gemma3: embeddings * sqrt(n_embd); QK-norm; post-attention and post-FFN RMSNorms before the
    residual adds; gelu-tanh gate; NeoX RoPE; sliding window (`gemma3.attention.sliding_window`)
    on every layer but each 6th, with RoPE base 10000 on the sliding layers; the GGUF stores
    Gemma's (1 + w) norm weights already shifted, so they are used as stored.
  * llama: `llama.rope.scaling.type` linear divides angles by `rope.scaling.factor`;
    `rope_freqs.weight` (Llama 3.1) divides angle i by factor i.

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
    bq: np.ndarray | None = None
    bk: np.ndarray | None = None
    bv: np.ndarray | None = None
    q_norm: np.ndarray | None = None
    k_norm: np.ndarray | None = None
    post_attn_norm: np.ndarray | None = None
    post_ffn_norm: np.ndarray | None = None
    inv_freq: np.ndarray | None = None
    window: int | None = None


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
        assert arch in ("llama", "qwen2", "qwen3", "gemma3"), arch
        self.arch = arch

        def meta(key, default=None):
            return _field(r, f"{arch}.{key}") if f"{arch}.{key}" in r.fields else default

        self.n_layer = int(meta("block_count"))
        self.n_embd = int(meta("embedding_length"))
        self.n_head = int(meta("attention.head_count"))
        self.n_head_kv = int(meta("attention.head_count_kv", self.n_head))
        self.head_dim = int(meta("attention.key_length", self.n_embd // self.n_head))
        self.rope_theta = float(meta("rope.freq_base", 10000.0))
        # llama.cpp stores eps as float32; use that exact value.
        self.eps = float(np.float32(meta("attention.layer_norm_rms_epsilon")))
        self.neox = arch in ("qwen2", "qwen3", "gemma3")
        self.gelu = arch == "gemma3"
        self.embd_scale = np.sqrt(self.n_embd) if arch == "gemma3" else None
        softcap = meta("final_logit_softcapping")
        self.softcap = float(softcap) if softcap is not None else None
        freq_scale = 1.0
        if meta("rope.scaling.type", "none") == "linear":
            freq_scale = 1.0 / float(meta("rope.scaling.factor", 1.0))
        tensors = {t.name: t for t in r.tensors}

        def get(name: str) -> np.ndarray:
            t = tensors[name]
            return np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float64)

        def opt(name: str):
            return get(name) if name in tensors else None

        half = self.head_dim // 2
        base_freq = lambda theta: theta ** (-2.0 * np.arange(half, dtype=np.float64) / self.head_dim)
        factors = opt("rope_freqs.weight")
        global_freq = freq_scale * base_freq(self.rope_theta) / (factors if factors is not None else 1.0)
        sliding = [False] * self.n_layer
        window = None
        if arch == "gemma3":
            window = int(meta("attention.sliding_window", 512))
            sliding = [(i + 1) % 6 != 0 for i in range(self.n_layer)]
        local_freq = base_freq(10000.0)

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
                    bq=opt(p + "attn_q.bias"),
                    bk=opt(p + "attn_k.bias"),
                    bv=opt(p + "attn_v.bias"),
                    q_norm=opt(p + "attn_q_norm.weight"),
                    k_norm=opt(p + "attn_k_norm.weight"),
                    post_attn_norm=opt(p + "post_attention_norm.weight"),
                    post_ffn_norm=opt(p + "post_ffw_norm.weight"),
                    inv_freq=local_freq if sliding[i] else global_freq,
                    window=window if sliding[i] else None,
                )
            )

    def rmsnorm(self, x: np.ndarray, w: np.ndarray) -> np.ndarray:
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + self.eps) * w

    def rope(self, x: np.ndarray, pos: np.ndarray, inv_freq: np.ndarray) -> np.ndarray:
        """x: (n, heads, head_dim); rotate adjacent pairs (2i, 2i+1), or (i, i + half) for NeoX."""
        ang = pos[:, None].astype(np.float64) * inv_freq[None, :]  # (n, half)
        c = np.cos(ang)[:, None, :]
        s = np.sin(ang)[:, None, :]
        half = x.shape[-1] // 2
        if self.neox:
            x0, x1 = x[..., :half], x[..., half:]
        else:
            x0, x1 = x[..., 0::2], x[..., 1::2]
        out = np.empty_like(x)
        if self.neox:
            out[..., :half] = x0 * c - x1 * s
            out[..., half:] = x0 * s + x1 * c
        else:
            out[..., 0::2] = x0 * c - x1 * s
            out[..., 1::2] = x0 * s + x1 * c
        return out

    def forward(self, tokens, cache: Cache, logit_rows=None) -> np.ndarray:
        """Appends `tokens` after the cached positions; returns logits (len(tokens), vocab), or
        only those of the rows listed in `logit_rows` (in that order)."""
        tokens = np.asarray(tokens, dtype=np.int64)
        n = len(tokens)
        start = cache.n
        pos = np.arange(start, start + n)
        hd, nh, nkv = self.head_dim, self.n_head, self.n_head_kv
        group = nh // nkv
        x = self.tok_embd[tokens]  # (n, n_embd)
        if self.embd_scale is not None:
            x = x * self.embd_scale
        scale = 1.0 / np.sqrt(hd)
        total = start + n
        key_pos = np.arange(total)
        for li, L in enumerate(self.layers):
            # causal mask for the new rows against all keys (and the window on sliding layers)
            allowed = key_pos[None, :] <= pos[:, None]
            if L.window is not None:
                allowed &= pos[:, None] - key_pos[None, :] < L.window
            mask = np.where(allowed, 0.0, -np.inf)  # (n, total)
            h = self.rmsnorm(x, L.attn_norm)
            q, k, v = h @ L.wq.T, h @ L.wk.T, h @ L.wv.T
            if L.bq is not None:
                q, k, v = q + L.bq, k + L.bk, v + L.bv
            q, k, v = q.reshape(n, nh, hd), k.reshape(n, nkv, hd), v.reshape(n, nkv, hd)
            if L.q_norm is not None:
                q, k = self.rmsnorm(q, L.q_norm), self.rmsnorm(k, L.k_norm)
            q = self.rope(q, pos, L.inv_freq)
            k = self.rope(k, pos, L.inv_freq)
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
            o = att_out.reshape(n, nh * hd) @ L.wo.T
            if L.post_attn_norm is not None:
                o = self.rmsnorm(o, L.post_attn_norm)
            x = x + o
            h = self.rmsnorm(x, L.ffn_norm)
            g = h @ L.w_gate.T
            u = h @ L.w_up.T
            if self.gelu:
                act = 0.5 * g * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (g + 0.044715 * g**3)))
            else:
                act = g / (1.0 + np.exp(-g))
            f = (act * u) @ L.w_down.T
            if L.post_ffn_norm is not None:
                f = self.rmsnorm(f, L.post_ffn_norm)
            x = x + f
        if logit_rows is not None:
            x = x[list(logit_rows)]
        x = self.rmsnorm(x, self.output_norm)
        logits = x @ self.output.T
        if self.softcap is not None:
            logits = self.softcap * np.tanh(logits / self.softcap)
        return logits

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
