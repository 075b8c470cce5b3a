"""The OpenAI-compatible API through the official `openai` client, plus /tokenize, /detokenize,
/metrics and batch invariance, against one shared server."""

import concurrent.futures
import json
import time
import unittest

import openai

from castserve_harness import MODEL_ID, Server, metric_value

server = None
client = None

CHAT = [{"role": "user", "content": "Name three colors of the rainbow."}]
PROMPT = "The capital of France is"


def setUpModule():
    global server, client
    server = Server(slots=4).start()
    client = server.openai()


def tearDownModule():
    if server is not None:
        code = server.stop()
        if code != 0:
            raise AssertionError(f"cast-serve exited with {code} after SIGTERM while idle; log:\n{server.log_text()}")


def stream_chat(**kwargs):
    """Returns (assembled content, finish reasons by index, chunks)."""
    chunks = list(client.chat.completions.create(stream=True, **kwargs))
    content, finish = {}, {}
    for c in chunks:
        for ch in c.choices:
            if ch.delta.content:
                content[ch.index] = content.get(ch.index, "") + ch.delta.content
            if ch.finish_reason:
                finish[ch.index] = ch.finish_reason
    return content, finish, chunks


def stream_completion(**kwargs):
    chunks = list(client.completions.create(stream=True, **kwargs))
    text, finish = {}, {}
    for c in chunks:
        for ch in c.choices:
            text[ch.index] = text.get(ch.index, "") + (ch.text or "")
            if ch.finish_reason:
                finish[ch.index] = ch.finish_reason
    return text, finish, chunks


class ChatTests(unittest.TestCase):
    def test_chat_non_streaming(self):
        r = client.chat.completions.create(model=MODEL_ID, messages=CHAT, max_tokens=16, temperature=0)
        self.assertEqual(r.object, "chat.completion")
        self.assertEqual(len(r.choices), 1)
        self.assertEqual(r.choices[0].message.role, "assistant")
        self.assertTrue(r.choices[0].message.content)
        self.assertIn(r.choices[0].finish_reason, ("stop", "length"))
        self.assertGreater(r.usage.prompt_tokens, 5)
        self.assertEqual(r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens)

    def test_chat_streaming_matches_non_streaming(self):
        args = dict(model=MODEL_ID, messages=CHAT, max_tokens=20, temperature=0)
        whole = client.chat.completions.create(**args)
        content, finish, chunks = stream_chat(**args)
        self.assertEqual(content.get(0, ""), whole.choices[0].message.content)
        self.assertEqual(finish.get(0), whole.choices[0].finish_reason)
        self.assertTrue(all(c.object == "chat.completion.chunk" for c in chunks))
        self.assertEqual(chunks[0].choices[0].delta.role, "assistant")

    def test_stream_options_include_usage(self):
        content, finish, chunks = stream_chat(model=MODEL_ID, messages=CHAT, max_tokens=8, temperature=0,
                                              stream_options={"include_usage": True})
        last = chunks[-1]
        self.assertEqual(last.choices, [])
        self.assertIsNotNone(last.usage)
        self.assertEqual(finish[0], "length")
        self.assertEqual(last.usage.completion_tokens, 8)
        self.assertGreater(last.usage.prompt_tokens, 0)
        self.assertTrue(all(c.usage is None for c in chunks[:-1]))

    def test_max_tokens_length(self):
        r = client.chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": "Write a long story about a dragon."}],
                                           max_tokens=5, temperature=0)
        self.assertEqual(r.choices[0].finish_reason, "length")
        self.assertEqual(r.usage.completion_tokens, 5)

    def test_max_completion_tokens(self):
        r = client.chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": "Write a long story about a dragon."}],
                                           max_completion_tokens=7, temperature=0)
        self.assertEqual(r.choices[0].finish_reason, "length")
        self.assertEqual(r.usage.completion_tokens, 7)

    def test_n_two(self):
        r = client.chat.completions.create(model=MODEL_ID, messages=CHAT, max_tokens=6, temperature=0.9, seed=3, n=2)
        self.assertEqual(sorted(c.index for c in r.choices), [0, 1])
        self.assertTrue(all(c.message.content for c in r.choices))
        self.assertTrue(all(c.finish_reason == "length" for c in r.choices), r.choices)
        self.assertEqual(r.usage.completion_tokens, 12)

    def test_seed_reproducible(self):
        args = dict(model=MODEL_ID, messages=[{"role": "user", "content": "Tell me a short poem."}], max_tokens=16, temperature=0.8)
        a = client.chat.completions.create(seed=1234, **args).choices[0].message.content
        b = client.chat.completions.create(seed=1234, **args).choices[0].message.content
        self.assertEqual(a, b)
        others = {client.chat.completions.create(seed=s, **args).choices[0].message.content for s in (1, 2, 3)}
        self.assertGreater(len(others | {a}), 1, "four seeds gave the same text")

    def test_temperature_zero_deterministic(self):
        args = dict(model=MODEL_ID, messages=[{"role": "user", "content": "Tell me a short poem."}], max_tokens=16, temperature=0)
        texts = {client.chat.completions.create(**args).choices[0].message.content for _ in range(3)}
        self.assertEqual(len(texts), 1)

    def test_logprobs_shape(self):
        r = client.chat.completions.create(model=MODEL_ID, messages=CHAT, max_tokens=4, temperature=0, logprobs=True, top_logprobs=3)
        content = r.choices[0].logprobs.content
        self.assertEqual(r.choices[0].finish_reason, "length")
        self.assertEqual(len(content), 4)
        self.assertEqual("".join(t.token for t in content), r.choices[0].message.content)
        for t in content:
            self.assertLessEqual(t.logprob, 0.0)
            self.assertEqual(len(t.top_logprobs), 3)
            lps = [x.logprob for x in t.top_logprobs]
            self.assertEqual(lps, sorted(lps, reverse=True))
            # Greedy: the chosen token is the most likely one.
            self.assertAlmostEqual(t.logprob, lps[0], places=4)
            self.assertEqual(bytes(t.bytes), t.token.encode())

    def test_model_alias_default(self):
        r = client.chat.completions.create(model="default", messages=CHAT, max_tokens=2, temperature=0)
        self.assertEqual(r.model, MODEL_ID)

    def test_unknown_model(self):
        with self.assertRaises(openai.NotFoundError) as cm:
            client.chat.completions.create(model="gpt-nonexistent", messages=CHAT, max_tokens=2)
        self.assertEqual(cm.exception.code, "model_not_found")
        self.assertIn("gpt-nonexistent", cm.exception.message)

    def test_invalid_fields(self):
        cases = [
            ("temperature", {"model": MODEL_ID, "messages": CHAT, "temperature": 7}),
            ("n", {"model": MODEL_ID, "messages": CHAT, "n": 0}),
            ("messages", {"model": MODEL_ID}),
            ("messages[0].role", {"model": MODEL_ID, "messages": [{"role": "wizard", "content": "hi"}]}),
            ("max_tokens", {"model": MODEL_ID, "messages": CHAT, "max_tokens": -1}),
            ("stop", {"model": MODEL_ID, "messages": CHAT, "stop": ["a", "b", "c", "d", "e"]}),
        ]
        for param, body in cases:
            with self.subTest(param=param):
                with self.assertRaises(openai.BadRequestError) as cm:
                    client.post("/chat/completions", body=body, cast_to=object)
                self.assertEqual(cm.exception.status_code, 400)
                self.assertEqual(cm.exception.body.get("param"), param)
                self.assertEqual(cm.exception.type, "invalid_request_error")
        status, body = server.json("POST", "/v1/chat/completions", b"{not json")
        self.assertEqual(status, 400)
        self.assertEqual(body["error"]["code"], "invalid_json")


class StopTests(unittest.TestCase):
    def _free_text(self):
        r = client.completions.create(model=MODEL_ID, prompt="One, two, three, four, five, six,", max_tokens=12, temperature=0)
        return r.choices[0].text

    def test_stop_string(self):
        text = self._free_text()
        # Stop on a piece of the greedy continuation that starts after its first few characters.
        stop = text[4:7]
        self.assertEqual(len(stop), 3, text)
        r = client.completions.create(model=MODEL_ID, prompt="One, two, three, four, five, six,", max_tokens=12, temperature=0,
                                      stop=stop)
        self.assertEqual(r.choices[0].finish_reason, "stop")
        self.assertNotIn(stop, r.choices[0].text)
        self.assertEqual(r.choices[0].text, text[:text.index(stop)])

    def test_stop_list_streaming(self):
        text = self._free_text()
        stops = ["\u2603never", text[6:9]]
        joined, finish, _ = stream_completion(model=MODEL_ID, prompt="One, two, three, four, five, six,", max_tokens=12,
                                              temperature=0, stop=stops)
        self.assertEqual(finish[0], "stop")
        for s in stops:
            self.assertNotIn(s, joined[0])
        self.assertEqual(joined[0], text[:text.index(stops[1])])

    def test_chat_stop_list(self):
        free = client.chat.completions.create(model=MODEL_ID, messages=CHAT, max_tokens=16, temperature=0).choices[0].message.content
        words = free.split()
        self.assertGreater(len(words), 2, free)
        stop = [words[1], "zzzz"]
        r = client.chat.completions.create(model=MODEL_ID, messages=CHAT, max_tokens=16, temperature=0, stop=stop)
        self.assertEqual(r.choices[0].finish_reason, "stop")
        self.assertNotIn(words[1], r.choices[0].message.content)


class CompletionTests(unittest.TestCase):
    def test_completion_non_streaming(self):
        r = client.completions.create(model=MODEL_ID, prompt=PROMPT, max_tokens=8, temperature=0)
        self.assertEqual(r.object, "text_completion")
        self.assertTrue(r.choices[0].text)
        self.assertEqual(r.choices[0].finish_reason, "length")
        self.assertEqual(r.usage.completion_tokens, 8)

    def test_completion_streaming_matches(self):
        whole = client.completions.create(model=MODEL_ID, prompt=PROMPT, max_tokens=12, temperature=0)
        text, finish, chunks = stream_completion(model=MODEL_ID, prompt=PROMPT, max_tokens=12, temperature=0)
        self.assertEqual(text[0], whole.choices[0].text)
        self.assertEqual(finish[0], "length")

    def test_completion_logprobs(self):
        r = client.completions.create(model=MODEL_ID, prompt=PROMPT, max_tokens=4, temperature=0, logprobs=2)
        lp = r.choices[0].logprobs
        self.assertEqual(len(lp.tokens), 4)
        self.assertEqual(len(lp.token_logprobs), 4)
        self.assertEqual(len(lp.top_logprobs), 4)
        self.assertTrue(all(1 <= len(d) <= 2 for d in lp.top_logprobs))
        self.assertEqual("".join(lp.tokens), r.choices[0].text)
        self.assertEqual(lp.text_offset[0], 0)

    def test_prompt_as_token_ids(self):
        status, tok = server.json("POST", "/tokenize", {"content": PROMPT})
        a = client.completions.create(model=MODEL_ID, prompt=tok["tokens"], max_tokens=6, temperature=0).choices[0].text
        b = client.completions.create(model=MODEL_ID, prompt=PROMPT, max_tokens=6, temperature=0).choices[0].text
        self.assertEqual(a, b)


class ModelsTests(unittest.TestCase):
    def test_models_list(self):
        models = client.models.list().data
        self.assertEqual([m.id for m in models], [MODEL_ID])
        self.assertEqual(models[0].model_extra.get("context_length"), server.context_length)
        self.assertEqual(client.models.retrieve("default").id, MODEL_ID)
        with self.assertRaises(openai.NotFoundError):
            client.models.retrieve("nope")


class TokenizeTests(unittest.TestCase):
    def test_round_trip(self):
        text = "Hello, world! Ünïcødé 🙂 and\ttabs\n  spaces 12345."
        status, tok = server.json("POST", "/tokenize", {"content": text})
        self.assertEqual(status, 200)
        self.assertTrue(all(isinstance(t, int) for t in tok["tokens"]))
        self.assertGreater(len(tok["tokens"]), 10)
        status, de = server.json("POST", "/detokenize", {"tokens": tok["tokens"]})
        self.assertEqual(status, 200)
        self.assertEqual(de["content"], text)

    def test_special_tokens(self):
        text = "<|im_start|>user\nhi<|im_end|>"
        _, parsed = server.json("POST", "/tokenize", {"content": text})
        self.assertEqual(parsed["tokens"][0], 1)  # <|im_start|> is token 1 (bos)
        self.assertIn(2, parsed["tokens"])  # <|im_end|> is token 2 (eos)
        _, literal = server.json("POST", "/tokenize", {"content": text, "parse_special": False})
        self.assertNotIn(1, literal["tokens"])
        self.assertNotIn(2, literal["tokens"])
        self.assertGreater(len(literal["tokens"]), len(parsed["tokens"]))
        _, de = server.json("POST", "/detokenize", {"tokens": parsed["tokens"]})
        self.assertEqual(de["content"], text)
        _, pieces = server.json("POST", "/tokenize", {"content": text, "with_pieces": True})
        self.assertEqual(pieces["tokens"][0], {"id": 1, "piece": "<|im_start|>"})

    def test_detokenize_rejects_bad_ids(self):
        status, body = server.json("POST", "/detokenize", {"tokens": [1, 999999]})
        self.assertEqual(status, 400)
        self.assertEqual(body["error"]["param"], "tokens")


class MetricsTests(unittest.TestCase):
    def test_metrics(self):
        before = server.metrics()
        r = client.completions.create(model=MODEL_ID, prompt=PROMPT, max_tokens=3, temperature=0)
        ok = lambda m: metric_value(m, "castserve_requests", "castserve_requests_total", route="/v1/completions", status="200")
        # The request is counted right after its response is written: the client can be faster.
        deadline = time.monotonic() + 5
        after = server.metrics()
        while ok(after) == ok(before) and time.monotonic() < deadline:
            time.sleep(0.02)
            after = server.metrics()
        for name in ("castserve_requests", "castserve_prompt_tokens", "castserve_completion_tokens",
                     "castserve_time_to_first_token_seconds", "castserve_request_duration_seconds",
                     "castserve_requests_running", "castserve_requests_waiting"):
            self.assertIn(name, after, sorted(after))
        self.assertEqual(after["castserve_time_to_first_token_seconds"].type, "histogram")
        self.assertEqual(after["castserve_request_duration_seconds"].type, "histogram")
        self.assertEqual(after["castserve_requests_running"].type, "gauge")
        self.assertEqual(after["castserve_requests_waiting"].type, "gauge")
        self.assertEqual(metric_value(after, "castserve_requests_running"), 0)
        self.assertEqual(metric_value(after, "castserve_requests_waiting"), 0)
        self.assertEqual(ok(after) - ok(before), 1)
        d = lambda m, n: metric_value(m, n, n + "_total")
        self.assertEqual(d(after, "castserve_prompt_tokens") - d(before, "castserve_prompt_tokens"), r.usage.prompt_tokens)
        self.assertEqual(d(after, "castserve_completion_tokens") - d(before, "castserve_completion_tokens"), 3)
        count = lambda m, n: metric_value(m, n, n + "_count")
        self.assertGreaterEqual(count(after, "castserve_time_to_first_token_seconds")
                                - count(before, "castserve_time_to_first_token_seconds"), 1)
        self.assertGreaterEqual(count(after, "castserve_request_duration_seconds")
                                - count(before, "castserve_request_duration_seconds"), 1)
        inf = metric_value(after, "castserve_request_duration_seconds", "castserve_request_duration_seconds_bucket", le="+Inf")
        self.assertEqual(inf, count(after, "castserve_request_duration_seconds"))
        # Errors are counted under their status.
        server.json("POST", "/v1/completions", {"model": "nope", "prompt": "x"})
        self.assertGreaterEqual(metric_value(server.metrics(), "castserve_requests", "castserve_requests_total",
                                             route="/v1/completions", status="404"), 1)


class BatchInvarianceTests(unittest.TestCase):
    def test_concurrent_equals_alone(self):
        prompts = ["The quick brown fox", "In 1492, Columbus", "def fibonacci(n):", "My favourite food is"]

        def run(p):
            return client.completions.create(model=MODEL_ID, prompt=p, max_tokens=12, temperature=0).choices[0].text

        alone = [run(p) for p in prompts]
        with concurrent.futures.ThreadPoolExecutor(len(prompts)) as pool:
            together = list(pool.map(run, prompts, timeout=120))
        self.assertEqual(together, alone)
        self.assertEqual(len(set(alone)), len(alone))

    def test_more_streams_than_slots(self):
        # 10 concurrent streams on 4 slots: the rest wait for a slot, and every text is unchanged.
        def run(i):
            chunks = client.completions.create(model=MODEL_ID, prompt=f"Item number {i}:", max_tokens=8, temperature=0,
                                               stream=True)
            return "".join(c.choices[0].text for c in chunks if c.choices)

        with concurrent.futures.ThreadPoolExecutor(10) as pool:
            together = list(pool.map(run, range(10), timeout=120))
        self.assertEqual(together, [run(i) for i in range(10)])


if __name__ == "__main__":
    unittest.main()
