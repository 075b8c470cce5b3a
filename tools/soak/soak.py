#!/usr/bin/env python3
"""Endurance (soak) test for CastServe: bounded load with client disconnects, watching for leaks.

Starts cast-serve (or targets a running server with --url and --pid), measures its idle resident
memory (RSS) and open file descriptors, runs a warm-up, measures the warm idle level, then keeps
--concurrency workers busy for --duration seconds with a mix of streaming and non-streaming chat
completions from the benchmark prompts; some streams are abandoned mid-way and some non-streaming
requests are cancelled before their answer (the socket is closed, half of the time with a TCP
reset). Every --interval seconds it records the server's RSS, fds and threads (/proc/PID), the
engine gauges from /metrics, latency percentiles, errors by kind and completion tokens/s.

After the load it waits (up to --settle seconds) for the server to return to its warm idle level:
the fd count exactly, RSS within --rss-tolerance-mb, no running or waiting requests. It exits 1
when the server does not return, when it died, or when unexpected errors exceed --max-error-rate;
2 on a usage error. Results: soak.json, soak.md and soak.svg (RSS and fds over time) in --out.

Standard library only. See tools/soak/README.md.
"""

import argparse
import http.client
import json
import os
import random
import socket
import struct
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools", "bench"))
import load  # noqa: E402  (tools/bench/load.py: workload, percentiles, /metrics parsing, managed server)


class SoakError(Exception):
    """A user mistake or an unusable target; the message names the thing and the fix."""


# -- the server process --------------------------------------------------------------------------

def proc_sample(pid):
    """{rss_kb, hwm_kb, threads, fds} of a live process from /proc, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            status = f.read()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except (FileNotFoundError, ProcessLookupError):
        return None
    except PermissionError:
        raise SoakError(f"cannot read /proc/{pid}/fd; run the soak as the server's user") from None
    out = {"fds": fds}
    for line in status.splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "Threads"):
            out[{"VmRSS": "rss_kb", "VmHWM": "hwm_kb", "Threads": "threads"}[key]] = int(value.split()[0])
    return out


def engine_gauges(host, port):
    """Running/waiting requests and KV blocks from /metrics (None where the server has no such gauge)."""
    m = load.fetch_metrics(host, port)
    if m is None:
        return None
    keys = {"running": "castserve_requests_running", "waiting": "castserve_requests_waiting",
            "kv_used": "castserve_kv_blocks_used", "kv_cached": "castserve_kv_blocks_cached",
            "kv_free": "castserve_kv_blocks_free"}
    return {k: (int(m[v]) if v in m else None) for k, v in keys.items()}


# -- one request ---------------------------------------------------------------------------------

def close_abruptly(conn, reset):
    """Closes the client socket at once; with `reset` the kernel sends RST instead of FIN."""
    sock = conn.sock
    if sock is not None and reset:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    conn.close()


def classify(exc):
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "connection_refused"
    if isinstance(exc, (ConnectionResetError, BrokenPipeError)):
        return "connection_reset"
    if isinstance(exc, http.client.RemoteDisconnected):
        return "remote_disconnected"
    if isinstance(exc, (http.client.HTTPException, ValueError, KeyError)):
        return "protocol"
    return type(exc).__name__


def one_request(host, port, row, model, rng, args):
    """Runs one request of a random kind. Returns a record: kind, outcome ("ok", "abandoned",
    "cancelled" or "error"), error kind, latency_s, completion_tokens."""
    stream = rng.random() < args.stream_fraction
    max_tokens = min(int(row.get("max_tokens", 128)), args.max_tokens)
    body = {"model": model, "messages": row["messages"], "max_tokens": max_tokens,
            "temperature": rng.choice([0, 0.7]), "stream": stream}
    if stream:
        body["stream_options"] = {"include_usage": True}
    abandon_after = None
    cancel_after = None
    if stream and rng.random() < args.disconnect_rate:
        abandon_after = rng.randint(1, 12)  # content chunks to read before closing the socket
    if not stream and rng.random() < args.cancel_rate:
        cancel_after = rng.uniform(0.0, 1.0)  # seconds after sending before closing the socket
    reset = rng.random() < 0.5
    rec = {"kind": "stream" if stream else "plain", "outcome": "error", "error": None, "latency_s": None,
           "completion_tokens": 0, "t_end": None}
    start = time.monotonic()
    conn = http.client.HTTPConnection(host, port, timeout=args.request_timeout)
    try:
        conn.request("POST", "/v1/chat/completions", body=json.dumps(body).encode(),
                     headers={"Content-Type": "application/json"})
        if cancel_after is not None:
            time.sleep(cancel_after)
            close_abruptly(conn, reset)
            rec["outcome"] = "cancelled"
            return rec
        resp = conn.getresponse()
        if resp.status != 200:
            code = None
            try:
                code = json.loads(resp.read()).get("error", {}).get("code")
            except (ValueError, AttributeError):
                pass
            rec["error"] = f"http_{resp.status}" + (f":{code}" if code else "")
            return rec
        if not stream:
            payload = json.loads(resp.read())
            rec["completion_tokens"] = int(payload["usage"]["completion_tokens"])
            rec["outcome"] = "ok"
            return rec
        chunks = 0
        while True:
            line = resp.readline()
            if not line:
                raise http.client.IncompleteRead(b"", None)
            line = line.strip()
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                break
            event = json.loads(data)
            if event.get("usage"):
                rec["completion_tokens"] = int(event["usage"]["completion_tokens"])
            if event.get("choices"):
                chunks += 1
                if abandon_after is not None and chunks >= abandon_after:
                    close_abruptly(conn, reset)
                    rec["outcome"] = "abandoned"
                    rec["completion_tokens"] = chunks
                    return rec
        rec["outcome"] = "ok"
        return rec
    except Exception as exc:  # every failure is counted by kind; the soak goes on
        rec["error"] = classify(exc)
        return rec
    finally:
        rec["latency_s"] = time.monotonic() - start
        rec["t_end"] = time.monotonic()
        conn.close()


# -- the run -------------------------------------------------------------------------------------

class Recorder:
    """Thread-safe store of finished request records."""

    def __init__(self):
        self.lock = threading.Lock()
        self.records = []

    def add(self, rec):
        with self.lock:
            self.records.append(rec)

    def since(self, index):
        with self.lock:
            return self.records[index:], len(self.records)


def run_load(host, port, rows, model, args, seconds, recorder, seed):
    """`args.concurrency` workers send requests for `seconds`; returns when all have finished."""
    stop_at = time.monotonic() + seconds

    def worker(k):
        rng = random.Random(seed * 1000 + k)
        while time.monotonic() < stop_at:
            recorder.add(one_request(host, port, rng.choice(rows), model, rng, args))

    threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(args.concurrency)]
    for t in threads:
        t.start()
    return threads


def wait_idle(host, port, pid, target, args, log):
    """Polls until fds == target fds, RSS within tolerance of the target and the engine is idle,
    or --settle seconds pass. Returns (settled, last sample, seconds waited)."""
    start = time.monotonic()
    last = None
    while True:
        p = proc_sample(pid)
        g = engine_gauges(host, port)
        last = {"proc": p, "engine": g}
        if p is None:
            return False, last, time.monotonic() - start
        ok = (p["fds"] == target["fds"]
              and p["rss_kb"] <= target["rss_kb"] + args.rss_tolerance_mb * 1024
              and (g is None or ((g["running"] or 0) == 0 and (g["waiting"] or 0) == 0)))
        if ok:
            return True, last, time.monotonic() - start
        if time.monotonic() - start > args.settle:
            return False, last, time.monotonic() - start
        time.sleep(1.0)


def kv_saturated(gauges):
    """Whether every KV block has been written at least once: the blocks in use plus those kept
    for prefix reuse cover the pool (free = total - used, so used + cached >= total). None when the
    server has no such gauges."""
    if not gauges or gauges.get("kv_cached") is None or gauges.get("kv_used") is None:
        return None
    return gauges["kv_cached"] >= gauges.get("kv_free", 0)


def warm_up(host, port, pid, rows, args, log, record):
    """Load in rounds of 5 s until the server's memory has reached its working size, at most
    --warmup seconds: until every KV block has been written once (CastServe's pool is allocated
    up front and its pages become resident on first use, so RSS climbs until then), or, on servers
    without KV gauges, until RSS grows by less than 2 MiB over a round."""
    start = time.monotonic()
    rounds = 0
    last = None
    g = touched = None
    reason = "time limit"
    while time.monotonic() - start < args.warmup:
        seconds = min(5.0, args.warmup - (time.monotonic() - start))
        for t in run_load(host, port, rows, args.model_name, args, seconds, Recorder(), args.seed + 7919 + rounds):
            t.join()
        rounds += 1
        g = engine_gauges(host, port)
        p = proc_sample(pid)
        if p is None:
            raise SoakError(f"the server (pid {pid}) died during the warm-up")
        sat = kv_saturated(g)
        record("warmup", p)
        log(f"warm-up round {rounds}: rss {p['rss_kb'] / 1024:.1f} MiB, kv {g and g.get('kv_used')} used + "
            f"{g and g.get('kv_cached')} cached of {g and (g.get('kv_used') or 0) + (g.get('kv_free') or 0)} blocks")
        touched = None if sat is None else (g["kv_used"] or 0) + (g["kv_cached"] or 0)
        if sat:
            reason = "KV pool written"
            break
        if last is not None and p["rss_kb"] - last[0] < 2048 and (touched is None or touched <= last[1]):
            reason = "RSS plateau"
            break
        last = (p["rss_kb"], touched)
    kv = None
    if g and touched is not None:
        kv = {"blocks_written": touched, "blocks_total": (g["kv_used"] or 0) + (g["kv_free"] or 0)}
    return {"seconds": round(time.monotonic() - start, 1), "rounds": rounds, "stopped_by": reason, "kv": kv}


def idle_level(host, port, pid, record, seconds=3.0):
    """The idle level: fds and RSS sampled over a few quiet seconds (fds: the most common value;
    RSS: the largest)."""
    samples = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        p = proc_sample(pid)
        if p is None:
            raise SoakError(f"server process {pid} is gone")
        samples.append(p)
        record("idle", p)
        time.sleep(0.5)
    fds = max(set(s["fds"] for s in samples), key=lambda v: [s["fds"] for s in samples].count(v))
    return {"fds": fds, "rss_kb": max(s["rss_kb"] for s in samples), "threads": samples[-1].get("threads"),
            "engine": engine_gauges(host, port)}


def summarize(records, wall_s):
    ok = [r for r in records if r["outcome"] == "ok"]
    errors = {}
    for r in records:
        if r["outcome"] == "error":
            errors[r["error"]] = errors.get(r["error"], 0) + 1
    ms = lambda v: None if v is None else round(v * 1000, 1)
    out = {"requests": len(records), "ok": len(ok),
           "abandoned_streams": sum(r["outcome"] == "abandoned" for r in records),
           "cancelled_requests": sum(r["outcome"] == "cancelled" for r in records),
           "errors": errors, "error_count": sum(errors.values()),
           "completion_tokens": sum(r["completion_tokens"] for r in records if r["outcome"] in ("ok", "abandoned")),
           "tok_s": None, "latency_ms": {}}
    if wall_s > 0:
        out["tok_s"] = round(out["completion_tokens"] / wall_s, 1)
    for kind in ("stream", "plain"):
        lat = [r["latency_s"] for r in ok if r["kind"] == kind]
        out["latency_ms"][kind] = {"n": len(lat), "p50": ms(load.percentile(lat, 50)),
                                   "p95": ms(load.percentile(lat, 95)), "p99": ms(load.percentile(lat, 99)),
                                   "max": ms(max(lat) if lat else None)}
    return out


def slope_mb_per_min(samples, key, scale):
    """Least-squares slope of a sampled value over the second half of the load, per minute."""
    pts = [(s["t_s"], s[key] / scale) for s in samples if s.get(key) is not None]
    pts = pts[len(pts) // 2:]
    if len(pts) < 3:
        return None
    n = len(pts)
    mx = sum(x for x, _ in pts) / n
    my = sum(y for _, y in pts) / n
    den = sum((x - mx) ** 2 for x, _ in pts)
    if den == 0:
        return None
    return round(60 * sum((x - mx) * (y - my) for x, y in pts) / den, 3)


def half_growth_mb(samples):
    """RSS at the end of the load minus RSS at its midpoint (MiB), None with too few samples."""
    rss = [s["rss_kb"] for s in samples if s.get("rss_kb") is not None]
    if len(rss) < 2:
        return None
    return round((rss[-1] - rss[len(rss) // 2]) / 1024, 1)


# -- output --------------------------------------------------------------------------------------

def svg(result):
    """RSS (MiB, left axis) and open fds (right axis) over time from the cold idle level through
    warm-up, load (shaded) and settling."""
    samples = result["samples"]
    width, height = 760, 380
    left, right, top, bottom = 70, 70, 50, 50
    pw, ph = width - left - right, height - top - bottom
    t_max = max([s["t_s"] for s in samples] or [1]) or 1
    rss = [s["rss_kb"] / 1024 for s in samples]
    fds = [s["fds"] for s in samples]
    r_max = load.nice_ceiling(max(rss or [1]) * 1.1)
    f_max = load.nice_ceiling(max(fds or [1]) * 1.2)
    x = lambda t: left + t / t_max * pw
    yr = lambda v: top + ph - v / r_max * ph
    yf = lambda v: top + ph - v / f_max * ph
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{width / 2}" y="22" text-anchor="middle" font-size="15" font-weight="bold">'
           f'Soak: server RSS and open fds over time</text>',
           f'<text x="{width / 2}" y="38" text-anchor="middle" font-size="11" fill="#555">'
           f'concurrency {result["config"]["concurrency"]}, load {result["config"]["duration_s"]} s (shaded), '
           f'{result["load"]["requests"]} requests, verdict: {"PASS" if result["passed"] else "FAIL"}</text>']
    ls, le = result["load_window_s"]
    out.append(f'<rect x="{x(ls):.1f}" y="{top}" width="{max(0, x(le) - x(ls)):.1f}" height="{ph}" fill="#f3f3f3"/>')
    out.append(f'<text x="{(x(ls) + x(le)) / 2:.1f}" y="{top + 14}" text-anchor="middle" fill="#777">load</text>')
    if ls > 8:
        out.append(f'<text x="{x(ls / 2):.1f}" y="{top + 14}" text-anchor="middle" fill="#777">idle, warm-up, idle</text>')
    for i in range(6):
        y = top + ph - i * ph / 5
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + pw}" y2="{y:.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" fill="#1f77b4">{r_max * i / 5:g}</text>')
        out.append(f'<text x="{left + pw + 6}" y="{y + 4:.1f}" fill="#d62728">{f_max * i / 5:g}</text>')
    for i in range(7):
        t = t_max * i / 6
        out.append(f'<text x="{x(t):.1f}" y="{top + ph + 16}" text-anchor="middle">{t:.0f}</text>')
    out.append(f'<text x="{left + pw / 2}" y="{height - 10}" text-anchor="middle">seconds</text>')
    out.append(f'<text x="16" y="{top + ph / 2}" fill="#1f77b4" text-anchor="middle" '
               f'transform="rotate(-90 16 {top + ph / 2})">RSS (MiB)</text>')
    out.append(f'<text x="{width - 12}" y="{top + ph / 2}" fill="#d62728" text-anchor="middle" '
               f'transform="rotate(90 {width - 12} {top + ph / 2})">open fds</text>')
    for vals, y, color in ((rss, yr, "#1f77b4"), (fds, yf, "#d62728")):
        pts = " ".join(f"{x(s['t_s']):.1f},{y(v):.1f}" for s, v in zip(samples, vals))
        out.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{pts}"/>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def markdown(result):
    c, l, idle = result["config"], result["load"], result["idle"]
    kb = lambda v: "?" if v is None else f"{v / 1024:.1f} MiB"
    lines = [f"# Soak {result['started_at']}: {'PASS' if result['passed'] else 'FAIL'}", "",
             f"Server: {result['server']}; concurrency {c['concurrency']}, load {c['duration_s']} s, "
             f"{int(c['stream_fraction'] * 100)}% streaming, {int(c['disconnect_rate'] * 100)}% of streams abandoned, "
             f"{int(c['cancel_rate'] * 100)}% of non-streaming requests cancelled, max_tokens <= {c['max_tokens']}; "
             f"load average {result['loadavg_start']} at start, {result['loadavg_end']} at end.",
             f"Warm-up: {result['warmup']['seconds']} s, stopped by {result['warmup']['stopped_by']}"
             + (f" ({result['warmup']['kv']['blocks_written']} of {result['warmup']['kv']['blocks_total']} KV blocks written;"
                f" the cold-to-warm RSS step is the KV pool becoming resident)" if result["warmup"].get("kv") else "") + ".", "",
             "| | fds | RSS | threads |", "|---|---|---|---|"]
    for name in ("cold", "warm", "peak", "after"):
        s = idle.get(name) or {}
        lines.append(f"| {name} | {s.get('fds', '?')} | {kb(s.get('rss_kb'))} | {s.get('threads', '?')} |")
    lines += ["", f"Requests {l['requests']}: {l['ok']} complete, {l['abandoned_streams']} streams abandoned, "
                  f"{l['cancelled_requests']} cancelled, {l['error_count']} errors {l['errors'] or ''}; "
                  f"{l['completion_tokens']} completion tokens, {l['tok_s']} tok/s.", ""]
    for kind, p in l["latency_ms"].items():
        lines.append(f"- {kind} latency (ms, {p['n']} complete): p50 {p['p50']}, p95 {p['p95']}, p99 {p['p99']}, max {p['max']}")
    lines += [f"- RSS slope over the second half of the load: {result['rss_slope_mb_per_min']} MiB/min",
              f"- settled in {result['settle_s']} s (limit {c['settle_s']} s, RSS tolerance {c['rss_tolerance_mb']} MiB)", ""]
    lines += ["Checks:"] + [f"- {'ok' if ok else 'FAILED'}: {text}" for text, ok in result["checks"]]
    return "\n".join(lines) + "\n"


# -- main ----------------------------------------------------------------------------------------

def parse_args(argv):
    p = argparse.ArgumentParser(description="Soak test: bounded load with disconnects; checks fds and RSS return to idle.")
    p.add_argument("--duration", type=float, default=720, help="seconds of load (default 720 = 12 minutes)")
    p.add_argument("--concurrency", type=int, default=8, help="concurrent clients (default 8)")
    p.add_argument("--interval", type=float, default=5, help="seconds between samples (default 5)")
    p.add_argument("--prompts", default=load.DEFAULT_PROMPTS, help="workload JSONL (default ../shared/bench/prompts.jsonl)")
    p.add_argument("--max-tokens", type=int, default=64, help="cap on each request's max_tokens (default 64)")
    p.add_argument("--stream-fraction", type=float, default=0.5, help="share of streaming requests (default 0.5)")
    p.add_argument("--disconnect-rate", type=float, default=0.15, help="share of streams abandoned mid-way (default 0.15)")
    p.add_argument("--cancel-rate", type=float, default=0.1, help="share of non-streaming requests cancelled (default 0.1)")
    p.add_argument("--warmup", type=float, default=240,
                   help="most seconds of warm-up load before the warm idle level is measured; it stops early once "
                        "the KV pool has been written (default 240)")
    p.add_argument("--settle", type=float, default=90, help="seconds allowed to return to idle after the load (default 90)")
    p.add_argument("--rss-tolerance-mb", type=float, default=32, help="RSS allowed above the warm idle level (default 32 MiB)")
    p.add_argument("--max-error-rate", type=float, default=0.01, help="share of unexpected errors tolerated (default 0.01)")
    p.add_argument("--request-timeout", type=float, default=120, help="seconds per request (default 120)")
    p.add_argument("--seed", type=int, default=1, help="random seed of the request mix (default 1)")
    p.add_argument("--out", help="output directory for soak.json, soak.md, soak.svg (default: a new temp directory)")
    p.add_argument("--url", help="soak a running server at this base URL instead of starting one (needs --pid)")
    p.add_argument("--pid", type=int, help="process id of the server at --url (its /proc entries are sampled)")
    p.add_argument("--model-name", default="default", help="model name sent in requests (default 'default')")
    p.add_argument("--castserve-bin", help="cast-serve binary (default $CASTSERVE_BIN, else .build*/release/cast-serve)")
    p.add_argument("--model", default=load.DEFAULT_MODEL, help="GGUF model for the started server")
    p.add_argument("--slots", type=int, default=8, help="slots of the started server (default 8)")
    p.add_argument("--threads", type=int, default=2, help="compute threads of the started server (default 2)")
    p.add_argument("--context-length", type=int, default=1024, help="context length of the started server (default 1024)")
    p.add_argument("--castserve-args", default="", help="extra flags for the started server")
    p.add_argument("--start-timeout", type=float, default=120, help="seconds allowed for the server to load (default 120)")
    args = p.parse_args(argv)
    if args.url and not args.pid:
        p.error("--url needs --pid (the server's process id, for /proc/PID/status and /proc/PID/fd)")
    for name in ("duration", "interval", "settle"):
        if getattr(args, name) <= 0:
            p.error(f"--{name} must be positive")
    if args.concurrency < 1:
        p.error("--concurrency must be at least 1")
    for name in ("stream_fraction", "disconnect_rate", "cancel_rate"):
        if not 0 <= getattr(args, name) <= 1:
            p.error(f"--{name.replace('_', '-')} must be between 0 and 1")
    return args


def loadavg():
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return None


def soak(args, log):
    rows = [r for r in load.load_prompts(args.prompts) if "messages" in r]
    if not rows:
        raise SoakError(f"{args.prompts} has no chat rows (with 'messages'); pass --prompts PATH")
    server = None
    if args.url:
        import urllib.parse
        u = urllib.parse.urlparse(args.url)
        host, port, pid = u.hostname or "127.0.0.1", u.port or 80, args.pid
        if proc_sample(pid) is None:
            raise SoakError(f"no process {pid}; pass the server's pid with --pid")
        server_desc = f"{args.url} (pid {pid})"
    else:
        ns = argparse.Namespace(model=args.model, castserve_bin=args.castserve_bin, slots=args.slots, threads=args.threads,
                                context_length=args.context_length, castserve_args=args.castserve_args,
                                start_timeout=args.start_timeout)
        try:
            server = load.make_server("castserve", ns).start()
        except load.LoadError as e:
            raise SoakError(str(e)) from None
        host, port, pid = server.host, server.port, server.proc.pid
        server_desc = f"cast-serve {' '.join(server.cmd[1:])}"
    result = {"started_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), "server": server_desc,
              "config": {"duration_s": args.duration, "concurrency": args.concurrency, "interval_s": args.interval,
                         "max_tokens": args.max_tokens, "stream_fraction": args.stream_fraction,
                         "disconnect_rate": args.disconnect_rate, "cancel_rate": args.cancel_rate,
                         "warmup_s": args.warmup, "settle_s": args.settle, "rss_tolerance_mb": args.rss_tolerance_mb,
                         "max_error_rate": args.max_error_rate, "seed": args.seed, "prompts": args.prompts},
              "loadavg_start": loadavg(), "idle": {}, "samples": [], "checks": []}
    t0 = time.monotonic()

    def record(phase, proc):
        result["samples"].append({"t_s": round(time.monotonic() - t0, 1), "phase": phase, **proc})

    try:
        result["idle"]["cold"] = idle_level(host, port, pid, record)
        log(f"cold idle: {result['idle']['cold']['fds']} fds, {result['idle']['cold']['rss_kb'] / 1024:.1f} MiB")
        result["warmup"] = warm_up(host, port, pid, rows, args, log, record)
        settled, _, _ = wait_idle(host, port, pid, result["idle"]["cold"] | {"rss_kb": 1 << 40}, args, log)
        if not settled:
            log("warning: fds did not return to the cold level after the warm-up")
        result["idle"]["warm"] = warm = idle_level(host, port, pid, record)
        log(f"warm idle: {warm['fds']} fds, {warm['rss_kb'] / 1024:.1f} MiB")

        recorder = Recorder()
        load_start = time.monotonic()
        threads = run_load(host, port, rows, args.model_name, args, args.duration, recorder, args.seed)
        seen = 0
        peak = {"fds": 0, "rss_kb": 0, "threads": 0}
        next_sample = load_start
        while any(t.is_alive() for t in threads):
            next_sample += args.interval
            time.sleep(max(0.0, next_sample - time.monotonic()))
            p = proc_sample(pid)
            if p is None:
                raise SoakError(f"the server (pid {pid}) died during the load")
            new, seen = recorder.since(seen)
            g = engine_gauges(host, port) or {}
            done = [r for r in new if r["outcome"] == "ok"]
            sample = {"t_s": round(time.monotonic() - t0, 1), "phase": "load", **p, **{f"engine_{k}": v for k, v in g.items()},
                      "finished": len(new), "ok": len(done),
                      "errors": sum(r["outcome"] == "error" for r in new),
                      "tok_s": round(sum(r["completion_tokens"] for r in new if r["outcome"] in ("ok", "abandoned"))
                                     / args.interval, 1),
                      "p50_ms": None if not done else round(1000 * load.percentile([r["latency_s"] for r in done], 50)),
                      "p95_ms": None if not done else round(1000 * load.percentile([r["latency_s"] for r in done], 95))}
            result["samples"].append(sample)
            for k in peak:
                peak[k] = max(peak[k], p.get(k) or 0)
            log(f"t={sample['t_s']:6.0f}s rss {p['rss_kb'] / 1024:6.1f} MiB fds {p['fds']:4d} threads {p.get('threads')} "
                f"done {len(new):3d} err {sample['errors']} tok/s {sample['tok_s']:6.1f} p50 {sample['p50_ms']} ms")
        load_end = time.monotonic()
        records, _ = recorder.since(0)
        result["load"] = summarize(records, load_end - load_start)
        result["load_window_s"] = [round(load_start - t0, 1), round(load_end - t0, 1)]
        result["idle"]["peak"] = peak

        settled, last, waited = wait_idle(host, port, pid, warm, args, log)
        result["settle_s"] = round(waited, 1)
        after = last["proc"] or {}
        result["idle"]["after"] = {**after, "engine": last["engine"]}
        p = proc_sample(pid)
        if p is not None:
            record("settled", p)
        under_load = [s for s in result["samples"] if s["phase"] == "load"][:-1]  # the last one sees the clients leave
        result["rss_slope_mb_per_min"] = slope_mb_per_min(under_load, "rss_kb", 1024)
        result["rss_half_growth_mb"] = half_growth_mb(under_load)
        alive = p is not None and (server is None or server.proc.poll() is None)
        health = None
        if alive:
            try:
                health = load.http_get(host, port, "/health", timeout=10)[0]
            except (OSError, http.client.HTTPException):
                pass
        n = max(1, result["load"]["requests"])
        checks = [
            ("the server is alive and GET /health answers 200 after the soak", alive and health == 200),
            (f"open fds back to the warm idle level exactly ({warm['fds']}; now {after.get('fds')})",
             after.get("fds") == warm["fds"]),
            (f"RSS back within {args.rss_tolerance_mb:g} MiB of the warm idle level ({warm['rss_kb'] / 1024:.1f} MiB; "
             f"now {(after.get('rss_kb') or 0) / 1024:.1f} MiB)",
             after.get("rss_kb") is not None and after["rss_kb"] <= warm["rss_kb"] + args.rss_tolerance_mb * 1024),
            (f"unexpected errors at most {args.max_error_rate:.1%} of requests ({result['load']['error_count']} of {n})",
             result["load"]["error_count"] <= args.max_error_rate * n),
            ("at least one request completed", result["load"]["ok"] > 0),
            (f"RSS grew at most {args.rss_tolerance_mb:g} MiB over the second half of the load "
             f"({result['rss_half_growth_mb']} MiB)",
             (result["rss_half_growth_mb"] or 0) <= args.rss_tolerance_mb),
        ]
        if last["engine"] is not None:
            checks.append(("no request running or waiting after the load",
                           (last["engine"]["running"] or 0) == 0 and (last["engine"]["waiting"] or 0) == 0))
        result["checks"] = checks
        result["passed"] = all(ok for _, ok in checks)
        result["loadavg_end"] = loadavg()
        return result
    finally:
        if server is not None:
            result["server_exit_status"] = server.stop()


def main(argv=None):
    args = parse_args(argv)
    out = args.out or tempfile.mkdtemp(prefix="castserve-soak-")
    os.makedirs(out, exist_ok=True)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)
    try:
        result = soak(args, log)
    except (SoakError, load.LoadError) as e:
        log(f"soak: {e}")
        return 2
    with open(os.path.join(out, "soak.json"), "w") as f:
        json.dump(result, f, indent=1)
    with open(os.path.join(out, "soak.md"), "w") as f:
        f.write(markdown(result))
    with open(os.path.join(out, "soak.svg"), "w") as f:
        f.write(svg(result))
    print(markdown(result))
    print(f"results in {out}")
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
