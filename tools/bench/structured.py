#!/usr/bin/env python3
"""Decode overhead of constrained decoding, measured over HTTP against a running cast-serve.

For each round and prompt, one streamed chat request with a json_schema response_format and one
without it (same prompt, greedy); decode speed of a request = (completion tokens - 1) / (time of
its last content chunk - time of its first). Prints the median decode tok/s of both kinds, the
overhead, the first (cold: the grammar's masks are computed) against later requests, and, when
the server speculates, the forced-run drafts from usage.speculation.

    python3 tools/bench/structured.py --url http://127.0.0.1:8080 --rounds 3
"""

import argparse
import json
import statistics
import time
import urllib.request

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 40},
        "age": {"type": "integer"},
        "city": {"type": "string", "maxLength": 40},
        "hobbies": {"type": "array", "items": {"type": "string", "maxLength": 30}, "maxItems": 3},
        "role": {"enum": ["admin", "user", "guest"]},
        "verified": {"type": "boolean"},
    },
    "required": ["name", "age", "city", "hobbies", "role", "verified"],
    "additionalProperties": False,
}
PROMPTS = ["Describe a fictional person.", "Tell me about your best friend.", "Invent a character for a novel.",
           "Who is the most interesting person you know?"]


def stream(url, body):
    req = urllib.request.Request(url + "/v1/chat/completions", json.dumps(body).encode(), {"Content-Type": "application/json"})
    first = last = None
    usage = None
    with urllib.request.urlopen(req, timeout=300) as r:
        for line in r:
            line = line.strip()
            if not line.startswith(b"data: ") or line == b"data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                usage = chunk["usage"]
            for c in chunk.get("choices", []):
                if c["delta"].get("content"):
                    now = time.perf_counter()
                    first = first or now
                    last = now
    tokens = usage["completion_tokens"]
    rate = (tokens - 1) / (last - first) if last and last > first else float("nan")
    return rate, tokens, usage


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default="http://127.0.0.1:8080")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=96)
    args = ap.parse_args()
    base = {"model": "default", "temperature": 0, "max_tokens": args.max_tokens, "stream": True,
            "stream_options": {"include_usage": True}}
    constrained, free, cold = [], [], []
    forced_drafted = forced_accepted = drafted = accepted = 0
    schema = dict(SCHEMA, title=f"bench-{time.time()}")  # a new schema text: its first request is cold
    for r in range(args.rounds):
        for i, p in enumerate(PROMPTS):
            msgs = [{"role": "user", "content": p}]
            rate, n, usage = stream(args.url, dict(base, messages=msgs,
                                                   response_format={"type": "json_schema", "json_schema": {"name": "p", "schema": schema}}))
            (cold if r == 0 and i == 0 else constrained).append(rate)
            spec = usage.get("speculation") or {}
            forced_drafted += spec.get("forced_drafted_tokens", 0)
            forced_accepted += spec.get("forced_accepted_tokens", 0)
            drafted += spec.get("drafted_tokens", 0)
            accepted += spec.get("accepted_tokens", 0)
            rate, n, _ = stream(args.url, dict(base, messages=msgs))
            free.append(rate)
    c, f = statistics.median(constrained), statistics.median(free)
    print(f"decode tok/s, median over {len(constrained)} json_schema / {len(free)} free requests: "
          f"{c:.1f} / {f:.1f} -> overhead {100 * (f / c - 1):.1f}% (time per token)")
    print(f"first json_schema request (cold grammar: masks computed): {cold[0]:.1f} tok/s")
    if drafted:
        print(f"speculation: {accepted}/{drafted} draft tokens accepted, of them forced by the grammar "
              f"{forced_accepted}/{forced_drafted}")


if __name__ == "__main__":
    main()
