"""Writes Tests/Fixtures/tokenizer.json: llama.cpp's token ids for the bench prompts and hard strings.

Needs the llama-cpp-python bindings (see README.md). Schema: a JSON list of
  {"name": str, "text": str, "special": bool, "ids": [int]}
tokenized with add_bos=False; `special` is the parse_special flag (True: "<|im_start|>" etc.
become their special token ids; False: they are tokenized as plain text).
"""

from __future__ import annotations

import llama_cpp

import common
from texts import HARD_STRINGS, LOGITS_PLAIN, NON_SPECIAL_STRINGS


def main() -> None:
    llm = llama_cpp.Llama(str(common.MODEL), vocab_only=True, verbose=False)
    template = common.chat_template()
    cases: list[tuple[str, str, bool]] = []
    for row in common.load_prompts():
        cases.append((row["id"], common.render_prompt(row, template), True))
    cases += [(n, t, True) for n, t in HARD_STRINGS]
    cases += [(n, t, True) for n, t in LOGITS_PLAIN]
    cases += [(n, t, False) for n, t in NON_SPECIAL_STRINGS]
    names = [c[0] for c in cases]
    assert len(set(names)) == len(names), "duplicate case names"
    out = []
    for name, text, special in cases:
        ids = llm.tokenize(text.encode("utf-8"), add_bos=False, special=special)
        out.append({"name": name, "text": text, "special": special, "ids": list(map(int, ids))})
    common.write_json(common.FIXTURES / "tokenizer.json", out)
    print(f"wrote {len(out)} cases, {sum(len(c['ids']) for c in out)} tokens")


if __name__ == "__main__":
    main()
