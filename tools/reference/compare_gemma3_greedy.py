"""Greedy Gemma 3 outputs of a running CastServe against llama.cpp's (Tests/Fixtures/gemma3_greedy_llamacpp.json,
made by `gen_gemma3.py greedy`): each bench prompt's llama.cpp token ids (BOS included) go to
/v1/completions as a token-id prompt, greedy, 32 tokens at most, speculation off; the reply text is
compared with llama.cpp's ids detokenized by the same server.

Usage: cast-serve serve --model models/gemma-3-270m-q4_k_m.gguf --port 18600 &
       python3 tools/reference/compare_gemma3_greedy.py [--url http://127.0.0.1:18600]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import urllib.request

FIXTURE = pathlib.Path(__file__).resolve().parents[2] / "Tests/Fixtures/gemma3_greedy_llamacpp.json"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default="http://127.0.0.1:18600")
    args = ap.parse_args()

    def post(path: str, body: dict) -> dict:
        req = urllib.request.Request(args.url + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=300) as r:
            return json.load(r)

    same = 0
    cases = json.loads(FIXTURE.read_text())
    for e in cases:
        out = post("/v1/completions", {"model": "default", "prompt": e["prompt_ids"], "max_tokens": 32,
                                       "temperature": 0, "speculation": False})
        ours = out["choices"][0]["text"]
        theirs = post("/detokenize", {"tokens": e["greedy"]})["content"]
        if ours == theirs:
            same += 1
        else:
            n = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), min(len(ours), len(theirs)))
            print(f"{e['name']}: differ after {n} characters: {ours[n:n + 30]!r} | {theirs[n:n + 30]!r}")
    print(f"{same}/{len(cases)} prompts: greedy text identical to llama.cpp's (32 tokens at most)")


if __name__ == "__main__":
    main()
