"""Continuous batching through the HTTP server: prefix reuse is visible in /metrics and changes
nothing, a flood beyond the queue gets 429s (never a crash or a hang), everything admitted
completes, and memory and KV blocks come back to their idle level."""
import concurrent.futures
import os
import unittest

from castserve_harness import Server, metric_value

SYSTEM = ("You are a meticulous assistant. Answer briefly and precisely, in plain English, without lists. "
          "If you do not know, say so. Keep every answer under fifty words. ") * 2


def chat(server, question, max_tokens=24):
    status, body = server.json("POST", "/v1/chat/completions", {
        "model": "default", "temperature": 0, "max_tokens": max_tokens,
        "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]})
    return status, body


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class PrefixReuseTest(unittest.TestCase):
    def test_shared_system_prompt_is_reused_and_output_unchanged(self):
        questions = ["What is rain?", "Why is the sky blue?", "What is a prime number?"]
        cold = []
        for q in questions:  # a fresh server per question: nothing to reuse
            s = Server(slots=2)
            s.start()
            try:
                status, body = chat(s, q)
                self.assertEqual(status, 200, body)
                cold.append(body["choices"][0]["message"]["content"])
                self.assertEqual(metric_value(s.metrics(), "castserve_prefix_cache_hit_tokens_total"), 0)
            finally:
                s.stop()
        s = Server(slots=2)
        s.start()
        try:
            warm = []
            for q in questions:
                status, body = chat(s, q)
                self.assertEqual(status, 200, body)
                warm.append(body["choices"][0]["message"]["content"])
            self.assertEqual(warm, cold)
            m = s.metrics()
            hits = metric_value(m, "castserve_prefix_cache_hit_tokens_total")
            self.assertGreaterEqual(hits, 2 * 32, "the shared system prompt was not reused")
            self.assertGreater(metric_value(m, "castserve_prefix_cache_hit_ratio"), 0)
        finally:
            s.stop()


class CachedTokensTest(unittest.TestCase):
    def test_usage_reports_reused_prompt_tokens_and_the_counter_moves(self):
        s = Server(slots=2).start()
        try:
            client = s.openai()
            counter = lambda: metric_value(s.metrics(), "castserve_prompt_cached_tokens")
            self.assertEqual(counter(), 0)
            messages = lambda q: [{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}]
            first = client.chat.completions.create(model="default", messages=messages("What is rain?"), max_tokens=4, temperature=0)
            self.assertEqual(first.usage.prompt_tokens_details.cached_tokens, 0)
            second = client.chat.completions.create(model="default", messages=messages("Why is the sky blue?"), max_tokens=4, temperature=0)
            cached = second.usage.prompt_tokens_details.cached_tokens
            self.assertGreaterEqual(cached, 32, "the shared system prompt was not reported as cached")
            self.assertLessEqual(cached, second.usage.prompt_tokens)
            self.assertEqual(counter(), cached)
            # Streamed usage, and the completions endpoint, report it too.
            chunks = list(client.chat.completions.create(model="default", messages=messages("What is a prime number?"), max_tokens=4,
                                                         temperature=0, stream=True, stream_options={"include_usage": True}))
            streamed = chunks[-1].usage
            self.assertGreaterEqual(streamed.prompt_tokens_details.cached_tokens, 32)
            self.assertLessEqual(streamed.prompt_tokens_details.cached_tokens, streamed.prompt_tokens)
            prompt = SYSTEM + " Question: what is snow? Answer:"
            cold = client.completions.create(model="default", prompt=prompt, max_tokens=2, temperature=0)
            warm = client.completions.create(model="default", prompt=prompt, max_tokens=2, temperature=0)
            self.assertEqual(cold.usage.prompt_tokens_details.cached_tokens, 0)
            self.assertGreater(warm.usage.prompt_tokens_details.cached_tokens, 0)
            self.assertLess(warm.usage.prompt_tokens_details.cached_tokens, warm.usage.prompt_tokens)
            self.assertEqual(counter(), cached + streamed.prompt_tokens_details.cached_tokens + warm.usage.prompt_tokens_details.cached_tokens)
        finally:
            s.stop()


class FloodTest(unittest.TestCase):
    def test_flood_gets_429s_everything_admitted_completes_memory_returns(self):
        s = Server(slots=2, env={"CASTSERVE_MAX_WAITING_REQUESTS": "2"})
        s.start()
        try:
            def one(i):
                return chat(s, f"Tell me one fact about the number {i}.", max_tokens=12)

            rss_after = []
            for _ in range(2):
                with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
                    results = list(pool.map(one, range(16), timeout=120))
                statuses = [st for st, _ in results]
                self.assertTrue(set(statuses) <= {200, 429}, statuses)
                self.assertIn(429, statuses)
                self.assertGreaterEqual(statuses.count(200), 4)
                for st, body in results:
                    if st == 200:
                        self.assertIn(body["choices"][0]["finish_reason"], ("stop", "length"))
                    else:
                        self.assertEqual(body["error"]["code"], "queue_full")
                m = s.metrics()
                self.assertEqual(metric_value(m, "castserve_requests_running"), 0)
                self.assertEqual(metric_value(m, "castserve_requests_waiting"), 0)
                self.assertEqual(metric_value(m, "castserve_kv_blocks_used"), 0)
                rss_after.append(rss_kib(s.proc.pid))
            # The second flood reuses what the first touched: no growth beyond a small margin.
            self.assertLessEqual(rss_after[1], rss_after[0] + 16 * 1024, rss_after)
            status, _ = s.json("GET", "/health")
            self.assertEqual(status, 200)
        finally:
            s.stop()


if __name__ == "__main__":
    unittest.main()


class SpeculationTest(unittest.TestCase):
    def test_speculation_on_off_and_per_request_opt_out_give_the_same_text(self):
        # Summaries repeat their input, so the n-gram drafter has something to propose.
        article = ("The library opens at nine. The library closes at five. Children may borrow three books. "
                   "Adults may borrow five books. Late books cost ten cents a day. ") * 2
        body = {"model": "default", "temperature": 0, "max_tokens": 48,
                "messages": [{"role": "user", "content": "Repeat this text exactly:\n\n" + article}]}
        texts = {}
        for mode in ("off", "on"):
            s = Server(slots=2, args=("--speculation", mode))
            s.start()
            try:
                status, out = s.json("POST", "/v1/chat/completions", body)
                self.assertEqual(status, 200, out)
                texts[mode] = out["choices"][0]["message"]["content"]
                if mode == "on":
                    status, opted = s.json("POST", "/v1/chat/completions", dict(body, speculation=False))
                    self.assertEqual(status, 200, opted)
                    texts["opt-out"] = opted["choices"][0]["message"]["content"]
                    status, bad = s.json("POST", "/v1/chat/completions", dict(body, speculation="maybe"))
                    self.assertEqual(status, 400)
                    self.assertEqual(bad["error"]["param"], "speculation")
            finally:
                s.stop()
        self.assertEqual(texts["on"], texts["off"])
        self.assertEqual(texts["opt-out"], texts["off"])
