"""Shared harness for the end-to-end tests: start a real cast-serve process on an ephemeral port,
wait until it is ready, talk to it (JSON over HTTP, raw sockets, curl), and stop it.

The binary is $CASTSERVE_BIN, else .build/release/cast-serve (what `make test` builds), else the
newest .build*/release/cast-serve under the repository root. The model is $CASTSERVE_MODEL, else
models/SmolLM2-135M-Instruct.Q4_1.gguf. Every wait here is bounded.

Servers speculate with the fixed cost model FIXED_COST_MODEL (`--cost-model`) unless a test asks
for a measured one (`cost_model=None`): what the planner decides is then the same on any host at
any load (tests/README.md, Host independence). $CASTSERVE_E2E_KERNELS forces a kernel set
(e.g. avx2) on every server that does not choose its own.
"""

import glob
import http.client
import json
import os
import select
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = os.environ.get("CASTSERVE_MODEL", os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf"))
MODEL_ID = "SmolLM2-135M-Instruct.Q4_1"
START_TIMEOUT = float(os.environ.get("CASTSERVE_START_TIMEOUT", "90"))
REQUEST_TIMEOUT = 60.0


def binary_path():
    """The cast-serve executable to test."""
    explicit = os.environ.get("CASTSERVE_BIN")
    if explicit:
        return explicit
    default = os.path.join(ROOT, ".build", "release", "cast-serve")
    if os.path.exists(default):
        return default
    candidates = glob.glob(os.path.join(ROOT, ".build*", "release", "cast-serve"))
    if not candidates:
        raise unittest.SkipTest("cast-serve is not built; run `swift build -c release` (or set CASTSERVE_BIN)")
    return max(candidates, key=os.path.getmtime)


def require_model():
    if not os.path.exists(MODEL):
        raise unittest.SkipTest(f"model {MODEL} is missing; run `make model`")


COST_CACHE_DIR = tempfile.mkdtemp(prefix="castserve-e2e-cost-")
# A synthetic step-cost curve where extra rows are nearly free: drafting pays on any host.
FIXED_COST_MODEL = os.path.join(ROOT, "tests", "fixtures", "cost_model_rows_free.json")


class Server:
    """One cast-serve process. `start()` returns once GET /health answers 200."""

    def __init__(self, slots=4, env=None, args=(), context_length=1024, tls=None, cost_model=FIXED_COST_MODEL,
                 launcher=()):
        """`tls`: (certificate path, key path) to serve HTTPS; clients then verify against that certificate.
        `cost_model`: the fixed step-cost model file served with; None measures one at start-up (or
        takes it from the cost cache), as a production server does. `launcher`: a command that runs
        the server (e.g. an emulator of another CPU)."""
        self.launcher = list(launcher)
        self.slots = slots
        self.cost_model = cost_model
        self.tls = tls
        self.extra_env = dict(env or {})
        self.args = list(args)
        self.context_length = context_length
        self.proc = None
        self.port = None
        self.log = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, wait_ready=True):
        require_model()
        env = {k: v for k, v in os.environ.items() if not k.startswith("CASTSERVE_")}
        env["CASTSERVE_CONTEXT_LENGTH"] = str(self.context_length)
        # One compute thread: a spinning pool on an oversubscribed 2-core machine is erratic.
        env["CASTSERVE_THREADS"] = os.environ.get("CASTSERVE_E2E_THREADS", "1")
        # Measured step-cost tables go to one temporary directory per test run, not ~/.cache.
        env["CASTSERVE_COST_CACHE_DIR"] = COST_CACHE_DIR
        if os.environ.get("CASTSERVE_E2E_KERNELS"):
            env["CASTSERVE_KERNELS"] = os.environ["CASTSERVE_E2E_KERNELS"]
        env.update(self.extra_env)
        config = os.path.join(ROOT, "config.json")
        cmd = self.launcher + [binary_path(), "serve", "--port", "0", "--config", config, "--model", MODEL,
               "--slots", str(self.slots)] + self.args
        if self.cost_model is not None:
            cmd += ["--cost-model", self.cost_model]
        if self.tls:
            cmd += ["--tls-cert", self.tls[0], "--tls-key", self.tls[1]]
        self.log = tempfile.NamedTemporaryFile(prefix="castserve-e2e-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=self.log,
                                     stdin=subprocess.DEVNULL)
        line = self._first_line(timeout=30 if not self.launcher else 180)
        prefix = f"listening on {self.scheme}://127.0.0.1:"
        if not line.startswith(prefix):
            self.kill()
            raise AssertionError(f"unexpected first stdout line {line!r}; log:\n{self.log_text()}")
        self.port = int(line[len(prefix):].strip())
        if wait_ready:
            # A measured cost model is measured while /health answers 503: on a slow host with
            # CPU-bound neighbours that takes minutes, and the wait is a bound, not a speed test.
            # An emulated CPU (`launcher`) loads tens of times slower: the same bound, 4x.
            slow = 4 if self.launcher else 1
            self.wait_ready(slow * (START_TIMEOUT if self.cost_model is not None else 4 * START_TIMEOUT))
        return self

    def _first_line(self, timeout):
        deadline = time.monotonic() + timeout
        data = b""
        fd = self.proc.stdout.fileno()
        while b"\n" not in data:
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None and not select.select([fd], [], [], 0)[0]:
                self.kill()
                raise AssertionError(f"cast-serve printed no address (exit {self.proc.returncode}); log:\n{self.log_text()}")
            ready, _, _ = select.select([fd], [], [], min(left, 0.5))
            if ready:
                chunk = os.read(fd, 4096)
                if not chunk:
                    continue
                data += chunk
        return data.split(b"\n", 1)[0].decode()

    def wait_ready(self, timeout=START_TIMEOUT):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"cast-serve exited with {self.proc.returncode} while loading; log:\n{self.log_text()}")
            try:
                status, _, _ = self.request("GET", "/health", timeout=5)
                last = status
                if status == 200:
                    return
            except OSError as e:
                last = e
            time.sleep(0.1)
        self.kill()
        raise AssertionError(f"GET /health not 200 within {timeout} s (last: {last}); log:\n{self.log_text()}")

    def stop(self, timeout=15):
        """SIGTERM, then SIGKILL if it does not exit in time. Returns the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._close_files()
        return self.proc.returncode

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._close_files()

    def _close_files(self):
        if self.proc is not None and self.proc.stdout and not self.proc.stdout.closed:
            self.proc.stdout.close()
        if self.log is not None and not self.log.closed:
            self.log.close()

    def log_text(self, tail=4000):
        try:
            with open(self.log.name, "rb") as f:
                return f.read().decode(errors="replace")[-tail:]
        except OSError:
            return ""

    # -- clients ---------------------------------------------------------------------------

    @property
    def scheme(self):
        return "https" if self.tls else "http"

    @property
    def base_url(self):
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def ssl_context(self):
        """A client TLS context that trusts only this server's certificate (TLS servers only)."""
        return ssl.create_default_context(cafile=self.tls[0])

    def openai(self, api_key="unused", **kwargs):
        import openai
        return openai.OpenAI(base_url=self.base_url + "/v1", api_key=api_key, timeout=REQUEST_TIMEOUT, max_retries=0, **kwargs)

    def request(self, method, path, body=None, headers=None, timeout=REQUEST_TIMEOUT):
        """One request on a fresh connection. Returns (status, headers dict lower-cased, body bytes)."""
        if self.tls:
            conn = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=timeout, context=self.ssl_context())
        else:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            h = dict(headers or {})
            data = None
            if body is not None:
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                h.setdefault("Content-Type", "application/json")
            conn.request(method, path, body=data, headers=h)
            r = conn.getresponse()
            payload = r.read()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, payload
        finally:
            conn.close()

    def json(self, method, path, body=None, headers=None, timeout=REQUEST_TIMEOUT):
        status, h, payload = self.request(method, path, body, headers, timeout)
        return status, json.loads(payload) if payload else None

    def metrics(self):
        from prometheus_client.parser import text_string_to_metric_families
        status, _, payload = self.request("GET", "/metrics", timeout=10)
        assert status == 200, status
        return {f.name: f for f in text_string_to_metric_families(payload.decode())}

    def connect(self, timeout=10):
        s = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        s.settimeout(timeout)
        return s


def metric_value(families, name, sample_name=None, **labels):
    """The value of one sample (summed over samples matching `labels`), 0 when absent."""
    family = families.get(name)
    if family is None:
        return 0.0
    total = 0.0
    for s in family.samples:
        if sample_name is not None and s.name != sample_name:
            continue
        if all(s.labels.get(k) == v for k, v in labels.items()):
            total += s.value
    return total


def read_until_closed(sock, limit=1 << 20, timeout=10):
    """Reads until EOF (or `limit` bytes), bounded by `timeout` seconds in total."""
    deadline = time.monotonic() + timeout
    data = b""
    while len(data) < limit:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"connection still open after {timeout} s; got {data[:200]!r}")
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return data


def read_response_head(sock, timeout=10):
    """Reads a response's status line and headers. Returns (status, headers lower-cased, rest bytes)."""
    deadline = time.monotonic() + timeout
    data = b""
    while b"\r\n\r\n" not in data:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no response head within {timeout} s; got {data[:200]!r}")
        sock.settimeout(left)
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"connection closed before a response head; got {data[:200]!r}")
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return status, headers, rest


def curl(*args, timeout=60):
    """Runs curl with `args`; returns the CompletedProcess (stdout/stderr as text)."""
    return subprocess.run(["curl", "-sS", "--max-time", str(int(timeout)), *args], capture_output=True, text=True,
                          timeout=timeout + 10)
