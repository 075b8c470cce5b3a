#!/usr/bin/env python3
"""Two models in one cast-serve process against a server of each alone, in one run on this host.

1. A single-model server of each model: C concurrent streaming greedy requests over the workload
   (tools/bench/load.py's requests) -> completion tok/s and TTFT p50/p95.
2. One server with both (the first is the default, the second comes from --models-dir): the time
   the second model's load takes (first request, and the server's own `load_seconds`), then C
   concurrent requests to each model at once -> aggregate tok/s and TTFT per model.
3. Sharing the cores: a stream of model A alone, and while model B prefills a long prompt (steps
   of the two models take turns; B's prefill is cut into short chunks while A decodes): A's tokens
   per second and the gaps between its chunks.

Prints a Markdown summary; --json writes everything. Standard library only.
"""

import argparse
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import load  # noqa: E402  (the same requests and percentiles as the load tool)

ROOT = load.ROOT


def start(binary, models_args, slots, context, threads, extra_env=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CASTSERVE_")}
    env.update({"CASTSERVE_THREADS": str(threads), "CASTSERVE_CONTEXT_LENGTH": str(context)})
    env.update(extra_env or {})
    log = tempfile.NamedTemporaryFile(prefix="castserve-multimodel-", suffix=".log", delete=False)
    proc = subprocess.Popen([binary, "serve", "--port", "0", "--slots", str(slots)] + models_args, cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL)
    line = proc.stdout.readline().decode()
    if not line.startswith("listening on http://127.0.0.1:"):
        proc.kill()
        raise SystemExit(f"cast-serve did not start: {line!r}; log {log.name}")
    port = int(line.rsplit(":", 1)[1])
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return proc, port, log.name
        except OSError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"cast-serve was not ready in 600 s; log {log.name}")


def stop(proc):
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


def run_level(port, jobs, concurrency, timeout):
    """Runs (model, row) jobs with `concurrency` workers per model; returns the per-request records and wall time."""
    by_model = {}
    for model, row in jobs:
        by_model.setdefault(model, []).append(row)
    records = []
    lock = threading.Lock()

    def worker(model, rows):
        while True:
            with lock:
                if not rows:
                    return
                row = rows.pop(0)
            path, body = load.request_body(row, model, max_tokens_cap=ARGS.max_tokens)
            rec = load.run_request("127.0.0.1", port, path, body, timeout)
            rec["model"] = model
            with lock:
                records.append(rec)

    threads = [threading.Thread(target=worker, args=(m, rows)) for m, rows in by_model.items() for _ in range(concurrency)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return records, time.monotonic() - t0


def summary(records, wall):
    ok = [r for r in records if r["ok"]]
    ttft = [r["ttft_s"] for r in ok if r["ttft_s"] is not None]
    return {"requests": len(records), "errors": len(records) - len(ok), "completion_tokens": sum(r["completion_tokens"] for r in ok),
            "tokens_per_second": sum(r["completion_tokens"] for r in ok) / wall, "wall_s": wall,
            "ttft_p50_s": load.percentile(ttft, 50), "ttft_p95_s": load.percentile(ttft, 95)}


def stream_times(port, model, prompt, max_tokens):
    """Arrival times of the content chunks of one streaming greedy completion."""
    body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": True}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    conn.request("POST", "/v1/completions", body=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    times = []
    for line in r:
        line = line.strip()
        if line.startswith(b"data: {"):
            chunk = json.loads(line[6:])
            if chunk["choices"] and chunk["choices"][0].get("text"):
                times.append(time.monotonic())
    return times


def itl(times):
    """Gaps between content chunks (a speculative step sends several tokens at once, so the median
    gap is tiny: the p95 and largest gaps and the tokens per second over the span tell more)."""
    gaps = [(b - a) * 1000 for a, b in zip(times, times[1:])]
    return {"tokens": len(times), "tokens_per_second": (len(times) - 1) / (times[-1] - times[0]),
            "median_ms": statistics.median(gaps), "p95_ms": load.percentile(gaps, 95), "max_ms": max(gaps)}


def main():
    global ARGS
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="models/SmolLM2-135M-Instruct.Q4_1.gguf,models/gemma-3-270m-q4_k_m.gguf",
                   help="two GGUF files, comma-separated (the first is the default model)")
    p.add_argument("--castserve-bin", default=os.environ.get("CASTSERVE_BIN", os.path.join(ROOT, ".build", "release", "cast-serve")))
    p.add_argument("--prompts", default=load.DEFAULT_PROMPTS)
    p.add_argument("--categories", default="chat")
    p.add_argument("--limit", type=int, default=8, help="workload rows per model (default 8)")
    p.add_argument("--concurrency", type=int, default=4, help="concurrent requests per model (default 4)")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--slots", type=int, default=8)
    p.add_argument("--context-length", type=int, default=2048)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--prefill-tokens", type=int, default=1500, help="about this many prompt tokens for the long prefill (default 1500)")
    p.add_argument("--json", dest="json_out")
    ARGS = p.parse_args()
    paths = [os.path.join(ROOT, m) if not os.path.isabs(m) else m for m in ARGS.models.split(",")]
    ids = [os.path.basename(m)[:-len(".gguf")] for m in paths]
    rows = load.load_prompts(ARGS.prompts, limit=ARGS.limit, categories=ARGS.categories.split(","))
    serve = lambda args: start(ARGS.castserve_bin, args, ARGS.slots, ARGS.context_length, ARGS.threads)
    result = {"host": os.uname().nodename, "cpus": os.cpu_count(), "settings": vars(ARGS)}

    # 1. Each model alone.
    for path, model in zip(paths, ids):
        proc, port, _ = serve(["--model", path])
        try:
            records, wall = run_level(port, [(model, r) for r in rows], ARGS.concurrency, 300)
            result[f"single {model}"] = summary(records, wall)
        finally:
            stop(proc)

    # 2. Both in one process: the load, then both under load.
    directory = tempfile.mkdtemp(prefix="castserve-multimodel-")
    os.symlink(paths[1], os.path.join(directory, os.path.basename(paths[1])))
    proc, port, log = serve(["--model", paths[0], "--models-dir", directory])
    try:
        t0 = time.monotonic()
        first = load.run_request("127.0.0.1", port, *load.request_body(rows[0], ids[1], max_tokens_cap=1), 600)
        first_s = time.monotonic() - t0
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/v1/models")
        listed = {m["id"]: m for m in json.loads(conn.getresponse().read())["data"]}
        result["load"] = {"model": ids[1], "first_request_s": first_s, "ok": first["ok"], "load_seconds": listed[ids[1]]["load_seconds"],
                          "memory_bytes": listed[ids[1]]["memory_bytes"]}
        records, wall = run_level(port, [(m, r) for m in ids for r in rows], ARGS.concurrency, 300)
        result["both"] = summary(records, wall)
        for model in ids:
            result[f"both {model}"] = summary([r for r in records if r["model"] == model], wall)

        # 3. Model A's inter-token latency alone, then while model B prefills a long prompt.
        prompt = "The history of the city is long and full of events. " * (ARGS.prefill_tokens // 12)
        result["itl alone"] = itl(stream_times(port, ids[0], "Once upon a time", 96))
        times = []
        reader = threading.Thread(target=lambda: times.extend(stream_times(port, ids[0], "Once upon a time", 96)))
        reader.start()
        time.sleep(0.3)
        t_prefill = time.monotonic()
        body = {"model": ids[1], "prompt": prompt, "max_tokens": 1, "temperature": 0}
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        conn.request("POST", "/v1/completions", body=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
        prefill = json.loads(conn.getresponse().read())
        t_done = time.monotonic()
        reader.join()
        during = [t for t in times if t_prefill <= t <= t_done]
        result["prefill"] = {"prompt_tokens": prefill.get("usage", {}).get("prompt_tokens"), "seconds": t_done - t_prefill}
        result["itl during prefill"] = itl(during) if len(during) > 2 else {"tokens": len(during)}
    finally:
        stop(proc)
        shutil.rmtree(directory, ignore_errors=True)

    print(f"host {result['host']}, {result['cpus']} CPUs, {ARGS.threads} threads, {ARGS.slots} slots, "
          f"{ARGS.concurrency} concurrent per model, {ARGS.limit} requests per model, max_tokens {ARGS.max_tokens}\n")
    print("| server | requests | tok/s | TTFT p50 | TTFT p95 |\n|---|---|---|---|---|")
    for key in [f"single {m}" for m in ids] + ["both"] + [f"both {m}" for m in ids]:
        s = result[key]
        print(f"| {key} | {s['requests']} ({s['errors']} errors) | {s['tokens_per_second']:.1f} | {s['ttft_p50_s']:.2f} s | {s['ttft_p95_s']:.2f} s |")
    ld = result["load"]
    print(f"\nload of {ld['model']}: {ld['load_seconds']:.2f} s in the server, first request answered after {ld['first_request_s']:.2f} s")
    for key in ("itl alone", "itl during prefill"):
        s = result[key]
        if "median_ms" in s:
            print(f"{ids[0]} stream, {key}: {s['tokens_per_second']:.1f} tok/s; gaps between chunks p95 {s['p95_ms']:.1f} ms, "
                  f"max {s['max_ms']:.1f} ms ({s['tokens']} tokens)")
    print(f"{ids[1]} prefill: {result['prefill']['prompt_tokens']} tokens in {result['prefill']['seconds']:.2f} s")
    if ARGS.json_out:
        with open(ARGS.json_out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
