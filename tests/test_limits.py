"""Request limits against one shared server with small limits: 431 for an oversized header block,
413 for an oversized body, a trickling client cut off by the header timeout while others are
served, and 400 context_length_exceeded for a prompt longer than the context."""

import json
import threading
import time
import unittest

import openai

from castserve_harness import MODEL_ID, Server, read_response_head, read_until_closed

server = None
CONTEXT = 64


def setUpModule():
    global server
    server = Server(slots=2, context_length=CONTEXT,
                    env={"CASTSERVE_MAX_BODY_BYTES": "2048", "CASTSERVE_HEADER_TIMEOUT_SECONDS": "1"}).start()


def tearDownModule():
    if server is not None:
        server.stop()


class LimitTests(unittest.TestCase):
    def test_oversized_header_431(self):
        with server.connect() as s:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n")
            status, headers, _ = read_response_head(s)
            self.assertEqual(status, 431)
            self.assertEqual(headers.get("connection"), "close")
        self.assertEqual(server.request("GET", "/health", timeout=5)[0], 200)

    def test_oversized_body_413(self):
        body = json.dumps({"model": MODEL_ID, "prompt": "x" * 4000}).encode()
        with server.connect() as s:
            s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n")
            # The limit is known from Content-Length: the answer must not wait for the body.
            status, headers, _ = read_response_head(s)
            self.assertEqual(status, 413)
        with server.connect() as s:
            chunk = b"x" * 1000
            s.sendall(b"POST /tokenize HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
            try:
                for _ in range(4):
                    s.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                s.sendall(b"0\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError):
                pass  # the server may answer and close before the rest arrives
            status, _, _ = read_response_head(s)
            self.assertEqual(status, 413)

    def test_slow_header_client_cut_off(self):
        s = server.connect(15)
        stop = threading.Event()
        cut_off = []

        def trickle():
            try:
                s.sendall(b"GET /health HTTP/1.1\r\n")
                while not stop.is_set():
                    s.sendall(b"X")
                    time.sleep(0.1)
            except OSError:
                cut_off.append(time.monotonic())

        started = time.monotonic()
        t = threading.Thread(target=trickle, daemon=True)
        t.start()
        try:
            time.sleep(0.3)
            # Another client is served promptly meanwhile.
            t0 = time.monotonic()
            status, health = server.json("GET", "/health", timeout=5)
            self.assertEqual(status, 200)
            self.assertLess(time.monotonic() - t0, 1.0)
            data = read_until_closed(s, timeout=8)
            elapsed = time.monotonic() - started
        finally:
            stop.set()
            t.join(5)
            s.close()
        self.assertLess(elapsed, 5, "trickling client was not cut off by the 1 s header timeout")
        self.assertGreater(elapsed, 0.8)
        if data:
            self.assertTrue(data.startswith(b"HTTP/1.1 408"), data[:80])

    def test_context_length_exceeded(self):
        prompt = "one two three four five six seven eight nine ten " * 12
        _, tok = server.json("POST", "/tokenize", {"content": prompt})
        count = len(tok["tokens"])
        self.assertGreater(count, CONTEXT)
        client = server.openai()
        with self.assertRaises(openai.BadRequestError) as cm:
            client.completions.create(model=MODEL_ID, prompt=prompt, max_tokens=4)
        self.assertEqual(cm.exception.code, "context_length_exceeded")
        self.assertIn(str(CONTEXT), cm.exception.message)
        self.assertIn(str(count), cm.exception.message)
        with self.assertRaises(openai.BadRequestError) as cm:
            client.chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": prompt}], max_tokens=4)
        self.assertEqual(cm.exception.code, "context_length_exceeded")
        self.assertEqual(cm.exception.body.get("param"), "messages")
        # A prompt that fits, with a budget past the context, stops at the context's end.
        r = client.completions.create(model=MODEL_ID, prompt="one two three", max_tokens=500, temperature=0)
        self.assertEqual(r.choices[0].finish_reason, "length")
        self.assertLessEqual(r.usage.prompt_tokens + r.usage.completion_tokens, CONTEXT)


if __name__ == "__main__":
    unittest.main()
