"""Graceful drain: SIGTERM during a long non-streaming request lets it finish with 200, refuses new
connections, and the process exits 0. The server dies here, so the test starts its own."""

import concurrent.futures
import signal
import socket
import time
import unittest

from castserve_harness import MODEL_ID, Server, metric_value


class DrainTests(unittest.TestCase):
    def setUp(self):
        self.server = Server(slots=2).start()

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


if __name__ == "__main__":
    unittest.main()
