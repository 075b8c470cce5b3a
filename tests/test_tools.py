"""Tool calling through real clients: the `openai` SDK (tool_choice forced, required, auto and
none; parallel_tool_calls; streamed tool-call deltas with index and id; a history with assistant
tool_calls and `tool` messages) and `langchain-openai` (bind_tools, with_structured_output with
method="json_schema", streaming)."""

import json
import unittest

import jsonschema

from castserve_harness import MODEL_ID, Server

server = None
client = None

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 30}, "unit": {"enum": ["celsius", "fahrenheit"]}},
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Get the local time in a time zone",
        "parameters": {"type": "object", "properties": {"zone": {"type": "string", "maxLength": 30}}, "required": ["zone"]},
    },
}
TOOLS = [WEATHER, TIME]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
ASK = [{"role": "user", "content": "What is the weather like in Paris today?"}]


def setUpModule():
    global server, client
    server = Server(slots=4).start()
    client = server.openai()


def tearDownModule():
    if server is not None:
        server.stop()


def check_calls(test, calls):
    test.assertTrue(calls)
    for call in calls:
        test.assertEqual(call.type, "function")
        test.assertTrue(call.id.startswith("call_"))
        test.assertIn(call.function.name, SCHEMAS)
        jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])


class OpenAIToolTests(unittest.TestCase):
    def test_forced_function(self):
        for prompt in ["What time is it in Tokyo?", "Weather in Oslo please", "hello"]:
            r = client.chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": prompt}], tools=TOOLS,
                                               tool_choice={"type": "function", "function": {"name": "get_weather"}},
                                               max_tokens=80, temperature=0)
            choice = r.choices[0]
            self.assertEqual(choice.finish_reason, "tool_calls")
            self.assertIsNone(choice.message.content)
            self.assertEqual(len(choice.message.tool_calls), 1)
            self.assertEqual(choice.message.tool_calls[0].function.name, "get_weather")
            check_calls(self, choice.message.tool_calls)

    def test_required_single_call(self):
        r = client.chat.completions.create(model=MODEL_ID, messages=ASK, tools=TOOLS, tool_choice="required",
                                           parallel_tool_calls=False, max_tokens=80, temperature=0.7, seed=11)
        self.assertEqual(r.choices[0].finish_reason, "tool_calls")
        self.assertEqual(len(r.choices[0].message.tool_calls), 1)
        check_calls(self, r.choices[0].message.tool_calls)

    def test_auto_is_a_valid_call_or_text(self):
        for prompt in ["What is the weather like in Paris today?", "Write one sentence about the sea."]:
            r = client.chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": prompt}], tools=TOOLS,
                                               tool_choice="auto", max_tokens=60, temperature=0)
            m = r.choices[0].message
            if m.tool_calls:
                self.assertEqual(r.choices[0].finish_reason, "tool_calls")
                check_calls(self, m.tool_calls)
            else:
                self.assertTrue(m.content)
                self.assertFalse(m.content.startswith("{"))

    def test_none_ignores_tools(self):
        plain = client.chat.completions.create(model=MODEL_ID, messages=ASK, max_tokens=20, temperature=0)
        r = client.chat.completions.create(model=MODEL_ID, messages=ASK, tools=TOOLS, tool_choice="none", max_tokens=20, temperature=0)
        self.assertIsNone(r.choices[0].message.tool_calls)
        self.assertEqual(r.choices[0].message.content, plain.choices[0].message.content)

    def test_streaming_tool_call_deltas(self):
        kwargs = dict(model=MODEL_ID, messages=ASK, tools=TOOLS, tool_choice={"type": "function", "function": {"name": "get_weather"}},
                      max_tokens=80, temperature=0)
        whole = client.chat.completions.create(**kwargs).choices[0].message.tool_calls[0]
        calls, finish, first_seen = {}, None, {}
        for chunk in client.chat.completions.create(stream=True, **kwargs):
            for ch in chunk.choices:
                for d in ch.delta.tool_calls or []:
                    entry = calls.setdefault(d.index, {"id": None, "name": "", "arguments": ""})
                    if d.id:
                        self.assertIsNone(entry["id"], "the id comes once, in the call's first delta")
                        entry["id"] = d.id
                        first_seen[d.index] = d.function.name
                    if d.function and d.function.name:
                        entry["name"] += d.function.name
                    if d.function and d.function.arguments:
                        entry["arguments"] += d.function.arguments
                    self.assertIsNone(ch.delta.content)
                if ch.finish_reason:
                    finish = ch.finish_reason
        self.assertEqual(finish, "tool_calls")
        self.assertEqual(list(calls), [0])
        self.assertTrue(calls[0]["id"].startswith("call_"))
        self.assertEqual(calls[0]["name"], "get_weather")
        self.assertEqual(calls[0]["arguments"], whole.function.arguments)
        jsonschema.validate(json.loads(calls[0]["arguments"]), SCHEMAS["get_weather"])

    def test_one_argument_call_fits_in_64_tokens(self):
        # A small model that has made a call tends to repeat it until max_tokens (7 of these 12
        # sampled "required" replies did before); a repeated call now ends the reply.
        city = {"type": "function", "function": {"name": "get_weather", "description": "Get the current weather in a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
        schema = city["function"]["parameters"]
        for choice in ["required", {"type": "function", "function": {"name": "get_weather"}}]:
            for prompt in ["What is the weather like in Paris today?", "Is it raining in Tokyo?", "weather berlin", "Tell me a joke"]:
                for seed in [1, 2, 3]:
                    r = client.chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": prompt}], tools=[city],
                                                       tool_choice=choice, max_tokens=64, temperature=0.8, seed=seed)
                    c = r.choices[0]
                    label = f"{choice} {prompt!r} seed {seed}: {r.usage.completion_tokens} tokens, {c.message}"
                    self.assertEqual(c.finish_reason, "tool_calls", label)
                    self.assertLessEqual(r.usage.completion_tokens, 64, label)
                    calls = c.message.tool_calls
                    self.assertTrue(calls, label)
                    for call in calls:
                        self.assertEqual(call.function.name, "get_weather")
                        jsonschema.validate(json.loads(call.function.arguments), schema)
                    self.assertEqual(len({call.function.arguments for call in calls}), len(calls), f"a call repeats: {label}")

    def test_a_repeated_call_is_never_streamed(self):
        city = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
        kwargs = dict(model=MODEL_ID, messages=[{"role": "user", "content": "Is it raining in Tokyo?"}], tools=[city], tool_choice="required",
                      max_tokens=64, temperature=0.8)
        for seed in [1, 3]:
            whole = client.chat.completions.create(seed=seed, **kwargs).choices[0].message.tool_calls
            calls, finish = {}, None
            for chunk in client.chat.completions.create(stream=True, seed=seed, **kwargs):
                for ch in chunk.choices:
                    for d in ch.delta.tool_calls or []:
                        entry = calls.setdefault(d.index, {"name": "", "arguments": ""})
                        entry["name"] += (d.function.name or "") if d.function else ""
                        entry["arguments"] += (d.function.arguments or "") if d.function else ""
                    finish = ch.finish_reason or finish
            self.assertEqual(finish, "tool_calls")
            self.assertEqual([(c["name"], c["arguments"]) for c in calls.values()], [(c.function.name, c.function.arguments) for c in whole])

    def test_history_with_tool_results(self):
        first = client.chat.completions.create(model=MODEL_ID, messages=ASK, tools=TOOLS, tool_choice="required",
                                               parallel_tool_calls=False, max_tokens=80, temperature=0)
        call = first.choices[0].message.tool_calls[0]
        history = ASK + [
            {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
            {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temperature": 21, "sky": "clear"})},
        ]
        r = client.chat.completions.create(model=MODEL_ID, messages=history, tools=TOOLS, max_tokens=40, temperature=0)
        self.assertIn(r.choices[0].finish_reason, ("stop", "length", "tool_calls"))
        if r.choices[0].message.tool_calls:
            check_calls(self, r.choices[0].message.tool_calls)
        else:
            self.assertTrue(r.choices[0].message.content)
        # The tool result reaches the prompt: it costs prompt tokens.
        self.assertGreater(r.usage.prompt_tokens, first.usage.prompt_tokens + 10)

    def test_bad_tool_definitions(self):
        cases = [
            ({"tools": [{"type": "function", "function": {"name": "bad name"}}]}, "tools[0].function.name"),
            ({"tools": [WEATHER, WEATHER]}, "tools[1].function.name"),
            ({"tool_choice": "required"}, "tool_choice"),
            ({"tools": TOOLS, "tool_choice": "sometimes"}, "tool_choice"),
            ({"messages": ASK + [{"role": "tool", "content": "x"}]}, "messages[1].tool_call_id"),
        ]
        for extra, param in cases:
            body = {"model": MODEL_ID, "messages": ASK, "max_tokens": 4, **extra}
            status, reply = server.json("POST", "/v1/chat/completions", body)
            self.assertEqual(status, 400, (extra, reply))
            self.assertEqual(reply["error"]["param"], param, reply)


class LangChainTests(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        from langchain_openai import ChatOpenAI
        cls.llm = ChatOpenAI(model=MODEL_ID, base_url=server.base_url + "/v1", api_key="unused", temperature=0, max_tokens=120,
                             max_retries=0, timeout=60)

    def test_with_structured_output_json_schema(self):
        from pydantic import BaseModel, Field

        class City(BaseModel):
            """A city and its country."""
            name: str = Field(max_length=30)
            country: str = Field(max_length=30)
            population_millions: float

        structured = self.llm.with_structured_output(City, method="json_schema")
        for prompt in ["Tell me about Paris.", "Describe a large city in Japan."]:
            city = structured.invoke(prompt)
            self.assertIsInstance(city, City)
            jsonschema.validate(city.model_dump(), City.model_json_schema())

    def test_bind_tools(self):
        from langchain_core.tools import tool

        @tool
        def multiply(a: int, b: int) -> int:
            """Multiply two integers."""
            return a * b

        bound = self.llm.bind_tools([multiply], tool_choice="multiply")
        msg = bound.invoke("What is 6 times 7?")
        self.assertEqual(len(msg.tool_calls), 1)
        call = msg.tool_calls[0]
        self.assertEqual(call["name"], "multiply")
        self.assertIsInstance(call["args"]["a"], int)
        self.assertIsInstance(call["args"]["b"], int)
        self.assertEqual(multiply.invoke(call["args"]), call["args"]["a"] * call["args"]["b"])

    def test_streaming(self):
        whole = self.llm.invoke("Name three colours.").content
        streamed = "".join(chunk.content for chunk in self.llm.stream("Name three colours."))
        self.assertEqual(streamed, whole)
        self.assertTrue(whole)

    def test_streaming_tool_calls(self):
        from langchain_core.tools import tool

        @tool
        def get_weather(city: str) -> str:
            """Get the weather of a city."""
            return "sunny"

        bound = self.llm.bind_tools([get_weather], tool_choice="get_weather")
        merged = None
        for chunk in bound.stream("Weather in Rome?"):
            merged = chunk if merged is None else merged + chunk
        self.assertEqual(len(merged.tool_calls), 1)
        self.assertEqual(merged.tool_calls[0]["name"], "get_weather")
        self.assertIsInstance(merged.tool_calls[0]["args"]["city"], str)


if __name__ == "__main__":
    unittest.main()
