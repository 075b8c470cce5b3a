"""1,000 idle keep-alive connections, plain and TLS: half have sent a request and read its response,
half have only connected (or only shaken hands). While they are held, requests are served through
new connections and through some of the idle ones, every held connection stays open, and the
server's thread count and resident memory stay small (figures printed)."""

import json
import os
import random
import resource
import select
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
import unittest

from castserve_harness import MODEL_ID, Server, read_response_head

IDLE = 1000


def setUpModule():
    # The client holds IDLE sockets itself (and the server, its child, inherits the raised limit).
    needed = IDLE + 256
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(max(needed, soft), hard)
        if target < needed:
            raise unittest.SkipTest(f"the open-file hard limit is {hard}, below the {needed} this test needs; "
                                    "raise it (ulimit -Hn) to run it")
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as e:
            raise unittest.SkipTest(f"the OS refused to raise the open-file limit to {target}: {e}")


def proc_status(pid):
    """(resident KiB, threads) of a process from /proc."""
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            name, _, value = line.partition(":")
            fields[name] = value.strip()
    return int(fields["VmRSS"].split()[0]), int(fields["Threads"])


def read_response(sock, timeout=20):
    """Reads one Content-Length response; returns (status, body)."""
    status, headers, rest = read_response_head(sock, timeout=timeout)
    length = int(headers.get("content-length", "0"))
    deadline = time.monotonic() + timeout
    while len(rest) < length:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("response body incomplete")
        sock.settimeout(left)
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed mid-body")
        rest += chunk
    return status, rest[:length]


HEALTH = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"


class IdleConnectionsBase:
    tls = None

    def open_connection(self):
        raise NotImplementedError

    def run_idle_test(self, label):
        server = self.server
        rss0, threads0 = proc_status(server.proc.pid)
        random.seed(7)
        held = []
        started = time.monotonic()
        try:
            for i in range(IDLE):
                s = self.open_connection()
                if i % 2 == 0:
                    s.sendall(HEALTH)
                    status, body = read_response(s)
                    self.assertEqual(status, 200, body)
                held.append(s)
            opened_s = time.monotonic() - started
            time.sleep(0.5)  # serving threads that parked their connection have exited
            rss1, threads1 = proc_status(server.proc.pid)

            # Serve meanwhile: new connections, including generations...
            served = 0
            t0 = time.monotonic()
            for i in range(20):
                status, result = server.json("GET", "/health", timeout=20)
                self.assertEqual(status, 200, result)
                served += 1
            for i in range(4):
                status, result = server.json("POST", "/v1/completions", {"model": MODEL_ID, "prompt": "Hello",
                                                                           "max_tokens": 4, "temperature": 0}, timeout=60)
                self.assertEqual(status, 200, result)
                self.assertEqual(result["usage"]["completion_tokens"], 4)
                served += 1
            # ...and through idle ones, both those that already served a request and those that never sent one.
            for i in random.sample(range(IDLE), 100):
                held[i].sendall(HEALTH)
                status, body = read_response(held[i])
                self.assertEqual(status, 200, body)
                self.assertEqual(json.loads(body)["status"], "ok")
                served += 1
            serve_s = time.monotonic() - t0
            rss2, threads2 = proc_status(server.proc.pid)

            # Every held connection is still open: none is readable (a close would read as EOF).
            poller = select.poll()
            for s in held:
                poller.register(s.fileno(), select.POLLIN | select.POLLHUP | select.POLLERR)
            by_fd = {s.fileno(): s for s in held}
            closed = 0
            for fd, _ in poller.poll(100):
                # A TLS connection is readable for the session tickets the server sent after the
                # handshake; reading them yields no data, and an open connection then wants more.
                s = by_fd[fd]
                s.setblocking(False)
                try:
                    data = s.recv(1)
                    closed += 1 if data == b"" else 0
                    self.assertEqual(data, b"", "an idle connection received unrequested data")
                except (ssl.SSLWantReadError, BlockingIOError):
                    pass
            self.assertEqual(closed, 0, f"{closed} held connections were closed")
        finally:
            for s in held:
                s.close()
        per_connection_kib = (rss1 - rss0) / IDLE
        print(f"\n{label}: {IDLE} idle keep-alive connections opened in {opened_s:.1f} s; server RSS "
              f"{rss0 / 1024:.1f} MiB -> {rss1 / 1024:.1f} MiB ({per_connection_kib:.1f} KiB per connection), "
              f"threads {threads0} -> {threads1}; {served} requests served meanwhile in {serve_s:.2f} s "
              f"(RSS then {rss2 / 1024:.1f} MiB, threads {threads2})", flush=True)
        self.assertLess(threads1 - threads0, 30, "idle connections hold threads")
        self.assertLess(rss1 - rss0, 100 * 1024, "idle connections cost more than 100 KiB each")


class PlainIdleConnectionsTests(IdleConnectionsBase, unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = Server(slots=2, env={"CASTSERVE_MAX_CONNECTIONS": "1500", "CASTSERVE_IDLE_TIMEOUT_SECONDS": "300",
                                          "CASTSERVE_HEADER_TIMEOUT_SECONDS": "300"}).start()

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def open_connection(self):
        return self.server.connect(timeout=20)

    def test_thousand_idle_connections(self):
        self.run_idle_test("plain HTTP")


class TLSIdleConnectionsTests(IdleConnectionsBase, unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if shutil.which("openssl") is None:
            raise unittest.SkipTest("the openssl CLI is missing (apt-get install openssl; `make deps` installs it)")
        cls.tmpdir = tempfile.mkdtemp(prefix="castserve-conn-tls-")
        cert, key = os.path.join(cls.tmpdir, "cert.pem"), os.path.join(cls.tmpdir, "key.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                        "-days", "2", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1",
                        "-keyout", key, "-out", cert], check=True, capture_output=True, timeout=60)
        cls.server = Server(slots=2, tls=(cert, key),
                            env={"CASTSERVE_MAX_CONNECTIONS": "1500", "CASTSERVE_IDLE_TIMEOUT_SECONDS": "300",
                                 "CASTSERVE_HEADER_TIMEOUT_SECONDS": "300"}).start()
        cls.context = cls.server.ssl_context()

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()
        shutil.rmtree(cls.tmpdir, ignore_errors=True)

    def open_connection(self):
        raw = self.server.connect(timeout=20)
        return self.context.wrap_socket(raw, server_hostname="127.0.0.1")

    def test_thousand_idle_tls_connections(self):
        self.run_idle_test("TLS 1.3 (P-256 certificate)")


if __name__ == "__main__":
    unittest.main()
