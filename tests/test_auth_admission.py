"""Authentication (--api-key) and admission control (429 with Retry-After when the single slot is
busy and no request may wait), each against its own server."""

import concurrent.futures
import json
import time
import unittest

import openai

from castserve_harness import MODEL_ID, Server, metric_value

CHAT = [{"role": "user", "content": "Say hi."}]


class AuthTests(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = Server(slots=1, args=["--api-key", "secret"]).start()

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def test_no_key_401(self):
        status, headers, body = self.server.request("POST", "/v1/chat/completions",
                                                    {"model": MODEL_ID, "messages": CHAT, "max_tokens": 2})
        self.assertEqual(status, 401)
        self.assertEqual(headers.get("www-authenticate"), "Bearer")
        self.assertEqual(json.loads(body)["error"]["code"], "invalid_api_key")
        status, _, _ = self.server.request("GET", "/v1/models")
        self.assertEqual(status, 401)

    def test_wrong_key_401(self):
        for key in ("wrong", "secre", "secrets"):
            with self.subTest(key=key), self.assertRaises(openai.AuthenticationError) as cm:
                self.server.openai(api_key=key).chat.completions.create(model=MODEL_ID, messages=CHAT, max_tokens=2)
            self.assertEqual(cm.exception.status_code, 401)

    def test_right_key_200(self):
        client = self.server.openai(api_key="secret")
        r = client.chat.completions.create(model=MODEL_ID, messages=CHAT, max_tokens=2, temperature=0)
        self.assertEqual(r.usage.completion_tokens, 2)
        self.assertEqual([m.id for m in client.models.list().data], [MODEL_ID])

    def test_health_needs_no_key(self):
        status, body = self.server.json("GET", "/health")
        self.assertEqual((status, body["status"]), (200, "ok"))


class AdmissionTests(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = Server(slots=1, env={"CASTSERVE_MAX_WAITING_REQUESTS": "0"}).start()

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def test_429_when_full(self):
        body = {"model": MODEL_ID, "prompt": "Once upon a time, in a land far away,", "max_tokens": 120, "temperature": 0}

        def send(i):
            t0 = time.monotonic()
            status, headers, payload = self.server.request("POST", "/v1/completions", body, timeout=60)
            return status, headers, json.loads(payload), time.monotonic() - t0

        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            results = list(pool.map(send, range(6), timeout=120))
        statuses = [r[0] for r in results]
        self.assertTrue(set(statuses) <= {200, 429}, statuses)
        self.assertGreaterEqual(statuses.count(200), 1, statuses)
        self.assertGreaterEqual(statuses.count(429), 1, statuses)
        for status, headers, payload, seconds in results:
            if status == 429:
                self.assertEqual(headers.get("retry-after"), "1")
                self.assertEqual(payload["error"]["type"], "rate_limit_error")
                self.assertLess(seconds, 5, "a refused request waited")
            else:
                self.assertGreater(payload["usage"]["completion_tokens"], 0)
                self.assertIn(payload["choices"][0]["finish_reason"], ("stop", "length"))
        # The openai client surfaces the refusal as RateLimitError.
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            long = pool.submit(self.server.request, "POST", "/v1/completions", body, None, 60)
            deadline = time.monotonic() + 10
            while metric_value(self.server.metrics(), "castserve_requests_running") < 1 and time.monotonic() < deadline:
                time.sleep(0.02)
            with self.assertRaises(openai.RateLimitError):
                self.server.openai().completions.create(model=MODEL_ID, prompt="Hi", max_tokens=2)
            self.assertEqual(long.result(timeout=60)[0], 200)
        self.assertEqual(self.server.request("POST", "/v1/completions", body, timeout=60)[0], 200)


if __name__ == "__main__":
    unittest.main()
