"""Reasoning output of thinking models end to end, on the synthetic qwen3 chat model
(tools/reference/gen_synthetic.py's qwen3_chat: random weights, a byte-level tokenizer with Qwen3's
special tokens, and the real Qwen3 chat template).

A random model never writes `<think>` by itself, so each reply is forced with a GBNF `grammar`
(greedy, so the text is fixed) and the test checks how the server splits it: `reasoning_content`
and `reasoning` on the message and on stream deltas, content without the think block, stop strings
and the token budget on the whole text, `enable_thinking` / `chat_template_kwargs` reaching the
template (the prompt grows by Qwen3's empty think block), a template that opens the block in the
prompt, `--reasoning-format none`, and the 400s. The `openai` SDK reads the fields.
"""

import json
import os
import unittest

from castserve_harness import ROOT, Server

SYNTHETIC = os.path.join(ROOT, "Tests", "Fixtures", "synthetic", "qwen3_chat.gguf")
TEMPLATE = os.path.join(ROOT, "Tests", "Fixtures", "qwen3_chat_template.jinja")
ASK = [{"role": "user", "content": "What is 2+2?"}]
THOUGHT = "<think>\nI add two and two.\n</think>\n\nFour."


def forced(text):
    """A grammar whose only sentence is `text` (a GBNF string literal)."""
    return "root ::= " + json.dumps(text)


def require_synthetic():
    if not os.path.exists(SYNTHETIC):
        raise unittest.SkipTest(f"{SYNTHETIC} is missing; run `make synthetic-models`")


def serve(args=(), env=None):
    require_synthetic()
    return Server(slots=2, args=["--model", SYNTHETIC, *args], env=env, context_length=512).start()


def setUpModule():
    global server, client
    server = None
    server = serve()
    client = server.openai()


def tearDownModule():
    if server is not None:
        server.stop()


def chat(extra=None, **kwargs):
    body = {"model": "default", "messages": ASK, "temperature": 0, "max_tokens": 64}
    body.update(kwargs)
    body.update(extra or {})
    return server.json("POST", "/v1/chat/completions", body)


class ReasoningSplitTests(unittest.TestCase):
    def test_message_has_reasoning_apart_from_content(self):
        status, body = chat(grammar=forced(THOUGHT))
        self.assertEqual(status, 200, body)
        message = body["choices"][0]["message"]
        self.assertEqual(message["reasoning_content"], "I add two and two.")
        self.assertEqual(message["reasoning"], "I add two and two.")
        self.assertEqual(message["content"], "Four.")
        self.assertEqual(body["choices"][0]["finish_reason"], "stop")

    def test_sdk_reads_reasoning_content_whole_and_streamed(self):
        whole = client.chat.completions.create(model="default", messages=ASK, temperature=0, max_tokens=64,
                                               extra_body={"grammar": forced(THOUGHT)})
        self.assertEqual(whole.choices[0].message.reasoning_content, "I add two and two.")
        self.assertEqual(whole.choices[0].message.content, "Four.")
        reasoning, content, chunks = "", "", 0
        for chunk in client.chat.completions.create(model="default", messages=ASK, temperature=0, max_tokens=64, stream=True,
                                                    extra_body={"grammar": forced(THOUGHT)}):
            if not chunk.choices:
                continue
            delta = chunk.choices[0].delta
            r = getattr(delta, "reasoning_content", None)
            self.assertEqual(r, getattr(delta, "reasoning", None))
            reasoning += r or ""
            content += delta.content or ""
            self.assertNotIn("think>", delta.content or "")
            chunks += 1
        self.assertEqual(reasoning, "I add two and two.")
        self.assertEqual(content, "Four.")
        self.assertGreater(chunks, 4)  # the reasoning came in pieces, not in one final chunk

    def test_no_think_block_means_no_reasoning_field(self):
        status, body = chat(grammar=forced("Just four."))
        self.assertEqual(status, 200, body)
        message = body["choices"][0]["message"]
        self.assertEqual(message["content"], "Just four.")
        self.assertNotIn("reasoning_content", message)
        self.assertNotIn("reasoning", message)

    def test_stop_strings_apply_to_the_whole_text(self):
        # A stop string inside the reasoning ends the reply there: nothing reaches the content.
        status, body = chat(grammar=forced(THOUGHT), stop=["two and"])
        self.assertEqual(status, 200, body)
        message = body["choices"][0]["message"]
        self.assertEqual(message["reasoning_content"], "I add")
        self.assertEqual(message["content"], "")
        self.assertEqual(body["choices"][0]["finish_reason"], "stop")
        status, body = chat(grammar=forced(THOUGHT + " Five."), stop=[" Five"])
        self.assertEqual(body["choices"][0]["message"]["content"], "Four.")
        self.assertEqual(body["choices"][0]["message"]["reasoning_content"], "I add two and two.")

    def test_token_budget_can_end_inside_the_reasoning(self):
        status, body = chat(grammar=forced(THOUGHT), max_tokens=12)
        self.assertEqual(status, 200, body)
        choice = body["choices"][0]
        self.assertEqual(choice["finish_reason"], "length")
        self.assertEqual(choice["message"]["content"], "")
        reasoning = choice["message"].get("reasoning_content", "")
        self.assertTrue(reasoning and "I add two and two.".startswith(reasoning), reasoning)
        self.assertEqual(body["usage"]["completion_tokens"], 12)


class TemplateVariableTests(unittest.TestCase):
    def test_enable_thinking_reaches_the_template(self):
        # Qwen3's template closes an empty think block in the prompt when thinking is off:
        # `<think>`, "\n\n", `</think>`, "\n\n": 4 more prompt tokens (the model merges "\n\n").
        base = chat(grammar=forced("Four."))[1]["usage"]["prompt_tokens"]
        on = chat(grammar=forced("Four."), enable_thinking=True)[1]["usage"]["prompt_tokens"]
        off = chat(grammar=forced("Four."), enable_thinking=False)[1]["usage"]["prompt_tokens"]
        kwargs = chat(grammar=forced("Four."), chat_template_kwargs={"enable_thinking": False})[1]["usage"]["prompt_tokens"]
        self.assertEqual(on, base)
        self.assertEqual(off, base + 4)
        self.assertEqual(kwargs, off)
        sdk = client.chat.completions.create(model="default", messages=ASK, temperature=0, max_tokens=8,
                                             extra_body={"chat_template_kwargs": {"enable_thinking": False}, "grammar": forced("Four.")})
        self.assertEqual(sdk.usage.prompt_tokens, off)
        self.assertEqual(sdk.choices[0].message.content, "Four.")

    def test_reasoning_sent_back_in_history_reaches_the_template(self):
        # After the last user turn, Qwen3's template renders an assistant turn's reasoning_content.
        turns = ASK + [{"role": "assistant", "content": "", "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "add", "arguments": "{}"}}]}]
        tool = [{"role": "tool", "tool_call_id": "call_1", "content": "4"}]
        plain = chat(messages=turns + tool, grammar=forced("Four."))
        with_reasoning = chat(messages=[*ASK, dict(turns[1], reasoning_content="Call add."), *tool], grammar=forced("Four."))
        self.assertEqual(plain[0], 200, plain[1])
        self.assertGreater(with_reasoning[1]["usage"]["prompt_tokens"], plain[1]["usage"]["prompt_tokens"] + len("Call add.") - 1)

    def test_messages_thinking_reaches_the_template(self):
        # As enable_thinking on chat: disabled closes an empty think block in the prompt (4 tokens).
        import anthropic
        anthropic_client = anthropic.Anthropic(base_url=server.base_url, api_key="unused", max_retries=0)

        def count(**kwargs):
            return anthropic_client.messages.count_tokens(model="default", messages=ASK, **kwargs).input_tokens
        base = count()
        self.assertEqual(count(thinking={"type": "enabled", "budget_tokens": 1024}), base)
        self.assertEqual(count(thinking={"type": "disabled"}), base + 4)
        reply = anthropic_client.messages.create(model="default", max_tokens=4, messages=ASK, thinking={"type": "disabled"})
        self.assertEqual(reply.usage.input_tokens + (reply.usage.cache_read_input_tokens or 0), base + 4)  # computed + cached
        for thinking, param in [({"type": "enabled", "budget_tokens": 1000}, "thinking.budget_tokens"),
                                ({"type": "enabled", "budget_tokens": 4096}, "thinking.budget_tokens"),
                                ({"type": "adaptive"}, "thinking.type")]:
            status, body = server.json("POST", "/v1/messages", {"model": "default", "max_tokens": 2048, "messages": ASK, "thinking": thinking})
            self.assertEqual(status, 400, body)
            self.assertIn(param, body["error"]["message"])

    def test_refusals_name_the_field(self):
        cases = [
            ({"chat_template_kwargs": ["enable_thinking"]}, "chat_template_kwargs"),
            ({"chat_template_kwargs": {"enable_thinking": "no"}}, "chat_template_kwargs.enable_thinking"),
            ({"chat_template_kwargs": {"messages": []}}, "chat_template_kwargs.messages"),
            ({"chat_template_kwargs": {"reasoning_effort": "low"}}, "chat_template_kwargs.reasoning_effort"),
            ({"enable_thinking": "yes"}, "enable_thinking"),
            ({"enable_thinking": True, "chat_template_kwargs": {"enable_thinking": False}}, "enable_thinking"),
            ({"messages": [{"role": "assistant", "content": "x", "reasoning_content": 5}]}, "messages[0].reasoning_content"),
        ]
        for extra, param in cases:
            status, body = chat(extra)
            self.assertEqual(status, 400, (extra, body))
            self.assertEqual(body["error"]["param"], param, (extra, body))
        status, body = server.json("POST", "/v1/completions", {"model": "default", "prompt": "x", "enable_thinking": False})
        self.assertEqual(status, 400, body)
        self.assertEqual(body["error"]["param"], "enable_thinking")


class OpenedBlockTests(unittest.TestCase):
    """A template that opens the think block in its generation prompt (as Qwen3's thinking-only
    releases and DeepSeek-R1's newer templates do): the reply starts inside the reasoning."""

    @classmethod
    def setUpClass(cls):
        with open(TEMPLATE, encoding="utf-8") as f:
            source = f.read()
        closed = "{{- '<think>\\n\\n</think>\\n\\n' }}\n"
        assert closed in source
        opened = source.replace(closed, closed + "    {%- else %}\n        {{- '<think>\\n' }}\n")
        cls.server = serve(env={"CASTSERVE_CHAT_TEMPLATE": opened})

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def post(self, **kwargs):
        body = {"model": "default", "messages": ASK, "temperature": 0, "max_tokens": 64}
        body.update(kwargs)
        return self.server.json("POST", "/v1/chat/completions", body)

    def test_reply_starts_in_the_reasoning(self):
        status, body = self.post(grammar=forced("Two and two.\n</think>\n\nFour."))
        self.assertEqual(status, 200, body)
        self.assertEqual(body["choices"][0]["message"]["reasoning_content"], "Two and two.")
        self.assertEqual(body["choices"][0]["message"]["content"], "Four.")

    def test_unconstrained_reply_without_close_is_all_reasoning(self):
        status, body = self.post(max_tokens=8, logit_bias={"259": -100, "261": -100})  # no <|im_end|> (259), no </think> (261)
        self.assertEqual(status, 200, body)
        message = body["choices"][0]["message"]
        self.assertEqual(message["content"], "")
        self.assertTrue(message.get("reasoning_content"), message)

    def test_messages_api_returns_a_thinking_block_equal_to_chat(self):
        # Greedy, so /v1/messages (anthropic SDK) and chat completions generate the same reply.
        status, body = self.post(max_tokens=12)
        self.assertEqual(status, 200, body)
        reasoning = body["choices"][0]["message"].get("reasoning_content", "")
        content = body["choices"][0]["message"]["content"]
        self.assertTrue(reasoning, body)
        import anthropic
        client = anthropic.Anthropic(base_url=self.server.base_url, api_key="unused", max_retries=0)
        reply = client.messages.create(model="default", max_tokens=12, messages=ASK, extra_body={"temperature": 0})
        self.assertEqual(reply.content[0].type, "thinking")
        self.assertEqual(reply.content[0].thinking, reasoning)
        self.assertEqual("".join(b.text for b in reply.content if b.type == "text"), content)
        thinking, text, kinds = "", "", []
        with client.messages.stream(model="default", max_tokens=12, messages=ASK, extra_body={"temperature": 0}) as events:
            for event in events:
                if event.type == "content_block_start":
                    kinds.append(event.content_block.type)
                elif event.type == "content_block_delta" and event.delta.type == "thinking_delta":
                    thinking += event.delta.thinking
                elif event.type == "content_block_delta" and event.delta.type == "text_delta":
                    text += event.delta.text
        self.assertEqual(kinds[0], "thinking")
        self.assertEqual((thinking, text), (reasoning, content))

    def test_responses_api_returns_a_reasoning_item_equal_to_chat(self):
        # Greedy, so /v1/responses and chat completions generate the same reply: its reasoning is
        # a `reasoning` item (one reasoning_text part) before the message.
        status, body = self.post(max_tokens=12)
        self.assertEqual(status, 200, body)
        reasoning = body["choices"][0]["message"].get("reasoning_content", "")
        content = body["choices"][0]["message"]["content"]
        self.assertTrue(reasoning, body)
        client = self.server.openai()
        whole = client.responses.create(model="default", input="What is 2+2?", temperature=0, max_output_tokens=12)
        self.assertEqual([item.type for item in whole.output], ["reasoning", "message"])
        item = whole.output[0]
        self.assertTrue(item.id.startswith("rs_"), item.id)
        self.assertEqual([(part.type, part.text) for part in item.content], [("reasoning_text", reasoning)])
        self.assertEqual(item.summary, [])
        self.assertEqual(whole.output_text, content)
        self.assertEqual(client.responses.retrieve(whole.id).output[0].content[0].text, reasoning)

        names, deltas, done, items_done, completed = [], "", None, [], None
        for event in client.responses.create(model="default", input="What is 2+2?", temperature=0, max_output_tokens=12, stream=True):
            names.append(event.type)
            if event.type == "response.reasoning_text.delta":
                self.assertEqual((event.output_index, event.content_index), (0, 0))
                deltas += event.delta
            elif event.type == "response.reasoning_text.done":
                done = event.text
            elif event.type == "response.output_item.done":
                items_done.append(event.item)
            elif event.type in ("response.completed", "response.incomplete"):
                completed = event.response
        self.assertEqual(names[2], "response.output_item.added")
        self.assertEqual(names[3], "response.reasoning_text.delta")
        self.assertEqual((deltas, done), (reasoning, reasoning))
        self.assertEqual(items_done[0].type, "reasoning")
        self.assertEqual(items_done[0].content[0].text, reasoning)
        self.assertEqual(completed.output[0].content[0].text, reasoning)
        # The reasoning item closes before the message opens.
        self.assertEqual(names[names.index("response.reasoning_text.done") + 1:][:2], ["response.output_item.done", "response.output_item.added"])

    def test_messages_thinking_enabled_and_disabled(self):
        import anthropic
        client = anthropic.Anthropic(base_url=self.server.base_url, api_key="unused", max_retries=0)
        off = client.messages.create(model="default", max_tokens=8, messages=ASK, thinking={"type": "disabled"},
                                     extra_body={"temperature": 0})
        self.assertNotIn("thinking", [block.type for block in off.content])
        # The budget is checked, not enforced: the reply ends at max_tokens (here the context).
        on = client.messages.create(model="default", max_tokens=1025, messages=ASK, thinking={"type": "enabled", "budget_tokens": 1024},
                                    extra_body={"temperature": 0})
        self.assertEqual(on.content[0].type, "thinking")
        self.assertTrue(on.content[0].thinking)

    def test_thinking_off_starts_in_the_content(self):
        status, body = self.post(grammar=forced("Four."), enable_thinking=False)
        self.assertEqual(body["choices"][0]["message"]["content"], "Four.")
        self.assertNotIn("reasoning_content", body["choices"][0]["message"])

    def test_a_json_schema_reply_is_the_answer(self):
        fmt = {"type": "json_schema", "json_schema": {"name": "n", "schema": {"type": "object", "properties": {"n": {"type": "integer"}},
                                                                              "required": ["n"]}}}
        status, body = self.post(response_format=fmt, max_tokens=64)
        self.assertEqual(status, 200, body)
        message = body["choices"][0]["message"]
        self.assertNotIn("reasoning_content", message)
        if body["choices"][0]["finish_reason"] == "stop":
            self.assertIsInstance(json.loads(message["content"])["n"], int)


class ReasoningFormatNoneTests(unittest.TestCase):
    def test_think_block_stays_in_the_content(self):
        other = serve(args=["--reasoning-format", "none"])
        try:
            status, body = other.json("POST", "/v1/chat/completions", {"model": "default", "messages": ASK, "temperature": 0,
                                                                         "max_tokens": 64, "grammar": forced(THOUGHT)})
            self.assertEqual(status, 200, body)
            message = body["choices"][0]["message"]
            self.assertEqual(message["content"], THOUGHT)
            self.assertNotIn("reasoning_content", message)
        finally:
            other.stop()


if __name__ == "__main__":
    unittest.main()
