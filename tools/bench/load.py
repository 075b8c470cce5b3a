#!/usr/bin/env python3
"""HTTP load benchmark for OpenAI-compatible servers (CastServe, llama.cpp's llama-server, any URL).

For each concurrency level C, C worker threads pull the workload's prompts from a shared queue
(each prompt once per level) and send them as streaming, greedy requests. Per request it records
latency, time to first token (the first chunk carrying content), completion tokens and status; per
level it reports aggregate completion tokens/s (all completion tokens / wall time of the level),
TTFT and latency percentiles, errors, and the engine's own counters from /metrics deltas.

Standard library only (threading + http.client). See tools/bench/README.md for usage.
"""

import argparse
import http.client
import json
import os
import queue
import select
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from datetime import datetime, timezone

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_PROMPTS = os.path.join(os.path.dirname(ROOT), "shared", "bench", "prompts.jsonl")
if not os.path.exists(DEFAULT_PROMPTS):
    DEFAULT_PROMPTS = "/work/shared/bench/prompts.jsonl"
DEFAULT_MODEL = os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
DEFAULT_LLAMA_SERVER = "/tmp/llama-build/bin/llama-server"
TARGETS = ("castserve", "llama-server", "url")


class LoadError(Exception):
    """A user mistake or an unusable target; the message names the thing and the fix."""


# -- workload ---------------------------------------------------------------------------------

def load_prompts(path, limit=None, categories=None):
    """Rows of the workload file (dicts with id, category, messages or prompt, max_tokens), optionally
    only those whose category is in `categories`, then only the first `limit`."""
    if not os.path.exists(path):
        raise LoadError(f"workload {path} does not exist; pass --prompts PATH")
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise LoadError(f"{path}:{n} is not JSON ({e}); fix the line") from None
            if "id" not in row or ("messages" not in row and "prompt" not in row):
                raise LoadError(f"{path}:{n} needs `id` and `messages` or `prompt`")
            rows.append(row)
    if categories:
        known = sorted({r.get("category") for r in rows})
        unknown = [c for c in categories if c not in known]
        if unknown:
            raise LoadError(f"no rows of category {', '.join(unknown)} in {path}; --categories takes {', '.join(map(str, known))}")
        rows = [r for r in rows if r.get("category") in categories]
    if limit is not None:
        rows = rows[:limit]
    if not rows:
        raise LoadError(f"workload {path} has no rows")
    return rows


def request_body(row, model, max_tokens_cap=None):
    """(path, JSON body) of one streaming greedy request for a workload row."""
    max_tokens = int(row.get("max_tokens", 128))
    if max_tokens_cap is not None:
        max_tokens = min(max_tokens, max_tokens_cap)
    body = {"model": model, "max_tokens": max_tokens, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}
    if "messages" in row:
        body["messages"] = row["messages"]
        return "/v1/chat/completions", body
    body["prompt"] = row["prompt"]
    return "/v1/completions", body


# -- one request --------------------------------------------------------------------------------

def run_request(host, port, path, body, timeout, deadline=None):
    """Sends one streaming request and reads its SSE stream, bounded by `timeout` seconds overall.

    Returns a dict: ok, status, error, latency_s, ttft_s, completion_tokens, token_source
    ("usage" when the final chunk reported usage, else "chunks": content chunks counted), text.
    """
    start = time.monotonic()
    limit = start + timeout
    if deadline is not None:
        limit = min(limit, deadline)
    rec = {"ok": False, "status": None, "error": None, "latency_s": None, "ttft_s": None,
           "completion_tokens": 0, "prompt_tokens": None, "token_source": None, "text": "", "chunks": 0}
    conn = http.client.HTTPConnection(host, port, timeout=max(0.1, limit - start))
    pieces = []
    usage_tokens = None
    try:
        conn.request("POST", path, body=json.dumps(body).encode(),
                     headers={"Content-Type": "application/json", "Accept": "text/event-stream"})
        resp = conn.getresponse()
        rec["status"] = resp.status
        if resp.status != 200:
            rec["error"] = f"HTTP {resp.status}: {resp.read(300).decode(errors='replace')}"
            return rec
        done = False
        while not done:
            left = limit - time.monotonic()
            if left <= 0:
                if deadline is not None and deadline < start + timeout:
                    raise TimeoutError("--max-seconds reached")
                raise TimeoutError(f"request exceeded --timeout {timeout:g} s")
            if conn.sock is not None:
                conn.sock.settimeout(left)
            line = resp.readline()
            if not line:
                break
            line = line.strip()
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                done = True
                break
            event = json.loads(data)
            if "error" in event:
                rec["error"] = f"stream error: {json.dumps(event['error'])[:300]}"
                return rec
            for choice in event.get("choices") or []:
                delta = choice.get("delta")
                piece = delta.get("content") if isinstance(delta, dict) else choice.get("text")
                if piece:
                    if rec["ttft_s"] is None:
                        rec["ttft_s"] = time.monotonic() - start
                    pieces.append(piece)
                    rec["chunks"] += 1
            usage = event.get("usage")
            if isinstance(usage, dict) and usage.get("completion_tokens") is not None:
                usage_tokens = int(usage["completion_tokens"])
                if usage.get("prompt_tokens") is not None:
                    rec["prompt_tokens"] = int(usage["prompt_tokens"])
        rec["latency_s"] = time.monotonic() - start
        rec["text"] = "".join(pieces)
        if usage_tokens is not None:
            rec["completion_tokens"], rec["token_source"] = usage_tokens, "usage"
        else:
            rec["completion_tokens"], rec["token_source"] = rec["chunks"], "chunks"
        if not done:
            rec["error"] = "stream ended without [DONE]"
            return rec
        rec["ok"] = True
        return rec
    except (OSError, http.client.HTTPException, ValueError, TimeoutError) as e:
        rec["error"] = f"{type(e).__name__}: {e}"
        return rec
    finally:
        if rec["latency_s"] is None:
            rec["latency_s"] = time.monotonic() - start
        conn.close()


def http_get(host, port, path, timeout=10):
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


# -- metrics ------------------------------------------------------------------------------------

def parse_prometheus(text):
    """{metric name: value summed over its label sets} from Prometheus text exposition."""
    values = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        if "{" in line:
            name, rest = line[:line.index("{")], line[line.rindex("}") + 1:]
        else:
            name, _, rest = line.partition(" ")
        value = rest.split()[0] if rest.split() else ""
        try:
            values[name] = values.get(name, 0.0) + float(value)
        except ValueError:
            continue
    return values


def fetch_metrics(host, port):
    try:
        status, payload = http_get(host, port, "/metrics", timeout=10)
    except (OSError, http.client.HTTPException):
        return None
    if status != 200:
        return None
    return parse_prometheus(payload.decode(errors="replace"))


def metric_deltas(before, after):
    """Engine figures of one level from two /metrics snapshots (None where unavailable)."""
    out = {"rows_per_step": None, "step_ms": None, "steps": None, "preemptions": None,
           "prefix_hit_tokens": None, "source": None}
    if not before or not after:
        return out
    d = lambda k: after.get(k, 0.0) - before.get(k, 0.0)
    if "castserve_engine_steps_total" in after:
        steps = d("castserve_engine_steps_total")
        out["source"] = "castserve"
        out["steps"] = int(steps)
        if steps > 0:
            out["rows_per_step"] = d("castserve_engine_rows_total") / steps
            if "castserve_engine_step_seconds_total" in after:
                out["step_ms"] = 1000 * d("castserve_engine_step_seconds_total") / steps
            elif "castserve_engine_step_duration_seconds_sum" in after:
                out["step_ms"] = 1000 * d("castserve_engine_step_duration_seconds_sum") / steps
        out["preemptions"] = int(d("castserve_engine_preemptions_total"))
        out["prefix_hit_tokens"] = int(d("castserve_prefix_cache_hit_tokens_total"))
    elif "llamacpp:n_decode_total" in after:
        # llama-server counts llama_decode calls; rows = prompt tokens processed + tokens predicted
        # (an approximation: its counters update when a request finishes).
        steps = d("llamacpp:n_decode_total")
        out["source"] = "llamacpp"
        out["steps"] = int(steps)
        if steps > 0:
            out["rows_per_step"] = (d("llamacpp:prompt_tokens_total") + d("llamacpp:tokens_predicted_total")) / steps
    return out


# -- statistics ---------------------------------------------------------------------------------

def percentile(values, p):
    """Linear-interpolated percentile (numpy's default method) of a list; None when empty."""
    xs = sorted(v for v in values if v is not None)
    if not xs:
        return None
    k = (len(xs) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def summarize_level(concurrency, records, wall_s, deltas):
    ok = [r for r in records if r["ok"]]
    tokens = sum(r["completion_tokens"] for r in ok)
    ms = lambda v: None if v is None else round(v * 1000, 1)
    sources = sorted({r["token_source"] for r in ok if r["token_source"]})
    by_category = {}
    for cat in sorted({r.get("category") or "?" for r in records}):
        mine = [r for r in ok if (r.get("category") or "?") == cat]
        by_category[cat] = {
            "requests": sum(1 for r in records if (r.get("category") or "?") == cat), "ok": len(mine),
            "completion_tokens": sum(r["completion_tokens"] for r in mine),
            "ttft_p50_ms": ms(percentile([r["ttft_s"] for r in mine], 50)),
            "latency_p50_ms": ms(percentile([r["latency_s"] for r in mine], 50)),
        }
    return {
        "concurrency": concurrency,
        "requests": len(records),
        "errors": len(records) - len(ok),
        "completion_tokens": tokens,
        "prompt_tokens": sum(r.get("prompt_tokens") or 0 for r in ok),
        "wall_s": round(wall_s, 3),
        "tok_s": round(tokens / wall_s, 2) if wall_s > 0 else 0.0,
        "ttft_p50_ms": ms(percentile([r["ttft_s"] for r in ok], 50)),
        "ttft_p95_ms": ms(percentile([r["ttft_s"] for r in ok], 95)),
        "latency_p50_ms": ms(percentile([r["latency_s"] for r in ok], 50)),
        "latency_p95_ms": ms(percentile([r["latency_s"] for r in ok], 95)),
        "token_source": ",".join(sources),
        "engine": deltas,
        "by_category": by_category,
    }


# -- one level ----------------------------------------------------------------------------------

def run_level(host, port, rows, concurrency, model, timeout, deadline, max_tokens_cap=None):
    """Runs every row once with `concurrency` workers. Returns (records by row order, wall seconds)."""
    work = queue.Queue()
    for i, row in enumerate(rows):
        work.put(i)
    records = [None] * len(rows)

    def worker():
        while True:
            if time.monotonic() >= deadline:
                return
            try:
                i = work.get_nowait()
            except queue.Empty:
                return
            row = rows[i]
            path, body = request_body(row, model, max_tokens_cap)
            rec = run_request(host, port, path, body, timeout, deadline)
            rec["id"] = row["id"]
            rec["category"] = row.get("category")
            records[i] = rec

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        # A request never outlives `deadline` (+ the socket timeout granularity).
        t.join(max(0.0, deadline - time.monotonic()) + timeout + 5)
    wall = time.monotonic() - start
    for i, rec in enumerate(records):
        if rec is None:
            records[i] = {"id": rows[i]["id"], "category": rows[i].get("category"), "ok": False, "status": None,
                          "error": "not run: --max-seconds reached", "latency_s": None, "ttft_s": None,
                          "completion_tokens": 0, "prompt_tokens": None, "token_source": None, "text": "",
                          "chunks": 0}
    return records, wall


# -- servers --------------------------------------------------------------------------------------

def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent():
    """In the child before exec: SIGTERM it when this tool dies, even by SIGKILL (Linux only)."""
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class ManagedServer:
    """A server process this tool starts and always stops (SIGTERM, then SIGKILL)."""

    def __init__(self, name, cmd, port=None, env=None, start_timeout=120):
        self.name, self.cmd, self.port, self.env = name, cmd, port, env
        self.start_timeout = start_timeout
        self.proc = None
        self.log = None
        self.host = "127.0.0.1"

    def start(self):
        self.log = tempfile.NamedTemporaryFile(prefix=f"load-{self.name}-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(self.cmd, cwd=ROOT, env=self.env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE if self.port is None else self.log,
                                     stderr=self.log, start_new_session=True, preexec_fn=_die_with_parent)
        deadline = time.monotonic() + self.start_timeout
        if self.port is None:
            line = self._first_line(deadline)
            prefix = "listening on http://"
            if not line.startswith(prefix):
                raise LoadError(f"{self.name} printed {line!r} instead of its address; log: {self.log.name}")
            hostport = line[len(prefix):].strip().rstrip("/")
            self.host, _, port = hostport.rpartition(":")
            self.port = int(port)
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise LoadError(f"{self.name} exited with {self.proc.returncode} while loading; log:\n{self.log_tail()}")
            try:
                status, _ = http_get(self.host, self.port, "/health", timeout=5)
                if status == 200:
                    return self
            except (OSError, http.client.HTTPException):
                pass
            time.sleep(0.2)
        raise LoadError(f"{self.name} not healthy within {self.start_timeout} s; raise --start-timeout. log:\n{self.log_tail()}")

    def _first_line(self, deadline):
        fd = self.proc.stdout.fileno()
        data = b""
        while b"\n" not in data:
            left = deadline - time.monotonic()
            if left <= 0:
                raise LoadError(f"{self.name} printed no address within {self.start_timeout} s; log:\n{self.log_tail()}")
            ready, _, _ = select.select([fd], [], [], min(left, 0.5))
            if ready:
                chunk = os.read(fd, 4096)
                if not chunk:
                    if self.proc.poll() is not None:
                        raise LoadError(f"{self.name} exited with {self.proc.returncode} at start; log:\n{self.log_tail()}")
                    time.sleep(0.05)
                    continue
                data += chunk
        return data.split(b"\n", 1)[0].decode(errors="replace")

    def stop(self, timeout=20):
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self.proc.stdout is not None and not self.proc.stdout.closed:
            self.proc.stdout.close()
        if self.log is not None and not self.log.closed:
            self.log.close()
        return self.proc.returncode

    def log_tail(self, n=3000):
        try:
            with open(self.log.name, "rb") as f:
                return f.read().decode(errors="replace")[-n:]
        except OSError:
            return ""


def castserve_binary(explicit):
    if explicit:
        return explicit
    env = os.environ.get("CASTSERVE_BIN")
    if env:
        return env
    import glob
    default = os.path.join(ROOT, ".build", "release", "cast-serve")
    if os.path.exists(default):
        return default
    found = glob.glob(os.path.join(ROOT, ".build*", "release", "cast-serve"))
    if not found:
        raise LoadError("cast-serve is not built; run `swift build -c release` or pass --castserve-bin PATH")
    return max(found, key=os.path.getmtime)


def make_server(target, args):
    if not os.path.exists(args.model):
        raise LoadError(f"model {args.model} is missing; run `make model` or pass --model PATH")
    if target == "castserve":
        binary = castserve_binary(args.castserve_bin)
        if not os.path.exists(binary):
            raise LoadError(f"cast-serve binary {binary} does not exist; build it or fix --castserve-bin")
        env = {k: v for k, v in os.environ.items() if not k.startswith("CASTSERVE_")}
        cmd = [binary, "serve", "--port", "0", "--model", args.model, "--slots", str(args.slots),
               "--threads", str(args.threads)]
        if args.context_length:
            cmd += ["--context-length", str(args.context_length)]
        config = os.path.join(ROOT, "config.json")
        if os.path.exists(config):
            cmd += ["--config", config]
        cmd += shlex.split(args.castserve_args or "")
        return ManagedServer("castserve", cmd, env=env, start_timeout=args.start_timeout)
    if target == "llama-server":
        if not os.path.exists(args.llama_server):
            raise LoadError(f"llama-server binary {args.llama_server} does not exist; pass --llama-server PATH")
        port = free_port()
        cmd = [args.llama_server, "-m", args.model, "-t", str(args.threads), "-c", str(args.llama_ctx),
               "-np", str(args.llama_slots), "-cb", "--host", "127.0.0.1", "--port", str(port),
               "--metrics", "--no-webui"] + shlex.split(args.llama_args or "")
        return ManagedServer("llama-server", cmd, port=port, start_timeout=args.start_timeout)
    raise LoadError(f"unknown target {target!r}; use one of {', '.join(TARGETS)}")


# -- one target ---------------------------------------------------------------------------------

def new_result(target):
    return {"target": target, "levels": [], "requests": {}, "invariance": None, "server": None}


def bench_target(target, args, rows, levels, deadline, log, result=None):
    """Runs every level against one target, filling `result` (also when interrupted). Returns it."""
    server = None
    result = result if result is not None else new_result(target)
    try:
        if target == "url":
            if not args.url:
                raise LoadError("--target url needs --url http://HOST:PORT")
            u = urllib.parse.urlparse(args.url)
            if u.scheme != "http" or not u.hostname:
                raise LoadError(f"--url {args.url!r} must be http://HOST:PORT")
            host, port = u.hostname, u.port or 80
            result["server"] = {"url": args.url}
        else:
            server = make_server(target, args)
            log(f"[{target}] starting: {' '.join(server.cmd)}")
            t0 = time.monotonic()
            server.start()
            host, port = server.host, server.port
            result["server"] = {"command": server.cmd, "load_s": round(time.monotonic() - t0, 2), "log": server.log.name}
            log(f"[{target}] ready on {host}:{port} after {result['server']['load_s']} s")
        # Warm-up: one short request so lazy first-request costs are not in level 1.
        path, body = request_body(rows[0], args.model_name, max_tokens_cap=4)
        warm = run_request(host, port, path, body, args.timeout, deadline)
        if not warm["ok"]:
            raise LoadError(f"[{target}] warm-up request failed: {warm['error']}")
        for c in levels:
            if time.monotonic() >= deadline:
                log(f"[{target}] --max-seconds reached; skipping concurrency {c} and beyond")
                result["truncated"] = True
                break
            before = fetch_metrics(host, port)
            records, wall = run_level(host, port, rows, c, args.model_name, args.timeout, deadline, args.max_tokens)
            after = fetch_metrics(host, port)
            level = summarize_level(c, records, wall, metric_deltas(before, after))
            level["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
            if time.monotonic() >= deadline:
                result["truncated"] = True
            result["levels"].append(level)
            result["requests"][str(c)] = [
                {k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()} for r in records]
            eng = level["engine"]
            extra = ""
            if eng.get("rows_per_step") is not None:
                extra = f", rows/step {eng['rows_per_step']:.2f}"
                if eng.get("step_ms") is not None:
                    extra += f", step {eng['step_ms']:.1f} ms"
            log(f"[{target}] C={c}: {level['tok_s']:.1f} tok/s, TTFT p50 {level['ttft_p50_ms']} ms, "
                f"latency p50 {level['latency_p50_ms']} ms, errors {level['errors']}/{level['requests']}{extra}, "
                f"load average {level['loadavg_after'][0]:.2f}")
            for r in records:
                if not r["ok"]:
                    log(f"[{target}]   {r['id']}: {r['error']}")
    except LoadError as e:
        result["error"] = str(e)
        log(f"[{target}] error: {e}")
    finally:
        result["invariance"] = invariance(result)
        if server is not None:
            code = server.stop()
            result["server"]["exit_status"] = code
            log(f"[{target}] stopped (exit {code})")
    return result


def invariance(result):
    """Compares each prompt's text at the lowest and highest concurrency run."""
    levels = sorted(int(c) for c in result["requests"])
    if len(levels) < 2:
        return None
    lo, hi = str(levels[0]), str(levels[-1])
    a = {r["id"]: r for r in result["requests"][lo] if r["ok"]}
    b = {r["id"]: r for r in result["requests"][hi] if r["ok"]}
    common = sorted(set(a) & set(b))
    differing = [i for i in common if a[i]["text"] != b[i]["text"]]
    return {"low": int(lo), "high": int(hi), "compared": len(common),
            "identical": len(common) - len(differing), "differing_ids": differing}


# -- reports ------------------------------------------------------------------------------------

def fmt(v, digits=0):
    if v is None:
        return "n/a"
    return f"{v:.{digits}f}"


def markdown_table(results):
    lines = ["| target | C | tok/s | TTFT p50 ms | TTFT p95 ms | latency p50 ms | latency p95 ms | errors | rows/step | step ms |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for res in results:
        for lv in res["levels"]:
            eng = lv["engine"] or {}
            lines.append(f"| {res['target']} | {lv['concurrency']} | {fmt(lv['tok_s'], 1)} | {fmt(lv['ttft_p50_ms'])} | "
                         f"{fmt(lv['ttft_p95_ms'])} | {fmt(lv['latency_p50_ms'])} | {fmt(lv['latency_p95_ms'])} | "
                         f"{lv['errors']}/{lv['requests']} | {fmt(eng.get('rows_per_step'), 2)} | {fmt(eng.get('step_ms'), 1)} |")
    return "\n".join(lines)


def ratio_table(results):
    if len(results) < 2:
        return ""
    a, b = results[0], results[1]
    bl = {lv["concurrency"]: lv for lv in b["levels"]}
    lines = [f"| C | tok/s {a['target']}/{b['target']} | TTFT p50 {a['target']}/{b['target']} | latency p50 {a['target']}/{b['target']} |",
             "|---:|---:|---:|---:|"]
    div = lambda x, y: None if x is None or not y else x / y
    for lv in a["levels"]:
        other = bl.get(lv["concurrency"])
        if other is None:
            continue
        lines.append(f"| {lv['concurrency']} | {fmt(div(lv['tok_s'], other['tok_s']), 2)} | "
                     f"{fmt(div(lv['ttft_p50_ms'], other['ttft_p50_ms']), 2)} | "
                     f"{fmt(div(lv['latency_p50_ms'], other['latency_p50_ms']), 2)} |")
    return "\n".join(lines)


def invariance_lines(results):
    out = []
    for res in results:
        inv = res.get("invariance")
        if inv is None:
            out.append(f"- {res['target']}: invariance not checked (fewer than two concurrency levels ran)")
            continue
        line = (f"- {res['target']}: {inv['identical']}/{inv['compared']} texts identical at concurrency "
                f"{inv['low']} vs {inv['high']}")
        if inv["differing_ids"]:
            line += f" (differ: {', '.join(inv['differing_ids'])})"
        out.append(line)
    return "\n".join(out)


def nice_ceiling(v):
    if v <= 0:
        return 1.0
    exp = 10 ** len(str(int(v))) / 10
    for m in (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10):
        if m * exp >= v:
            return m * exp
    return 10 * exp


def svg_chart(results, title="Aggregate completion tokens/s vs concurrency", subtitle=""):
    """A self-contained SVG line chart: x = concurrency (log2 spacing), y = tok/s, one line per target."""
    import math
    width, height = 720, 440
    left, right, top, bottom = 80, 180, 60, 70
    pw, ph = width - left - right, height - top - bottom
    colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"]
    conc = sorted({lv["concurrency"] for r in results for lv in r["levels"]}) or [1]
    ymax = nice_ceiling(max([lv["tok_s"] for r in results for lv in r["levels"]] or [1]) * 1.05)
    lx = [math.log2(c) for c in conc]
    x0, x1 = min(lx), max(lx)
    xs = lambda c: left + (pw / 2 if x1 == x0 else (math.log2(c) - x0) / (x1 - x0) * pw)
    ys = lambda v: top + ph - v / ymax * ph
    esc = lambda s: str(s).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
           f'font-family="sans-serif" font-size="12">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{left + pw / 2}" y="22" text-anchor="middle" font-size="15" font-weight="bold">{esc(title)}</text>',
           f'<text x="{left + pw / 2}" y="40" text-anchor="middle" font-size="11" fill="#555">{esc(subtitle)}</text>']
    for i in range(6):
        v = ymax * i / 5
        y = ys(v)
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + pw}" y2="{y:.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{left - 8}" y="{y + 4:.1f}" text-anchor="end">{v:g}</text>')
    for c in conc:
        x = xs(c)
        out.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + ph}" stroke="#eee"/>')
        out.append(f'<text x="{x:.1f}" y="{top + ph + 18}" text-anchor="middle">{c}</text>')
    out.append(f'<line x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}" stroke="black"/>')
    out.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + ph}" stroke="black"/>')
    out.append(f'<text x="{left + pw / 2}" y="{height - 20}" text-anchor="middle">concurrent requests (log scale)</text>')
    out.append(f'<text x="20" y="{top + ph / 2}" text-anchor="middle" transform="rotate(-90 20 {top + ph / 2})">'
               f'completion tokens / s (aggregate)</text>')
    for k, res in enumerate(results):
        color = colors[k % len(colors)]
        pts = [(xs(lv["concurrency"]), ys(lv["tok_s"]), lv["tok_s"]) for lv in res["levels"]]
        if len(pts) > 1:
            out.append(f'<polyline fill="none" stroke="{color}" stroke-width="2.5" points="'
                       + " ".join(f"{x:.1f},{y:.1f}" for x, y, _ in pts) + '"/>')
        for x, y, v in pts:
            out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4" fill="{color}"/>')
            ty = y - 9 if k % 2 == 0 else y + 17  # alternate targets label above / below their points
            out.append(f'<text x="{x:.1f}" y="{ty:.1f}" text-anchor="middle" fill="{color}" font-size="11">{v:.0f}</text>')
        ly = top + 20 + k * 22
        out.append(f'<line x1="{left + pw + 20}" y1="{ly}" x2="{left + pw + 45}" y2="{ly}" stroke="{color}" stroke-width="2.5"/>')
        out.append(f'<text x="{left + pw + 52}" y="{ly + 4}">{esc(res["target"])}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


# -- main ---------------------------------------------------------------------------------------

def parse_args(argv):
    p = argparse.ArgumentParser(description="HTTP load benchmark for OpenAI-compatible servers.")
    p.add_argument("--target", choices=TARGETS, default="castserve", help="server to load (default castserve)")
    p.add_argument("--compare", help="comma-separated targets run one after the other, e.g. castserve,llama-server")
    p.add_argument("--url", help="base URL for --target url, e.g. http://127.0.0.1:8080")
    p.add_argument("--prompts", default=DEFAULT_PROMPTS, help="workload JSONL (default ../shared/bench/prompts.jsonl)")
    p.add_argument("--categories", help="use only rows of these categories, comma-separated (e.g. chat,plain)")
    p.add_argument("--limit", type=int, help="use only the first N prompts (after --categories)")
    p.add_argument("--concurrency", default="1,2,4,8,16", help="levels, comma-separated (default 1,2,4,8,16)")
    p.add_argument("--max-tokens", type=int, help="cap every request's max_tokens")
    p.add_argument("--timeout", type=float, default=180.0, help="seconds allowed per request (default 180)")
    p.add_argument("--max-seconds", type=float, default=3600.0, help="guard for the whole run (default 3600)")
    p.add_argument("--start-timeout", type=float, default=120.0, help="seconds allowed for a server to load")
    p.add_argument("--model", default=DEFAULT_MODEL, help="GGUF model for the servers this tool starts")
    p.add_argument("--model-name", default="default", help="`model` field of requests (default \"default\")")
    p.add_argument("--threads", type=int, default=2, help="compute threads of started servers (default 2)")
    p.add_argument("--castserve-bin", help="cast-serve binary (default $CASTSERVE_BIN, else .build*/release/cast-serve)")
    p.add_argument("--slots", type=int, default=16, help="cast-serve --slots (default 16)")
    p.add_argument("--context-length", type=int, help="cast-serve --context-length (default: config.json)")
    p.add_argument("--llama-server", default=DEFAULT_LLAMA_SERVER, help="llama-server binary")
    p.add_argument("--llama-slots", type=int, default=8, help="llama-server -np (default 8)")
    p.add_argument("--llama-ctx", type=int, default=8192, help="llama-server -c, shared by its slots (default 8192)")
    p.add_argument("--llama-args", help="extra llama-server arguments, one shell-quoted string (e.g. \"--poll 0\")")
    p.add_argument("--castserve-args", help="extra cast-serve serve arguments, one shell-quoted string")
    p.add_argument("--json", dest="json_out", help="write all results (per request too) to this file")
    p.add_argument("--svg", help="write a tok/s-vs-concurrency line chart to this SVG file")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.add_argument("--replot", metavar="REPORT.json",
                   help="run nothing: print the tables of a saved --json report and write --svg from it")
    args = p.parse_args(argv)
    try:
        args.levels = [int(c) for c in args.concurrency.split(",") if c.strip()]
    except ValueError:
        p.error(f"--concurrency {args.concurrency!r} must be comma-separated integers, e.g. 1,2,4")
    if not args.levels or any(c < 1 for c in args.levels):
        p.error("--concurrency needs positive integers, e.g. 1,2,4,8,16")
    args.model = os.path.abspath(args.model)
    if args.castserve_bin:
        args.castserve_bin = os.path.abspath(args.castserve_bin)
    args.targets = [t.strip() for t in args.compare.split(",")] if args.compare else [args.target]
    for t in args.targets:
        if t not in TARGETS:
            p.error(f"unknown target {t!r} in --compare; use {', '.join(TARGETS)}")
    if args.limit is not None and args.limit < 1:
        p.error("--limit must be at least 1")
    return args


def print_report(report, svg_path=None, subtitle=""):
    """Prints the tables and invariance lines of a report; writes its chart to `svg_path`."""
    results = [r for r in report["results"] if r["levels"]]
    print(markdown_table(results))
    ratios = ratio_table(results)
    if ratios:
        print()
        print(ratios)
    print()
    print("Greedy invariance (text per prompt, lowest vs highest concurrency):")
    print(invariance_lines(report["results"]))
    if svg_path and results:
        with open(svg_path, "w", encoding="utf-8") as f:
            f.write(svg_chart(results, subtitle=subtitle))


def chart_subtitle(report, threads):
    return (f"{report['prompt_count']} prompts per level, greedy, streaming; {threads} compute threads; "
            f"{report['date'][:10]}")


def replot(args):
    try:
        with open(args.replot, encoding="utf-8") as f:
            report = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        print(f"error: cannot read report {args.replot} ({e}); pass a file written by --json", file=sys.stderr)
        return 2
    print_report(report, args.svg, chart_subtitle(report, report.get("threads", args.threads)))
    return 0


def main(argv=None):
    args = parse_args(argv)
    if args.replot:
        return replot(args)
    log = (lambda s: None) if args.quiet else (lambda s: print(s, file=sys.stderr, flush=True))

    def on_signal(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, on_signal)

    started = time.monotonic()
    deadline = started + args.max_seconds
    try:
        categories = [c.strip() for c in args.categories.split(",") if c.strip()] if args.categories else None
        rows = load_prompts(args.prompts, args.limit, categories)
    except LoadError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    report = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "command": " ".join([os.path.basename(sys.argv[0])] + (argv if argv is not None else sys.argv[1:])),
              "prompts": args.prompts, "prompt_count": len(rows), "concurrency": args.levels,
              "timeout_s": args.timeout, "max_seconds": args.max_seconds, "threads": args.threads,
              "loadavg_before": os.getloadavg(),
              "results": []}
    try:
        for target in args.targets:
            report["results"].append(new_result(target))
            bench_target(target, args, rows, args.levels, deadline, log, report["results"][-1])
    except KeyboardInterrupt:
        log("interrupted; servers stopped")
        report["interrupted"] = True
    report["loadavg_after"] = os.getloadavg()
    report["elapsed_s"] = round(time.monotonic() - started, 1)
    if args.json_out:
        with open(args.json_out, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=1)
    print_report(report, args.svg, chart_subtitle(report, args.threads))
    for r in report["results"]:
        if r.get("error"):
            print(f"error: [{r['target']}] {r['error']}", file=sys.stderr)
        if r.get("truncated"):
            print(f"error: [{r['target']}] stopped by --max-seconds {args.max_seconds:g}; results are partial", file=sys.stderr)
    failed = any(r.get("error") or r.get("truncated") for r in report["results"]) or report.get("interrupted")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
