"""HTTPS: a self-signed certificate made with the openssl CLI, curl --cacert (keep-alive, SSE
streaming), the openai client over https, TLS 1.1 refused, plain HTTP on the TLS port answered 400
and closed, stalled handshakes that neither block other clients nor outlive their timeout, start-up
errors for bad certificate files, and the handshake time."""

import json
import os
import shutil
import socket
import ssl
import statistics
import subprocess
import tempfile
import time
import unittest
import warnings

from castserve_harness import MODEL, MODEL_ID, ROOT, Server, binary_path, curl, read_response_head, read_until_closed, require_model

HANDSHAKE_TIMEOUT = 2
server = None
tmpdir = None
cert = key = other_key = None


def openssl(*args):
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


def setUpModule():
    global server, tmpdir, cert, key, other_key
    if shutil.which("openssl") is None:
        raise unittest.SkipTest("the openssl CLI is missing (apt-get install openssl; `make deps` installs it)")
    tmpdir = tempfile.mkdtemp(prefix="castserve-tls-")
    cert, key, other_key = (os.path.join(tmpdir, n) for n in ("cert.pem", "key.pem", "other-key.pem"))
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost",
            "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", key, "-out", cert)
    openssl("genpkey", "-algorithm", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-out", other_key)
    server = Server(slots=2, tls=(cert, key),
                    env={"CASTSERVE_TLS_HANDSHAKE_TIMEOUT_SECONDS": str(HANDSHAKE_TIMEOUT)}).start()


def tearDownModule():
    if server is not None:
        server.stop()
    if tmpdir is not None:
        shutil.rmtree(tmpdir, ignore_errors=True)


def https_health(timeout=10):
    status, _, body = server.request("GET", "/health", timeout=timeout)
    return status, json.loads(body)


class HTTPSClientTests(unittest.TestCase):
    def test_curl_keep_alive_and_streaming(self):
        url = server.base_url
        r = curl("--cacert", cert, "-w", "\\nconnects=%{num_connects} version=%{ssl_verify_result}\\n",
                 url + "/health", url + "/v1/models")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("connects=1", r.stdout)
        self.assertIn("connects=0", r.stdout, "the second request did not reuse the TLS connection")
        self.assertIn(MODEL_ID, r.stdout)
        body = json.dumps({"model": MODEL_ID, "messages": [{"role": "user", "content": "Count to five."}],
                           "max_tokens": 12, "temperature": 0, "stream": True})
        r = curl("--cacert", cert, "-N", "-H", "Content-Type: application/json", "--data-binary", body,
                 url + "/v1/chat/completions")
        self.assertEqual(r.returncode, 0, r.stderr)
        events = [line[len("data: "):] for line in r.stdout.splitlines() if line.startswith("data: ")]
        self.assertEqual(events[-1], "[DONE]")
        text = "".join(json.loads(e)["choices"][0]["delta"].get("content", "") for e in events[:-1]
                       if json.loads(e)["choices"])
        self.assertTrue(text)
        # The certificate is self-signed: without --cacert curl must refuse it.
        self.assertNotEqual(curl(url + "/health").returncode, 0)

    def test_openai_client_over_https(self):
        try:
            import httpx2 as httpx  # what newer openai releases use
        except ImportError:
            import httpx
        with httpx.Client(verify=server.ssl_context(), timeout=60) as http_client:
            client = server.openai(http_client=http_client)
            plain = client.chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": "Say hi."}],
                                                   max_tokens=8, temperature=0)
            self.assertEqual(plain.usage.completion_tokens, 8)
            chunks = list(client.chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": "Say hi."}],
                                                         max_tokens=8, temperature=0, stream=True))
            streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            self.assertEqual(streamed, plain.choices[0].message.content)
            self.assertIn(MODEL_ID, [m.id for m in client.models.list().data])


class HandshakeTests(unittest.TestCase):
    def test_tls11_client_is_refused_by_the_server(self):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(cert)
        try:
            # The local OpenSSL must be willing to offer TLS 1.1 for the test to show the server's refusal.
            ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                ctx.minimum_version = ssl.TLSVersion.TLSv1_1
                ctx.maximum_version = ssl.TLSVersion.TLSv1_1
        except (ssl.SSLError, ValueError) as e:
            self.skipTest(f"this Python/OpenSSL cannot offer TLS 1.1: {e}")
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:
            with self.assertRaises(ssl.SSLError) as cm:
                ctx.wrap_socket(raw, server_hostname="localhost")
        message = str(cm.exception).lower()
        if "no protocols available" in message or "no_protocols_available" in message:
            self.skipTest(f"the local OpenSSL refused to offer TLS 1.1 itself: {cm.exception}")
        # The server's alert, not a client-side refusal.
        self.assertIn("alert protocol version", message.replace("_", " "))
        r = curl("--tlsv1.1", "--tls-max", "1.1", "--cacert", cert, server.base_url + "/health")
        self.assertNotEqual(r.returncode, 0, r.stdout)
        self.assertNotIn("status", r.stdout)
        # TLS 1.2 is accepted.
        ctx12 = server.ssl_context()
        ctx12.maximum_version = ssl.TLSVersion.TLSv1_2
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:
            with ctx12.wrap_socket(raw, server_hostname="localhost") as tls:
                self.assertEqual(tls.version(), "TLSv1.2")
        self.assertEqual(https_health()[0], 200)

    def test_plain_http_on_the_tls_port_gets_400_and_close(self):
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            status, headers, rest = read_response_head(s)
            self.assertEqual(status, 400)
            self.assertEqual(headers.get("connection"), "close")
            body = rest + read_until_closed(s, timeout=5)  # and the server closes the connection
            self.assertIn(b"this port speaks HTTPS", body)
        self.assertEqual(https_health()[0], 200)

    def test_stalled_handshakes_do_not_block_other_clients(self):
        stalled = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(5)]
        try:
            stalled[0].sendall(b"\x16\x03\x01\x00\xc8")  # a record header whose 200 bytes never come
            time.sleep(0.2)
            started = time.monotonic()
            status, health = https_health(timeout=5)
            self.assertEqual(status, 200, health)
            self.assertLess(time.monotonic() - started, 1.5, "stalled handshakes delayed another client")
            # Each stalled connection is cut at the handshake timeout.
            for s in stalled:
                self.assertEqual(read_until_closed(s, timeout=HANDSHAKE_TIMEOUT + 5), b"")
        finally:
            for s in stalled:
                s.close()
        self.assertEqual(https_health()[0], 200)

    def test_handshake_time(self):
        ctx = server.ssl_context()
        times = []
        for _ in range(20):
            with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:
                started = time.perf_counter()
                with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                    times.append(time.perf_counter() - started)
                    self.assertEqual(tls.version(), "TLSv1.3")
        median_ms = statistics.median(times) * 1000
        print(f"\nTLS 1.3 handshake (RSA-2048 certificate, loopback, Python client): median {median_ms:.2f} ms, "
              f"max {max(times) * 1000:.2f} ms over {len(times)}", flush=True)
        self.assertLess(median_ms, 250)


class LimitsOverTLSTests(unittest.TestCase):
    def test_oversized_header_gets_431_over_https(self):
        import http.client
        conn = http.client.HTTPSConnection("127.0.0.1", server.port, timeout=20, context=server.ssl_context())
        try:
            conn.request("GET", "/health", headers={"X-Big": "h" * 70000})
            r = conn.getresponse()
            self.assertEqual(r.status, 431)
            self.assertEqual(r.getheader("Connection"), "close")
            self.assertIn("headers_too_large", r.read().decode())
        finally:
            conn.close()
        self.assertEqual(https_health()[0], 200)


class DrainOverTLSTests(unittest.TestCase):
    def test_sigterm_lets_a_https_stream_finish(self):
        import signal
        own = Server(slots=2, tls=(cert, key)).start()
        try:
            body = json.dumps({"model": MODEL_ID, "prompt": "Once upon a time", "max_tokens": 120, "temperature": 0,
                               "stream": True, "stream_options": {"include_usage": True}})
            raw = socket.create_connection(("127.0.0.1", own.port), timeout=60)
            with own.ssl_context().wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                tls.sendall(f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                            f"Content-Length: {len(body)}\r\n\r\n{body}".encode())
                payload = b""
                while b"data: " not in payload:  # generation has started
                    chunk = tls.recv(65536)
                    self.assertTrue(chunk, "closed before the first event")
                    payload += chunk
                own.proc.send_signal(signal.SIGTERM)
                payload += read_until_closed(tls, timeout=60)  # the server closes once the stream is done
            self.assertTrue(payload.startswith(b"HTTP/1.1 200"), payload[:100])
            self.assertTrue(payload.endswith(b"0\r\n\r\n"), "the chunked stream was cut")
            self.assertIn(b"data: [DONE]", payload)
            self.assertIn(b'"completion_tokens":120', payload.replace(b" ", b""))
            self.assertEqual(own.proc.wait(timeout=30), 0, own.log_text())
        finally:
            own.kill()


class StartupErrorTests(unittest.TestCase):
    def start_failure(self, *args):
        require_model()
        env = {k: v for k, v in os.environ.items() if not k.startswith("CASTSERVE_")}
        r = subprocess.run([binary_path(), "serve", "--port", "0", "--model", MODEL, *args], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        self.assertNotEqual(r.returncode, 0, r.stdout)
        self.assertNotIn("listening on", r.stdout)
        return r.stderr

    def test_missing_certificate_names_the_file(self):
        missing = os.path.join(tmpdir, "missing.pem")
        err = self.start_failure("--tls-cert", missing, "--tls-key", key)
        self.assertIn(missing, err)
        self.assertIn("cannot be read", err)
        self.assertIn("tls_cert", err)

    def test_mismatched_key_names_both_files(self):
        err = self.start_failure("--tls-cert", cert, "--tls-key", other_key)
        self.assertIn("does not belong to certificate", err)
        self.assertIn(other_key, err)
        self.assertIn(cert, err)

    def test_certificate_without_key_is_refused(self):
        err = self.start_failure("--tls-cert", cert)
        self.assertIn("tls_key", err)


if __name__ == "__main__":
    unittest.main()
