"""Gemma 3 270M fixtures (models/gemma-3-270m-q4_k_m.gguf, `make gemma3-model`).

  python3 tools/reference/gen_gemma3.py logits      -> Tests/Fixtures/gemma3_logits.json
  python3 tools/reference/gen_gemma3.py tokenizer   -> Tests/Fixtures/gemma3_tokenizer.json (llama_cpp)
  python3 tools/reference/gen_gemma3.py greedy      -> Tests/Fixtures/gemma3_greedy_llamacpp.json (llama_cpp)

logits: the float64 reference (float_ref.FloatLlama: weights dequantized by `gguf`) at chosen
positions of a few prompts, one of them past 600 tokens so the 512-position sliding window cuts
in. Schema as logits_reference.json: per position the argmax, the top-2 margin, the top 20
(id, logit) and the logits of fixed probe ids. Prompt ids come from the tokenizer fixture
(llama.cpp's) when it exists, else from the environment variable GEMMA3_IDS_JSON.
Set CASTSERVE_GEMMA3_MODEL to run on another file (e.g. a requantized copy) and GEMMA3_OUT to
write elsewhere.
"""

from __future__ import annotations

import json
import os
import pathlib
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
import common  # noqa: E402
from float_ref import Cache, FloatLlama, sha256_file  # noqa: E402
from texts import HARD_STRINGS, LOGITS_PLAIN  # noqa: E402

MODEL = pathlib.Path(os.environ.get("CASTSERVE_GEMMA3_MODEL", common.ROOT / "models" / "gemma-3-270m-q4_k_m.gguf"))
SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
FIX = common.FIXTURES

GEMMA_STRINGS = [
    ("gemma-turns", "<start_of_turn>user\nHi there!<end_of_turn>\n<start_of_turn>model\n"),
    ("gemma-special-mid", "a<start_of_turn>b<end_of_turn>c<bos><eos><pad>"),
    ("gemma-lookalike", "<start_of_turn <end_of_turn> <START_OF_TURN> <start_of_turnx>"),
    ("gemma-bytes-fallback", "\u0000\u0001\u0002 \U0001F9EC \U00010348 \uE000 \u0378"),
]


def render_gemma(messages: list[dict]) -> str:
    """The Gemma 3 turn format (BuiltInTemplates.gemma3 without its BOS: the tokenizer adds it)."""
    prefix = ""
    if messages and messages[0]["role"] == "system":
        prefix = messages[0]["content"] + "\n\n"
        messages = messages[1:]
    out = ""
    for i, m in enumerate(messages):
        role = "model" if m["role"] == "assistant" else m["role"]
        out += "<start_of_turn>" + role + "\n" + (prefix if i == 0 else "") + m["content"].strip() + "<end_of_turn>\n"
    return out + "<start_of_turn>model\n"


def tokenizer_cases() -> list[tuple[str, str, bool]]:
    cases = []
    for row in common.load_prompts():
        text = render_gemma(row["messages"]) if "messages" in row else row["prompt"]
        cases.append((row["id"], text, True))
    cases += [(n, t, True) for n, t in HARD_STRINGS + LOGITS_PLAIN + GEMMA_STRINGS]
    cases += [("ns-" + n, t, False) for n, t in GEMMA_STRINGS[:2]]
    return cases


def gen_tokenizer() -> None:
    import llama_cpp

    llm = llama_cpp.Llama(str(MODEL), vocab_only=True, verbose=False)
    out = []
    for name, text, special in tokenizer_cases():
        ids = llm.tokenize(text.encode("utf-8"), add_bos=False, special=special)
        out.append({"name": name, "text": text, "special": special, "ids": list(map(int, ids))})
    common.write_json(FIX / "gemma3_tokenizer.json", out)
    print(f"wrote {len(out)} cases, {sum(len(c['ids']) for c in out)} tokens")


def prompt_ids() -> dict[str, list[int]]:
    path = os.environ.get("GEMMA3_IDS_JSON", FIX / "gemma3_tokenizer.json")
    cases = {c["name"]: c["ids"] for c in json.load(open(path))}
    bos = 2
    ids = {
        "chat-1": [bos] + cases["chat-1"],
        "logits-plain-code": [bos] + cases["logits-plain-code"],
        "cjk": [bos] + cases["cjk"],
    }
    long = [bos] + cases["logits-plain-long"] + cases["python-code"] + cases["logits-plain-long"] + cases["markdown"]
    long += cases["logits-plain-long"]
    ids["long-sliding"] = long[:640]
    return ids


def gen_logits() -> None:
    model = FloatLlama(str(MODEL))
    rng = np.random.default_rng(3)
    probe = sorted(int(x) for x in rng.choice(model.n_vocab, 64, replace=False))
    prompts = []
    for name, ids in prompt_ids().items():
        n = len(ids)
        positions = sorted({n - 1, n - 2, n // 2, 1} if n < 512 else {100, 511, 512, 520, 600, n - 1})
        logits = model.forward(ids, Cache(), logit_rows=positions)
        rows = []
        for pos, lg in zip(positions, logits):
            top = np.argsort(-lg)[:20]
            rows.append({
                "pos": pos, "argmax": int(top[0]), "margin": float(lg[top[0]] - lg[top[1]]),
                "top20": [[int(t), float(lg[t])] for t in top],
                "probe_logits": [float(lg[t]) for t in probe],
            })
        prompts.append({"name": name, "ids": ids, "positions": rows})
        print(name, n, "tokens", file=sys.stderr)
    out = {"model_sha256": sha256_file(str(MODEL)),
           "probe_ids": probe, "prompts": prompts}
    dest = os.environ.get("GEMMA3_OUT", FIX / "gemma3_logits.json")
    common.write_json(pathlib.Path(dest), out)


def gen_greedy() -> None:
    import llama_cpp

    llm = llama_cpp.Llama(str(MODEL), n_ctx=1024, n_threads=2, verbose=False, logits_all=False)
    cases = {c["name"]: c["ids"] for c in json.load(open(FIX / "gemma3_tokenizer.json"))}
    out = []
    for row in common.load_prompts():
        ids = [2] + cases[row["id"]]
        llm.reset()
        toks = []
        for t in llm.generate(ids, temp=0.0, top_k=1, reset=True):
            if t in (1, 106) or len(toks) >= 32:
                break
            toks.append(int(t))
        out.append({"name": row["id"], "prompt_ids": ids, "greedy": toks})
    common.write_json(FIX / "gemma3_greedy_llamacpp.json", out)


if __name__ == "__main__":
    {"logits": gen_logits, "tokenizer": gen_tokenizer, "greedy": gen_greedy}[sys.argv[1]]()
