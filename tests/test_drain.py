"""Graceful drain: SIGTERM during a long non-streaming request lets it finish with 200, refuses new
connections, and the process exits 0; under load (8 concurrent requests, streaming and not, half of
them still queued for a slot, plus idle keep-alive connections) every accepted request completes.
The server dies here, so each test starts its own."""

import concurrent.futures
import http.client
import json
import signal
import socket
import time
import unittest

from castserve_harness import MODEL_ID, Server, metric_value, read_until_closed


class DrainTests(unittest.TestCase):
    def setUp(self):
        self.server = Server(slots=2 if "load" not in self._testMethodName else 4).start()

    def tearDown(self):
        self.server.kill()

    def test_sigterm_drains_in_flight_request(self):
        server = self.server
        body = {"model": MODEL_ID, "prompt": "Once upon a time, in a land far away,", "max_tokens": 250, "temperature": 0}
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            started = time.monotonic()
            pending = pool.submit(server.json, "POST", "/v1/completions", body, None, 90)
            deadline = time.monotonic() + 20
            while metric_value(server.metrics(), "castserve_requests_running") < 1:
                self.assertLess(time.monotonic(), deadline, "the request never started")
                self.assertFalse(pending.done(), "the request ended before SIGTERM")
                time.sleep(0.02)
            server.proc.send_signal(signal.SIGTERM)
            # New connections are refused while the request drains.
            time.sleep(0.3)
            if not pending.done():
                with self.assertRaises(ConnectionRefusedError):
                    socket.create_connection(("127.0.0.1", server.port), timeout=2).close()
            status, result = pending.result(timeout=90)
        self.assertEqual(status, 200, result)
        self.assertEqual(result["usage"]["completion_tokens"], 250)
        self.assertEqual(result["choices"][0]["finish_reason"], "length")
        self.assertEqual(server.proc.wait(timeout=30), 0, server.log_text())
        self.assertIn("draining", server.log_text())
        with self.assertRaises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", server.port), timeout=2).close()
        self.assertLess(time.monotonic() - started, 90)


    def stream_completion(self, body):
        """A streamed completion read to the end: (status, text, usage, saw [DONE])."""
        conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=90)
        try:
            conn.request("POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"})
            r = conn.getresponse()
            payload = r.read().decode()
        finally:
            conn.close()
        events = [line[len("data: "):] for line in payload.splitlines() if line.startswith("data: ")]
        done = bool(events) and events[-1] == "[DONE]"
        chunks = [json.loads(e) for e in events if e != "[DONE]"]
        text = "".join(c["choices"][0]["text"] for c in chunks if c.get("choices"))
        usage = next((c["usage"] for c in chunks if c.get("usage")), None)
        return r.status, text, usage, done

    def test_sigterm_under_load_loses_no_accepted_request(self):
        server = self.server
        max_tokens = 48
        prompts = [f"Story number {i}: once upon a time" for i in range(8)]
        # Idle keep-alive connections are closed at drain; they had no request in flight.
        idle = [server.connect() for _ in range(4)]
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            futures = []
            for i, prompt in enumerate(prompts):
                body = {"model": MODEL_ID, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0}
                if i % 2 == 0:
                    body.update(stream=True, stream_options={"include_usage": True})
                    futures.append(pool.submit(self.stream_completion, body))
                else:
                    futures.append(pool.submit(server.json, "POST", "/v1/completions", body, None, 90))
            deadline = time.monotonic() + 30
            while True:
                families = server.metrics()
                accepted = (metric_value(families, "castserve_requests_running")
                            + metric_value(families, "castserve_requests_waiting"))
                if accepted >= 8:
                    break
                self.assertLess(time.monotonic() - deadline, 0, f"only {accepted} of 8 requests were accepted")
                self.assertFalse(any(f.done() for f in futures), "a request ended before SIGTERM")
                time.sleep(0.02)
            self.assertGreaterEqual(metric_value(families, "castserve_requests_waiting"), 1,
                                    "no request was queued at SIGTERM (the drain must cover waiting ones too)")
            server.proc.send_signal(signal.SIGTERM)
            results = [f.result(timeout=120) for f in futures]
        for i, result in enumerate(results):
            if i % 2 == 0:
                status, text, usage, done = result
                self.assertEqual(status, 200)
                self.assertTrue(done, f"stream {i} ended without [DONE]")
                self.assertTrue(text)
                self.assertEqual(usage["completion_tokens"], max_tokens, f"stream {i} was cut short")
            else:
                status, body = result
                self.assertEqual(status, 200, body)
                self.assertEqual(body["usage"]["completion_tokens"], max_tokens, body)
                self.assertEqual(body["choices"][0]["finish_reason"], "length")
        for s in idle:
            self.assertEqual(read_until_closed(s, timeout=10), b"")
            s.close()
        self.assertEqual(server.proc.wait(timeout=30), 0, server.log_text())


if __name__ == "__main__":
    unittest.main()
