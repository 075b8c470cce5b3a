"""HTTP transport against one shared server: curl (100-continue, chunked upload, HTTP/1.0,
keep-alive reuse) and raw sockets (404, 405, mid-stream disconnect)."""

import json
import time
import unittest

from castserve_harness import MODEL_ID, Server, curl, metric_value, read_response_head, read_until_closed

server = None


def setUpModule():
    global server
    server = Server(slots=2).start()


def tearDownModule():
    if server is not None:
        server.stop()


class CurlTests(unittest.TestCase):
    def test_expect_100_continue(self):
        text = "lorem ipsum " * 150
        body = json.dumps({"content": text})
        self.assertGreater(len(body), 1024)
        # curl 7.x adds Expect: 100-continue by itself only above 1 MiB (older ones above 1 KiB): ask for it.
        r = curl("-v", "-X", "POST", "-H", "Content-Type: application/json", "-H", "Expect: 100-continue",
                 "--expect100-timeout", "20", "--data-binary", body, server.base_url + "/tokenize")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("Expect: 100-continue", r.stderr)
        self.assertIn("HTTP/1.1 100 Continue", r.stderr)
        self.assertIn("HTTP/1.1 200", r.stderr)
        tokens = json.loads(r.stdout)["tokens"]
        self.assertGreaterEqual(len(tokens), 300)

    def test_chunked_upload(self):
        body = json.dumps({"model": MODEL_ID, "prompt": "Once upon a time", "max_tokens": 4, "temperature": 0})
        r = curl("-v", "-X", "POST", "-H", "Content-Type: application/json", "-H", "Transfer-Encoding: chunked",
                 "--data-binary", body, server.base_url + "/v1/completions")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("Transfer-Encoding: chunked", r.stderr)
        self.assertNotIn("Content-Length:", r.stderr.split("HTTP/1.1 200")[0])
        out = json.loads(r.stdout)
        self.assertEqual(out["usage"]["completion_tokens"], 4)
        self.assertTrue(out["choices"][0]["text"])

    def test_http10_streaming_is_close_delimited(self):
        body = json.dumps({"model": MODEL_ID, "prompt": "Once upon a time", "max_tokens": 6, "temperature": 0, "stream": True})
        r = curl("--http1.0", "-i", "-N", "-X", "POST", "-H", "Content-Type: application/json", "--data-binary", body,
                 server.base_url + "/v1/completions")
        self.assertEqual(r.returncode, 0, r.stderr)
        head, _, payload = r.stdout.partition("\n\n")  # text mode: CRLF reads as LF
        self.assertTrue(head.startswith("HTTP/1.") and " 200" in head.splitlines()[0], head)
        self.assertNotIn("transfer-encoding", head.lower())
        self.assertIn("text/event-stream", head.lower())
        events = [line[len("data: "):] for line in payload.splitlines() if line.startswith("data: ")]
        self.assertEqual(events[-1], "[DONE]")
        text = "".join(json.loads(e)["choices"][0]["text"] for e in events[:-1] if json.loads(e)["choices"])
        whole = server.json("POST", "/v1/completions", {"model": MODEL_ID, "prompt": "Once upon a time", "max_tokens": 6,
                                                        "temperature": 0})[1]
        self.assertEqual(text, whole["choices"][0]["text"])

    def test_keep_alive_reuse(self):
        r = curl("-v", server.base_url + "/health", server.base_url + "/v1/models")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("Re-using existing connection", r.stderr)
        self.assertEqual(r.stderr.count("Connected to"), 1, r.stderr)
        self.assertIn('"status":"ok"', r.stdout.replace(" ", ""))
        self.assertIn(MODEL_ID, r.stdout)


class RequestLogTests(unittest.TestCase):
    def test_request_id_echoed_and_logged(self):
        status, headers, body = server.request("POST", "/v1/completions", {"model": MODEL_ID, "prompt": "Hello", "max_tokens": 2},
                                               headers={"X-Request-Id": "e2e-log-42"})
        self.assertEqual(status, 200)
        self.assertEqual(headers.get("x-request-id"), "e2e-log-42")
        self.assertEqual(json.loads(body)["id"], "cmpl-e2e-log-42")
        deadline = time.monotonic() + 5
        while "request_id=e2e-log-42" not in server.log_text(tail=200_000) and time.monotonic() < deadline:
            time.sleep(0.05)
        lines = [l for l in server.log_text(tail=200_000).splitlines() if "request_id=e2e-log-42" in l]
        self.assertEqual(len(lines), 1, lines)
        for field in ("route=/v1/completions", "status=200", "completion_tokens=2", "duration_ms="):
            self.assertIn(field, lines[0])


class RawSocketTests(unittest.TestCase):
    def raw(self, data, timeout=10):
        with server.connect(timeout) as s:
            s.sendall(data)
            status, headers, rest = read_response_head(s, timeout)
            length = int(headers.get("content-length", "0"))
            while len(rest) < length:
                chunk = s.recv(65536)
                if not chunk:
                    break
                rest += chunk
            return status, headers, rest

    def test_unknown_route_404_json(self):
        status, headers, body = self.raw(b"GET /v2/nothing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        self.assertEqual(status, 404)
        self.assertTrue(headers["content-type"].startswith("application/json"))
        error = json.loads(body)["error"]
        self.assertIn("/v2/nothing", error["message"])
        self.assertEqual(error["type"], "invalid_request_error")

    def test_wrong_method_405(self):
        status, headers, body = self.raw(b"GET /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        self.assertEqual(status, 405)
        self.assertIn("POST", headers.get("allow", ""))
        self.assertEqual(json.loads(body)["error"]["code"], "method_not_allowed")

    def test_mid_stream_disconnect(self):
        body = json.dumps({"model": MODEL_ID, "prompt": "Write a very long essay about the history of Rome.",
                           "max_tokens": 800, "temperature": 0, "stream": True}).encode()
        request = (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                   b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        s = server.connect(30)
        try:
            s.sendall(request)
            status, headers, rest = read_response_head(s, 30)
            self.assertEqual(status, 200)
            deadline = time.monotonic() + 30
            while rest.count(b"data: ") < 3 and time.monotonic() < deadline:
                rest += s.recv(4096)
            self.assertGreaterEqual(rest.count(b"data: "), 3)
            running = metric_value(server.metrics(), "castserve_requests_running")
            self.assertEqual(running, 1)
        finally:
            s.close()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            running = metric_value(server.metrics(), "castserve_requests_running")
            if running == 0:
                break
            time.sleep(0.1)
        self.assertEqual(running, 0, "the abandoned generation still runs")
        status, health = server.json("GET", "/health", timeout=5)
        self.assertEqual((status, health["running"]), (200, 0))
        r = server.json("POST", "/v1/completions", {"model": MODEL_ID, "prompt": "Hi", "max_tokens": 2}, timeout=30)
        self.assertEqual(r[0], 200)

    def test_disconnect_during_non_streaming_request(self):
        body = json.dumps({"model": MODEL_ID, "prompt": "Once upon a time, in a land far away,", "max_tokens": 800,
                           "temperature": 0}).encode()
        s = server.connect(30)
        try:
            s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
            deadline = time.monotonic() + 20
            while metric_value(server.metrics(), "castserve_requests_running") < 1:
                self.assertLess(time.monotonic(), deadline, "the generation never started")
                time.sleep(0.02)
        finally:
            s.close()
        deadline = time.monotonic() + 5
        while metric_value(server.metrics(), "castserve_requests_running") != 0:
            self.assertLess(time.monotonic(), deadline, "the abandoned generation still runs")
            time.sleep(0.1)
        status, health = server.json("GET", "/health", timeout=5)
        self.assertEqual((status, health["running"]), (200, 0))


if __name__ == "__main__":
    unittest.main()
