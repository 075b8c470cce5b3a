"""Writes Tests/Fixtures/greedy_llamacpp.json: llama.cpp's greedy continuations of the 56 bench prompts.

Needs the llama-cpp-python bindings (see README.md). Greedy = argmax of llama.cpp's last-row
logits at every step (no sampler chain), n_ctx 2048, n_threads 2, default KV-cache types.
Generation stops after 32 tokens or right after EOS (the EOS id is included in `tokens`).
"""

from __future__ import annotations

import ctypes
import time

import numpy as np
import llama_cpp

import common

N_NEW = 32
N_CTX = 2048
N_THREADS = 2


def last_logits(llm: llama_cpp.Llama) -> np.ndarray:
    ptr = llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1)
    return np.ctypeslib.as_array(ptr, shape=(llm.n_vocab(),)).astype(np.float64).copy()


def main() -> None:
    llm = llama_cpp.Llama(
        str(common.MODEL),
        n_ctx=N_CTX,
        n_threads=N_THREADS,
        n_threads_batch=N_THREADS,
        n_batch=512,
        logits_all=False,
        verbose=False,
    )
    template = common.chat_template()
    rows = []
    t0 = time.time()
    for row in common.load_prompts():
        text = common.render_prompt(row, template)
        ids = llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        llm.reset()
        llm._ctx.kv_cache_clear()
        llm.eval(ids)
        toks, margins = [], []
        for _ in range(N_NEW):
            logits = last_logits(llm)
            order = np.argsort(-logits, kind="stable")
            tok = int(order[0])
            toks.append(tok)
            margins.append(round(float(logits[order[0]] - logits[order[1]]), 5))
            if tok == common.EOS:
                break
            llm.eval([tok])
        rows.append(
            {
                "id": row["id"],
                "category": row["category"],
                "prompt_ids": list(map(int, ids)),
                "tokens": toks,
                "margins": margins,
                "stopped_at_eos": toks[-1] == common.EOS,
                "text": llm.detokenize(toks, special=True).decode("utf-8", errors="replace"),
            }
        )
        print(row["id"], len(ids), repr(rows[-1]["text"][:60]), flush=True)
    meta = {
        "generator": "tools/reference/gen_greedy_llamacpp.py",
        "model_sha256": common.MODEL_SHA256,
        "n_new": N_NEW,
        "n_ctx": N_CTX,
        "n_threads": N_THREADS,
        "eos": common.EOS,
        "greedy": "argmax of llama.cpp logits (ties: lowest id); stop after eos (included)",
        "margins": "per step, top1 logit minus top2 logit from llama.cpp (float32 logits)",
        **common.llama_cpp_versions(),
    }
    common.write_json(common.FIXTURES / "greedy_llamacpp.json", {"meta": meta, "prompts": rows})
    print(f"done in {time.time() - t0:.1f}s")


if __name__ == "__main__":
    main()
