"""Tiny synthetic GGUF models for the architectures without a small real model offline, and their
float64 reference logits.

Writes Tests/Fixtures/synthetic/<name>.gguf (random weights: matrices Q8_0, norms and biases F32,
a 256-entry vocabulary of placeholder tokens) and Tests/Fixtures/synthetic_logits.json: for each
model, a random token sequence and the reference logits (float_ref.FloatLlama on the same file,
so the weights are exactly the engine's) at every position.

Models:
  qwen2        Q/K/V biases, NeoX RoPE, GQA 4/2
  qwen3        QK-norm, NeoX RoPE, key_length 32 != embedding / heads (16)
  llama3_rope  llama with rope_freqs.weight (Llama 3 style factors) and linear rope scaling 2
  gemma3_swa   gemma3 with sliding window 5 on layers 0-4 (layer 5 global), local RoPE base 10000,
               global base 1e6, post-norms, gelu-tanh, embedding scale, final logit softcap 30
  qwen3_chat   qwen3 as above with a byte-level tokenizer (the 256 GPT-2 byte tokens, one merge "\n\n")
               plus Qwen3's special tokens (<|im_start|>, <|im_end|>, <think>, </think>, ...) and the
               real Qwen3 chat template (Tests/Fixtures/qwen3_chat_template.jinja), so the server can
               serve it: the reasoning tests (tests/test_reasoning.py). Drawn from its own seed, after
               the others, so their files are unchanged; no reference logits.
Run from the repository root: python3 tools/reference/gen_synthetic.py
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
from gguf import GGMLQuantizationType, GGUFWriter
from gguf.quants import quantize

sys.path.insert(0, os.path.dirname(__file__))
from float_ref import Cache, FloatLlama  # noqa: E402

OUT = "Tests/Fixtures/synthetic"
VOCAB = 256
SEQ = 24


def byte_tokens() -> list[str]:
    """GPT-2's byte-to-unicode alphabet: token i is byte i as byte-level BPE spells it."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    chars = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in chars:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


# Qwen3's special tokens and their GGUF token types (3 control, 4 user-defined: written as text).
CHAT_SPECIALS = [("<|endoftext|>", 3), ("<|im_start|>", 3), ("<|im_end|>", 3), ("<think>", 4), ("</think>", 4),
                 ("<tool_call>", 4), ("</tool_call>", 4), ("<tool_response>", 4), ("</tool_response>", 4)]


# One merge (a llama-family GGUF needs a merge list): "\n\n", which Qwen3's template writes after </think>.
CHAT_MERGES = [("Ċ", "Ċ")]


def write(name: str, arch: str, cfg: dict, rng: np.random.Generator, chat: bool = False) -> str:
    e, f, nh, nkv, hd, layers = cfg["e"], cfg["f"], cfg["nh"], cfg["nkv"], cfg["hd"], cfg["layers"]
    vocab = 256 + len(CHAT_MERGES) + len(CHAT_SPECIALS) if chat else VOCAB
    path = f"{OUT}/{name}.gguf"
    w = GGUFWriter(path, arch)
    w.add_string("general.name", f"synthetic {name}")
    w.add_uint32(f"{arch}.block_count", layers)
    w.add_uint32(f"{arch}.context_length", 256)
    w.add_uint32(f"{arch}.embedding_length", e)
    w.add_uint32(f"{arch}.feed_forward_length", f)
    w.add_uint32(f"{arch}.attention.head_count", nh)
    w.add_uint32(f"{arch}.attention.head_count_kv", nkv)
    w.add_float32(f"{arch}.attention.layer_norm_rms_epsilon", 1e-6)
    w.add_float32(f"{arch}.rope.freq_base", cfg.get("theta", 10000.0))
    if hd != e // nh:
        w.add_uint32(f"{arch}.attention.key_length", hd)
        w.add_uint32(f"{arch}.attention.value_length", hd)
    for k, v in cfg.get("extra", {}).items():
        if isinstance(v, str):
            w.add_string(f"{arch}.{k}", v)
        elif isinstance(v, float):
            w.add_float32(f"{arch}.{k}", v)
        else:
            w.add_uint32(f"{arch}.{k}", v)
    w.add_string("tokenizer.ggml.model", "gpt2")
    if chat:
        w.add_string("tokenizer.ggml.pre", "qwen2")
        merged = [a + b for a, b in CHAT_MERGES]
        w.add_array("tokenizer.ggml.tokens", byte_tokens() + merged + [t for t, _ in CHAT_SPECIALS])
        w.add_array("tokenizer.ggml.token_type", [1] * (256 + len(merged)) + [k for _, k in CHAT_SPECIALS])
        w.add_array("tokenizer.ggml.merges", [f"{a} {b}" for a, b in CHAT_MERGES])
        names = [t for t, _ in CHAT_SPECIALS]
        first = 256 + len(merged)
        w.add_uint32("tokenizer.ggml.eos_token_id", first + names.index("<|im_end|>"))
        w.add_uint32("tokenizer.ggml.padding_token_id", first + names.index("<|endoftext|>"))
        w.add_bool("tokenizer.ggml.add_bos_token", False)
        with open("Tests/Fixtures/qwen3_chat_template.jinja", encoding="utf-8") as fh:
            w.add_string("tokenizer.chat_template", fh.read())
    else:
        w.add_string("tokenizer.ggml.pre", "gpt2")
        w.add_array("tokenizer.ggml.tokens", [f"<t{i}>" for i in range(VOCAB)])
        w.add_array("tokenizer.ggml.merges", [])

    def mat(nm: str, out_f: int, in_f: int):
        a = (rng.standard_normal((out_f, in_f)) / np.sqrt(in_f)).astype(np.float32)
        if os.environ.get("SYNTHETIC_F32"):  # exact-weights check of the forward pass (not committed)
            w.add_tensor(nm, a)
            return
        q = quantize(a, GGMLQuantizationType.Q8_0)
        w.add_tensor(nm, q, raw_shape=q.shape, raw_dtype=GGMLQuantizationType.Q8_0)

    def vec(nm: str, n: int, center: float = 1.0, spread: float = 0.2):
        w.add_tensor(nm, (center + spread * rng.standard_normal(n)).astype(np.float32))

    mat("token_embd.weight", vocab, e)
    vec("output_norm.weight", e)
    if cfg.get("untied"):
        mat("output.weight", vocab, e)
    if cfg.get("rope_freqs"):
        half = hd // 2
        w.add_tensor("rope_freqs.weight", np.linspace(1.0, 8.0, half).astype(np.float32))
    for i in range(layers):
        p = f"blk.{i}."
        vec(p + "attn_norm.weight", e)
        mat(p + "attn_q.weight", nh * hd, e)
        mat(p + "attn_k.weight", nkv * hd, e)
        mat(p + "attn_v.weight", nkv * hd, e)
        mat(p + "attn_output.weight", e, nh * hd)
        vec(p + "ffn_norm.weight", e)
        mat(p + "ffn_gate.weight", f, e)
        mat(p + "ffn_up.weight", f, e)
        mat(p + "ffn_down.weight", e, f)
        if cfg.get("bias"):
            vec(p + "attn_q.bias", nh * hd, 0.0, 0.5)
            vec(p + "attn_k.bias", nkv * hd, 0.0, 0.5)
            vec(p + "attn_v.bias", nkv * hd, 0.0, 0.5)
        if cfg.get("qk_norm"):
            vec(p + "attn_q_norm.weight", hd)
            vec(p + "attn_k_norm.weight", hd)
        if cfg.get("post_norms"):
            vec(p + "post_attention_norm.weight", e)
            vec(p + "post_ffw_norm.weight", e)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


MODELS = {
    "qwen2": ("qwen2", dict(e=64, f=128, nh=4, nkv=2, hd=16, layers=2, bias=True, theta=1e6, untied=True)),
    "qwen3": ("qwen3", dict(e=64, f=128, nh=4, nkv=2, hd=32, layers=2, qk_norm=True, theta=1e6)),
    "llama3_rope": ("llama", dict(e=64, f=128, nh=4, nkv=2, hd=16, layers=2, rope_freqs=True, theta=5e5,
                                  extra={"rope.scaling.type": "linear", "rope.scaling.factor": 2.0})),
    "gemma3_swa": ("gemma3", dict(e=64, f=128, nh=2, nkv=1, hd=32, layers=6, qk_norm=True, post_norms=True, theta=1e6,
                                  extra={"attention.sliding_window": 5, "final_logit_softcapping": 30.0})),
}


def main() -> None:
    # --models-only: write the GGUFs alone (what `make test` does; they are generated, not
    # committed); the random stream is drawn exactly as for the full run, so the files are the
    # ones synthetic_logits.json was computed from (the Makefile checks their sha256 against
    # MANIFEST.json).
    models_only = "--models-only" in sys.argv[1:]
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.default_rng(20261203)
    fixture = {"note": "float64 reference logits of tools/reference/gen_synthetic.py's tiny models", "models": {}}
    for name, (arch, cfg) in MODELS.items():
        path = write(name, arch, cfg, rng)
        tokens = [int(t) for t in rng.integers(0, VOCAB, SEQ)]
        print(name, os.path.getsize(path), "bytes", file=sys.stderr)
        if models_only:
            continue
        logits = FloatLlama(path).forward(tokens, Cache())
        fixture["models"][name] = {
            "file": os.path.basename(path),
            "architecture": arch,
            "tokens": tokens,
            "logits": [[round(float(x), 5) for x in row] for row in logits],
        }
    # The chat model: its own seed, so the models above are drawn exactly as before.
    arch, cfg = MODELS["qwen3"]
    path = write("qwen3_chat", arch, cfg, np.random.default_rng(20261207), chat=True)
    print("qwen3_chat", os.path.getsize(path), "bytes", file=sys.stderr)
    if models_only:
        return
    with open("Tests/Fixtures/synthetic_logits.json", "w") as fh:
        json.dump(fixture, fh, separators=(",", ":"))


if __name__ == "__main__":
    main()
