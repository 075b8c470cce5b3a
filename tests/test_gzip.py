"""gzip both ways against one server: compressed responses above 1 KiB for clients that accept
gzip (curl --compressed, raw Accept-Encoding with q-values, /metrics), never for streams; gzip
request bodies inflated, a zip bomb refused with 413 and a JSON error, other codings 415."""

import gzip
import http.client
import json
import tempfile
import unittest

from castserve_harness import MODEL_ID, Server, curl

BODY_LIMIT = 64 * 1024
server = None


def setUpModule():
    global server
    server = Server(slots=2, env={"CASTSERVE_MAX_BODY_BYTES": str(BODY_LIMIT)}).start()


def tearDownModule():
    if server is not None:
        server.stop()


def raw_request(method, path, body=None, headers=None, timeout=60):
    """One request whose Accept-Encoding and Content-Encoding are exactly `headers`; the body stays as sent."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=timeout)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for k, v in (headers or {}).items():
            conn.putheader(k, v)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


LONG_TEXT = json.dumps({"content": "The quick brown fox jumps over the lazy dog. " * 60})


class ResponseCompressionTests(unittest.TestCase):
    def test_curl_compressed(self):
        r = curl("--compressed", "-D", "-", "-H", "Content-Type: application/json", "--data-binary", LONG_TEXT,
                 server.base_url + "/tokenize")
        self.assertEqual(r.returncode, 0, r.stderr)
        head, _, body = r.stdout.partition("\n\n")  # text mode: CRLF reads as LF
        self.assertIn("content-encoding: gzip", head.lower())
        self.assertIn("vary: accept-encoding", head.lower())
        self.assertGreater(len(json.loads(body)["tokens"]), 300)

    def test_accept_encoding_and_q_zero(self):
        status, h, body = raw_request("POST", "/tokenize", LONG_TEXT.encode(),
                                      {"Content-Type": "application/json", "Accept-Encoding": "gzip, deflate"})
        self.assertEqual(status, 200)
        self.assertEqual(h.get("content-encoding"), "gzip")
        self.assertEqual(body[:2], b"\x1f\x8b")
        plain = gzip.decompress(body)
        self.assertEqual(int(h["content-length"]), len(body))
        self.assertLess(len(body), len(plain))
        for refusal in ("gzip;q=0", "identity", "*;q=0", "br"):
            status, h, body = raw_request("POST", "/tokenize", LONG_TEXT.encode(),
                                          {"Content-Type": "application/json", "Accept-Encoding": refusal})
            self.assertEqual(status, 200)
            self.assertNotIn("content-encoding", h, refusal)
            self.assertEqual(body, plain, refusal)
        status, h, body = raw_request("POST", "/tokenize", LONG_TEXT.encode(), {"Content-Type": "application/json"})
        self.assertNotIn("content-encoding", h)
        # Small responses stay plain even when gzip is welcome.
        status, h, body = raw_request("GET", "/health", None, {"Accept-Encoding": "gzip"})
        self.assertEqual(status, 200)
        self.assertNotIn("content-encoding", h)
        self.assertEqual(json.loads(body)["status"], "ok")

    def test_metrics_are_gzipped(self):
        status, h, body = raw_request("GET", "/metrics", None, {"Accept-Encoding": "gzip"})
        self.assertEqual(status, 200)
        self.assertEqual(h.get("content-encoding"), "gzip")
        self.assertIn("accept-encoding", h.get("vary", "").lower())
        self.assertIn(b"castserve_requests_running", gzip.decompress(body))

    def test_streams_are_not_compressed(self):
        body = json.dumps({"model": MODEL_ID, "prompt": "Once upon a time", "max_tokens": 5, "temperature": 0,
                           "stream": True}).encode()
        status, h, payload = raw_request("POST", "/v1/completions", body,
                                         {"Content-Type": "application/json", "Accept-Encoding": "gzip"})
        self.assertEqual(status, 200)
        self.assertNotIn("content-encoding", h)
        self.assertIn(b"data: [DONE]", payload)


class RequestDecodingTests(unittest.TestCase):
    def test_gzip_request_body(self):
        body = json.dumps({"model": MODEL_ID, "prompt": "Once upon a time", "max_tokens": 4, "temperature": 0}).encode()
        status, _, payload = raw_request("POST", "/v1/completions", gzip.compress(body),
                                         {"Content-Type": "application/json", "Content-Encoding": "gzip"})
        self.assertEqual(status, 200, payload)
        self.assertEqual(json.loads(payload)["usage"]["completion_tokens"], 4)
        with tempfile.NamedTemporaryFile(suffix=".json.gz") as f:
            f.write(gzip.compress(LONG_TEXT.encode()))
            f.flush()
            r = curl("-H", "Content-Type: application/json", "-H", "Content-Encoding: gzip", "--data-binary", "@" + f.name,
                     server.base_url + "/tokenize")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertGreater(len(json.loads(r.stdout)["tokens"]), 300)

    def test_zip_bomb_gets_413(self):
        # Under the body limit on the wire (~60 KB), 60 MiB inflated: refused once inflating passes the limit.
        bomb = gzip.compress(b"\0" * (60 * 1024 * 1024), compresslevel=9)
        self.assertLess(len(bomb), BODY_LIMIT)
        status, h, payload = raw_request("POST", "/v1/completions", bomb,
                                         {"Content-Type": "application/json", "Content-Encoding": "gzip"})
        self.assertEqual(status, 413, payload[:200])
        self.assertEqual(h.get("content-type"), "application/json")
        error = json.loads(payload)["error"]
        self.assertEqual(error["code"], "request_too_large")
        self.assertIn(str(BODY_LIMIT), error["message"])
        self.assertIn("inflates", error["message"])
        self.assertEqual(server.request("GET", "/health")[0], 200)

    def test_unsupported_content_encoding_gets_415(self):
        status, h, payload = raw_request("POST", "/v1/completions", b"{}",
                                         {"Content-Type": "application/json", "Content-Encoding": "br"})
        self.assertEqual(status, 415)
        error = json.loads(payload)["error"]
        self.assertEqual(error["code"], "unsupported_content_encoding")
        self.assertIn("gzip", error["message"])

    def test_corrupt_gzip_body_gets_400(self):
        status, _, payload = raw_request("POST", "/v1/completions", b"definitely not gzip",
                                         {"Content-Type": "application/json", "Content-Encoding": "gzip"})
        self.assertEqual(status, 400)
        self.assertIn("not valid gzip", json.loads(payload)["error"]["message"])


if __name__ == "__main__":
    unittest.main()
