"""The Anthropic Messages API (POST /v1/messages, /v1/messages/count_tokens) through the real
`anthropic` SDK and LangChain's ChatAnthropic: create, stream (the documented event sequence),
stop_sequences, tools (forced, any, none, a tool_result round trip, streamed input_json_delta),
count_tokens, errors in Anthropic's shape (missing max_tokens, image block, bad key, unknown
model), and greedy equality with the same conversation through chat completions."""

import json
import unittest

import anthropic

from castserve_harness import MODEL_ID, Server

server = None
client = None

WEATHER = {
    "name": "get_weather",
    "description": "Get the current weather in a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 30}},
        "required": ["city"],
    },
}
ASK = [{"role": "user", "content": "What is the weather like in Paris today?"}]
HELLO = [{"role": "user", "content": "Write one sentence about the sea."}]
# The SDK no longer takes the sampling fields as arguments; the API still does (so does LangChain).
GREEDY = {"temperature": 0}


def setUpModule():
    global server, client
    server = Server(slots=4, args=["--api-key", "secret"]).start()
    client = anthropic.Anthropic(base_url=server.base_url, api_key="secret", max_retries=0, timeout=60)


def tearDownModule():
    if server is not None:
        server.stop()


def chat_text(messages, max_tokens, system=None, stop=None):
    """The greedy reply through chat completions (Bearer key)."""
    body = {"model": MODEL_ID, "messages": ([{"role": "system", "content": system}] if system else []) + messages,
            "max_tokens": max_tokens, "temperature": 0}
    if stop:
        body["stop"] = stop
    status, reply = server.json("POST", "/v1/chat/completions", body, headers={"Authorization": "Bearer secret"})
    assert status == 200, reply
    return reply["choices"][0]


class CreateTests(unittest.TestCase):
    def test_create_matches_chat_completions(self):
        m = client.messages.create(model=MODEL_ID, max_tokens=24, extra_body=GREEDY, system="You are brief.", messages=HELLO)
        self.assertEqual(m.type, "message")
        self.assertEqual(m.role, "assistant")
        self.assertTrue(m.id.startswith("msg_"))
        self.assertEqual(len(m.content), 1)
        self.assertEqual(m.content[0].type, "text")
        choice = chat_text(HELLO, 24, system="You are brief.")
        self.assertEqual(m.content[0].text, choice["message"]["content"])
        self.assertEqual(m.stop_reason, "max_tokens" if choice["finish_reason"] == "length" else "end_turn")
        self.assertIsNone(m.stop_sequence)
        self.assertGreater(m.usage.input_tokens + (m.usage.cache_read_input_tokens or 0), 10)
        self.assertGreater(m.usage.output_tokens, 0)

    def test_system_blocks_and_content_blocks_equal_strings(self):
        a = client.messages.create(model=MODEL_ID, max_tokens=12, extra_body=GREEDY, system="You are brief.", messages=HELLO)
        b = client.messages.create(model=MODEL_ID, max_tokens=12, extra_body=GREEDY,
                                   system=[{"type": "text", "text": "You are "}, {"type": "text", "text": "brief."}],
                                   messages=[{"role": "user", "content": [{"type": "text", "text": HELLO[0]["content"]}]}])
        self.assertEqual(a.content[0].text, b.content[0].text)

    def test_max_tokens_stop_reason(self):
        m = client.messages.create(model=MODEL_ID, max_tokens=3, extra_body=GREEDY, messages=HELLO)
        self.assertEqual(m.stop_reason, "max_tokens")
        self.assertLessEqual(m.usage.output_tokens, 3)

    def test_stop_sequence_sets_stop_reason_and_sequence(self):
        free = client.messages.create(model=MODEL_ID, max_tokens=24, extra_body=GREEDY, messages=HELLO).content[0].text
        words = free.split()
        self.assertGreater(len(words), 3, free)
        stop = " " + words[2]
        m = client.messages.create(model=MODEL_ID, max_tokens=24, extra_body=GREEDY, messages=HELLO, stop_sequences=["@@never@@", stop])
        self.assertEqual(m.stop_reason, "stop_sequence")
        self.assertEqual(m.stop_sequence, stop)
        self.assertEqual(m.content[0].text, free[:free.index(stop)])
        self.assertEqual(m.content[0].text, chat_text(HELLO, 24, stop=[stop])["message"]["content"])

    def test_cached_prompt_tokens_are_reported(self):
        long_system = "You answer questions about the sea. " * 20
        first = client.messages.create(model=MODEL_ID, max_tokens=2, extra_body=GREEDY, system=long_system, messages=HELLO)
        second = client.messages.create(model=MODEL_ID, max_tokens=2, extra_body=GREEDY, system=long_system, messages=HELLO)
        self.assertGreater(second.usage.cache_read_input_tokens, 0)
        self.assertEqual(first.usage.input_tokens + first.usage.cache_read_input_tokens,
                         second.usage.input_tokens + second.usage.cache_read_input_tokens)


class OutputFormatTests(unittest.TestCase):
    def test_output_config_format_is_the_output_grammar(self):
        schema = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 20}, "age": {"type": "integer"}},
                  "required": ["name", "age"], "additionalProperties": False}
        m = client.messages.create(model=MODEL_ID, max_tokens=60, extra_body=GREEDY,
                                   messages=[{"role": "user", "content": "Invent a person."}],
                                   output_config={"format": {"type": "json_schema", "schema": schema}})
        value = json.loads(m.content[0].text)
        self.assertEqual(set(value), {"name", "age"})
        self.assertIsInstance(value["age"], int)
        self.assertEqual(m.stop_reason, "end_turn")


class StreamTests(unittest.TestCase):
    def test_stream_event_sequence_and_text(self):
        whole = client.messages.create(model=MODEL_ID, max_tokens=20, extra_body=GREEDY, messages=HELLO)
        with client.messages.stream(model=MODEL_ID, max_tokens=20, extra_body=GREEDY, messages=HELLO) as stream:
            events = list(stream)
            final = stream.get_final_message()
        types = [e.type for e in events if e.type not in ("text", "ping")]
        self.assertEqual(types[0], "message_start")
        self.assertEqual(types[1], "content_block_start")
        self.assertEqual(types[-3:], ["content_block_stop", "message_delta", "message_stop"])
        self.assertTrue(all(t == "content_block_delta" for t in types[2:-3]), types)
        deltas = [e.delta.text for e in events if e.type == "content_block_delta"]
        self.assertEqual("".join(deltas), whole.content[0].text)
        self.assertEqual(final.content[0].text, whole.content[0].text)
        self.assertEqual(final.stop_reason, whole.stop_reason)
        self.assertEqual(final.usage.output_tokens, whole.usage.output_tokens)

    def test_raw_sse_has_event_lines(self):
        status, headers, body = server.request("POST", "/v1/messages",
                                               {"model": MODEL_ID, "max_tokens": 4, "temperature": 0, "stream": True, "messages": HELLO},
                                               headers={"x-api-key": "secret"})
        self.assertEqual(status, 200)
        self.assertTrue(headers["content-type"].startswith("text/event-stream"))
        names = [line[len("event: "):] for line in body.decode().splitlines() if line.startswith("event: ")]
        self.assertEqual(names[0], "message_start")
        self.assertEqual(names[-1], "message_stop")
        for block in body.decode().split("\n\n"):
            lines = block.strip().splitlines()
            if lines:
                name = lines[0][len("event: "):]
                self.assertEqual(json.loads(lines[1][len("data: "):])["type"], name)


class ToolTests(unittest.TestCase):
    def test_forced_tool_round_trip(self):
        m = client.messages.create(model=MODEL_ID, max_tokens=64, extra_body=GREEDY, messages=ASK, tools=[WEATHER],
                                   tool_choice={"type": "tool", "name": "get_weather"})
        self.assertEqual(m.stop_reason, "tool_use")
        self.assertIsNone(m.stop_sequence)
        calls = [b for b in m.content if b.type == "tool_use"]
        self.assertEqual(len(calls), 1)
        self.assertEqual(calls[0].name, "get_weather")
        self.assertIsInstance(calls[0].input.get("city"), str)
        history = ASK + [{"role": "assistant", "content": m.content},
                         {"role": "user", "content": [{"type": "tool_result", "tool_use_id": calls[0].id, "content": "Sunny, 24 C"}]}]
        follow = client.messages.create(model=MODEL_ID, max_tokens=40, extra_body=GREEDY, messages=history, tools=[WEATHER],
                                        tool_choice={"type": "none"})
        self.assertEqual(follow.content[0].type, "text")
        self.assertIn(follow.stop_reason, ("end_turn", "max_tokens"))

    def test_any_forces_a_call(self):
        m = client.messages.create(model=MODEL_ID, max_tokens=64, extra_body=GREEDY, messages=HELLO, tools=[WEATHER],
                                   tool_choice={"type": "any"})
        self.assertEqual(m.stop_reason, "tool_use")
        self.assertEqual(m.content[0].type, "tool_use")

    def test_none_never_calls(self):
        m = client.messages.create(model=MODEL_ID, max_tokens=30, extra_body=GREEDY, messages=ASK, tools=[WEATHER],
                                   tool_choice={"type": "none"})
        self.assertNotEqual(m.stop_reason, "tool_use")
        self.assertTrue(all(b.type == "text" for b in m.content))

    def test_streamed_tool_use(self):
        with client.messages.stream(model=MODEL_ID, max_tokens=64, extra_body=GREEDY, messages=ASK, tools=[WEATHER],
                                    tool_choice={"type": "tool", "name": "get_weather"}) as stream:
            events = list(stream)
            final = stream.get_final_message()
        starts = [e for e in events if e.type == "content_block_start"]
        self.assertEqual(starts[0].content_block.type, "tool_use")
        partial = "".join(e.delta.partial_json for e in events if e.type == "content_block_delta" and e.delta.type == "input_json_delta")
        self.assertEqual(json.loads(partial), final.content[0].input)
        self.assertEqual(final.stop_reason, "tool_use")


class CountTokensTests(unittest.TestCase):
    def test_count_tokens(self):
        counted = client.messages.count_tokens(model=MODEL_ID, system="You are brief.", messages=HELLO)
        m = client.messages.create(model=MODEL_ID, max_tokens=1, extra_body=GREEDY, system="You are brief.", messages=HELLO)
        self.assertEqual(counted.input_tokens, m.usage.input_tokens + m.usage.cache_read_input_tokens)
        with_tools = client.messages.count_tokens(model=MODEL_ID, messages=ASK, tools=[WEATHER])
        without = client.messages.count_tokens(model=MODEL_ID, messages=ASK)
        self.assertGreater(with_tools.input_tokens, without.input_tokens)


class ErrorTests(unittest.TestCase):
    def check_error(self, status, body, kind):
        self.assertEqual(body["type"], "error")
        self.assertEqual(body["error"]["type"], kind)
        self.assertTrue(body["error"]["message"])
        return body["error"]["message"]

    def test_missing_max_tokens_400(self):
        status, body = server.json("POST", "/v1/messages", {"model": MODEL_ID, "messages": HELLO}, headers={"x-api-key": "secret"})
        self.assertEqual(status, 400)
        self.assertIn("max_tokens", self.check_error(status, body, "invalid_request_error"))

    def test_image_block_400(self):
        image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}
        with self.assertRaises(anthropic.BadRequestError) as cm:
            client.messages.create(model=MODEL_ID, max_tokens=8,
                                   messages=[{"role": "user", "content": [image, {"type": "text", "text": "What is this?"}]}])
        self.assertEqual(cm.exception.body["error"]["type"], "invalid_request_error")
        self.assertIn("messages[0].content[0]", cm.exception.body["error"]["message"])
        self.assertIn("image", cm.exception.body["error"]["message"])

    def test_bad_key_401(self):
        bad = anthropic.Anthropic(base_url=server.base_url, api_key="wrong", max_retries=0)
        with self.assertRaises(anthropic.AuthenticationError) as cm:
            bad.messages.create(model=MODEL_ID, max_tokens=8, messages=HELLO)
        self.assertEqual(cm.exception.body["error"]["type"], "authentication_error")
        status, body = server.json("POST", "/v1/messages", {"model": MODEL_ID, "max_tokens": 2, "messages": HELLO})
        self.assertEqual(status, 401)
        self.check_error(status, body, "authentication_error")

    def test_unknown_model_404(self):
        with self.assertRaises(anthropic.NotFoundError) as cm:
            client.messages.create(model="claude-nonexistent", max_tokens=8, messages=HELLO)
        self.assertEqual(cm.exception.body["error"]["type"], "not_found_error")
        self.assertIn("claude-nonexistent", cm.exception.body["error"]["message"])

    def test_refused_fields_name_themselves(self):
        cases = [
            ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools[0].type"),
            # SmolLM2's template does not read enable_thinking, so either mode would change nothing.
            ({"thinking": {"type": "enabled", "budget_tokens": 1024}, "max_tokens": 2048}, "'thinking' would change nothing"),
            ({"thinking": {"type": "disabled"}}, "'thinking' would change nothing"),
            ({"thinking": {"type": "enabled", "budget_tokens": 1024}}, "thinking.budget_tokens"),
            ({"tool_choice": {"type": "tool", "name": "missing"}, "tools": [WEATHER]}, "tool_choice.name"),
            ({"temperature": 1.5}, "temperature"),
            ({"top_k": -1}, "top_k"),
            ({"frequency_penalty": 1}, "frequency_penalty"),
            ({"output_config": {"effort": "high"}}, "output_config.effort"),
        ]
        for extra, field in cases:
            with self.subTest(field=field):
                body = {"model": MODEL_ID, "max_tokens": 4, "messages": HELLO, **extra}
                status, reply = server.json("POST", "/v1/messages", body, headers={"x-api-key": "secret"})
                self.assertEqual(status, 400)
                self.assertIn(field, self.check_error(status, reply, "invalid_request_error"))


class LangChainTests(unittest.TestCase):
    def test_chat_anthropic_invoke_stream_and_tools(self):
        from langchain_anthropic import ChatAnthropic
        llm = ChatAnthropic(model=MODEL_ID, base_url=server.base_url, api_key="secret", temperature=0, max_tokens=20, max_retries=0)
        reply = llm.invoke("Write one sentence about the sea.")
        self.assertTrue(reply.content)
        self.assertIn(reply.response_metadata["stop_reason"], ("max_tokens", "end_turn"))
        streamed = "".join(chunk.text for chunk in llm.stream("Write one sentence about the sea."))
        self.assertEqual(streamed, reply.text)

        from langchain_core.tools import tool

        @tool
        def get_weather(city: str) -> str:
            """Get the current weather in a city."""
            return "Sunny"

        bound = ChatAnthropic(model=MODEL_ID, base_url=server.base_url, api_key="secret", temperature=0, max_tokens=64,
                              max_retries=0).bind_tools([get_weather], tool_choice="get_weather")
        call = bound.invoke("What is the weather like in Paris today?")
        self.assertEqual(len(call.tool_calls), 1)
        self.assertEqual(call.tool_calls[0]["name"], "get_weather")
        self.assertIsInstance(call.tool_calls[0]["args"]["city"], str)


if __name__ == "__main__":
    unittest.main()
