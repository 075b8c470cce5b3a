"""The OpenAI Responses API (`POST /v1/responses`, `GET`/`DELETE /v1/responses/{id}`) through the real
`openai` client: plain and streamed replies (the documented event sequence, `sequence_number` counting
from 0), function tools round trip (function_call -> function_call_output -> answer) with
`tool_choice` honoured, `text.format` json_schema validated with `jsonschema`, `previous_response_id`
over the bounded store, cached input tokens, and 400s naming every field the server cannot honour.
Greedy replies equal the same conversation through chat completions; speculation stays on."""

import json
import unittest
from typing import Annotated, Literal, Optional

import jsonschema
import openai
from pydantic import BaseModel, Field

from castserve_harness import MODEL_ID, Server

server = None
client = None
STORE_SIZE = 6

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Get the current weather in a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 20}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}
TIME = {
    "type": "function",
    "name": "get_time",
    "description": "Get the local time in a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 20}},
        "required": ["city"],
        "additionalProperties": False,
    },
}
PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 30},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "role": {"enum": ["admin", "user", "guest"]},
    },
    "required": ["name", "age", "role"],
    "additionalProperties": False,
}
Short = Annotated[str, Field(max_length=20)]


class Stop(BaseModel):
    city: Short
    zip_code: str = Field(pattern=r"^\d{5}$")


class Trip(BaseModel):
    kind: Literal["train", "bus"]
    days: int = Field(ge=1, le=14)
    first: Stop
    note: Optional[Short]


# Long enough to fill whole KV blocks, so a second request reuses them.
SYSTEM = ("You are a helpful assistant for a weather service. Answer briefly, in plain words, and never make up "
          "numbers you were not given. When a question is not about the weather, say so politely and offer help "
          "with the weather instead. Keep every answer under three sentences.")


def setUpModule():
    global server, client
    server = Server(slots=2, env={"CASTSERVE_RESPONSES_STORE_SIZE": str(STORE_SIZE)}).start()
    client = server.openai()


def tearDownModule():
    if server:
        server.stop()


def events_of(**kwargs):
    return list(client.responses.create(model=MODEL_ID, stream=True, **kwargs))


class PlainTest(unittest.TestCase):
    def test_create_returns_a_completed_message_with_usage(self):
        r = client.responses.create(model=MODEL_ID, input="Say hello to Ana.", max_output_tokens=24, temperature=0)
        self.assertTrue(r.id.startswith("resp_"))
        self.assertEqual(r.object, "response")
        self.assertIn(r.status, ("completed", "incomplete"))
        self.assertEqual(len(r.output), 1)
        item = r.output[0]
        self.assertEqual((item.type, item.role), ("message", "assistant"))
        self.assertEqual([p.type for p in item.content], ["output_text"])
        self.assertTrue(r.output_text.strip())
        self.assertEqual(r.output_text, item.content[0].text)
        u = r.usage
        self.assertGreater(u.input_tokens, 5)
        self.assertGreater(u.output_tokens, 0)
        self.assertEqual(u.total_tokens, u.input_tokens + u.output_tokens)
        self.assertLessEqual(u.input_tokens_details.cached_tokens, u.input_tokens)

    def test_max_output_tokens_makes_an_incomplete_response(self):
        r = client.responses.create(model=MODEL_ID, input="Tell me a long story about a dragon.", max_output_tokens=3, temperature=0)
        self.assertEqual(r.status, "incomplete")
        self.assertEqual(r.incomplete_details.reason, "max_output_tokens")
        self.assertEqual(r.usage.output_tokens, 3)
        self.assertEqual(r.output[0].status, "incomplete")

    def test_cached_input_tokens_come_from_prefix_reuse(self):
        first = client.responses.create(model=MODEL_ID, instructions=SYSTEM, input="Will it rain?", max_output_tokens=2, temperature=0, store=False)
        second = client.responses.create(model=MODEL_ID, instructions=SYSTEM, input="Is it windy?", max_output_tokens=2, temperature=0, store=False)
        cached = second.usage.input_tokens_details.cached_tokens
        self.assertGreaterEqual(cached, 32, "the shared instructions were not reported as cached")
        self.assertLessEqual(cached, second.usage.input_tokens)
        self.assertLessEqual(first.usage.input_tokens_details.cached_tokens, first.usage.input_tokens)


class EqualsChatTest(unittest.TestCase):
    """Greedy output through /v1/responses equals the same conversation through chat completions."""

    def assertSameReply(self, responses_kwargs, messages, **chat_kwargs):
        r = client.responses.create(model=MODEL_ID, temperature=0, max_output_tokens=32, store=False, **responses_kwargs)
        c = client.chat.completions.create(model=MODEL_ID, messages=messages, temperature=0, max_tokens=32, **chat_kwargs)
        self.assertEqual(r.output_text, c.choices[0].message.content)
        self.assertEqual(r.usage.input_tokens, c.usage.prompt_tokens)
        self.assertEqual(r.usage.output_tokens, c.usage.completion_tokens)
        return r

    def test_instructions_and_a_string_input(self):
        self.assertSameReply({"instructions": "Answer in one sentence.", "input": "What is the capital of France?"},
                             [{"role": "system", "content": "Answer in one sentence."},
                              {"role": "user", "content": "What is the capital of France?"}])

    def test_a_conversation_with_a_function_call_and_its_output(self):
        items = [
            {"role": "user", "content": "What is the weather in Paris?"},
            {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{\"city\": \"Paris\"}"},
            {"type": "function_call_output", "call_id": "call_1", "output": "Sunny, 24 degrees"},
        ]
        messages = [
            {"role": "user", "content": "What is the weather in Paris?"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "Sunny, 24 degrees"},
        ]
        chat_tool = {"type": "function", "function": {k: WEATHER[k] for k in ("name", "description", "parameters")}}
        r = self.assertSameReply({"input": items, "tools": [WEATHER], "tool_choice": "none"}, messages,
                                 tools=[chat_tool], tool_choice="none")
        self.assertEqual(r.output[0].type, "message")

    def test_speculation_stays_on(self):
        text = ("The river runs past the old mill, under the stone bridge, and out to the sea. "
                "Every spring the water rises and every autumn it falls again.")
        r = self.assertSameReply({"input": "Repeat this text exactly:\n\n" + text},
                                 [{"role": "user", "content": "Repeat this text exactly:\n\n" + text}])
        spec = r.usage.model_extra["speculation"]
        self.assertGreater(spec["drafted_tokens"], 0)
        self.assertLess(spec["decode_steps"], r.usage.output_tokens - 1)

    def test_message_items_with_content_parts(self):
        items = [
            {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "Be brief."}]},
            {"role": "user", "content": [{"type": "input_text", "text": "Name a "}, {"type": "input_text", "text": "color."}]},
            {"role": "assistant", "content": [{"type": "output_text", "text": "Blue.", "annotations": []}]},
            {"role": "user", "content": "Another one?"},
        ]
        self.assertSameReply({"input": items}, [
            {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a color."},
            {"role": "assistant", "content": "Blue."}, {"role": "user", "content": "Another one?"}])


class StreamingTest(unittest.TestCase):
    def assertNumbered(self, events):
        self.assertEqual([e.sequence_number for e in events], list(range(len(events))))

    def test_text_events_follow_the_documented_sequence(self):
        events = events_of(input="Count from one to five.", max_output_tokens=16, temperature=0)
        types = [e.type for e in events]
        deltas = [e for e in events if e.type == "response.output_text.delta"]
        self.assertGreater(len(deltas), 1)
        head = ["response.created", "response.in_progress", "response.output_item.added", "response.content_part.added"]
        self.assertEqual(types[:4], head)
        self.assertEqual(types[4:4 + len(deltas)], ["response.output_text.delta"] * len(deltas))
        tail = ["response.output_text.done", "response.content_part.done", "response.output_item.done"]
        self.assertEqual(types[4 + len(deltas):-1], tail)
        self.assertIn(types[-1], ("response.completed", "response.incomplete"))
        self.assertNumbered(events)
        self.assertEqual(events[0].response.status, "in_progress")
        text = "".join(d.delta for d in deltas)
        done = events[-4]
        self.assertEqual(done.text, text)
        self.assertEqual(events[-2].item.content[0].text, text)
        final = events[-1].response
        self.assertEqual(final.output_text, text)
        self.assertEqual(final.id, events[0].response.id)
        self.assertGreater(final.usage.output_tokens, 0)
        # The same request without streaming gives the same text.
        whole = client.responses.create(model=MODEL_ID, input="Count from one to five.", max_output_tokens=16, temperature=0, store=False)
        self.assertEqual(whole.output_text, text)

    def test_function_call_events_stream_the_arguments(self):
        events = events_of(input="What is the weather in Rome?", tools=[WEATHER], tool_choice="required", max_output_tokens=64, temperature=0)
        types = [e.type for e in events]
        self.assertNumbered(events)
        deltas = [e for e in events if e.type == "response.function_call_arguments.delta"]
        self.assertGreater(len(deltas), 0)
        self.assertEqual(types[:3], ["response.created", "response.in_progress", "response.output_item.added"])
        self.assertEqual(events[2].item.type, "function_call")
        self.assertEqual(types[-3:], ["response.function_call_arguments.done", "response.output_item.done", "response.completed"])
        self.assertNotIn("response.output_text.delta", types)
        arguments = "".join(d.delta for d in deltas)
        self.assertEqual(events[-3].arguments, arguments)
        self.assertEqual(events[-2].item.arguments, arguments)
        self.assertEqual(json.loads(arguments).keys(), {"city"})
        self.assertEqual(events[-1].response.output[0].call_id, events[2].item.call_id)


class ToolsTest(unittest.TestCase):
    def test_function_call_round_trip(self):
        first = client.responses.create(model=MODEL_ID, input="What is the weather in Paris?", tools=[WEATHER],
                                        tool_choice="required", max_output_tokens=64, temperature=0)
        self.assertEqual(first.status, "completed")
        calls = [o for o in first.output if o.type == "function_call"]
        self.assertGreaterEqual(len(calls), 1)
        call = calls[0]
        self.assertEqual(call.name, "get_weather")
        self.assertTrue(call.call_id.startswith("call_"))
        jsonschema.validate(json.loads(call.arguments), WEATHER["parameters"])
        # Send the whole conversation back with the result: the model answers in text.
        items = [{"role": "user", "content": "What is the weather in Paris?"},
                 {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
                 {"type": "function_call_output", "call_id": call.call_id, "output": "Sunny, 24 degrees"}]
        answer = client.responses.create(model=MODEL_ID, input=items, tools=[WEATHER], tool_choice="none",
                                         max_output_tokens=32, temperature=0)
        self.assertEqual([o.type for o in answer.output], ["message"])
        self.assertTrue(answer.output_text.strip())
        # The same through previous_response_id: only the output is sent.
        continued = client.responses.create(model=MODEL_ID, previous_response_id=first.id, tools=[WEATHER], tool_choice="none",
                                            input=[{"type": "function_call_output", "call_id": call.call_id, "output": "Sunny, 24 degrees"}],
                                            max_output_tokens=32, temperature=0)
        self.assertEqual([o.type for o in continued.output], ["message"])
        self.assertEqual(continued.usage.input_tokens, answer.usage.input_tokens)
        self.assertEqual(continued.output_text, answer.output_text)

    def test_named_tool_choice_forces_that_function(self):
        r = client.responses.create(model=MODEL_ID, input="What is the weather in Oslo?", tools=[WEATHER, TIME],
                                    tool_choice={"type": "function", "name": "get_time"}, max_output_tokens=64, temperature=0)
        self.assertEqual([(o.type, o.name) for o in r.output], [("function_call", "get_time")])

    def test_tool_choice_none_answers_in_text(self):
        r = client.responses.create(model=MODEL_ID, input="What is the weather in Oslo?", tools=[WEATHER],
                                    tool_choice="none", max_output_tokens=16, temperature=0)
        self.assertEqual([o.type for o in r.output], ["message"])

    def test_parallel_tool_calls_false_makes_one_call(self):
        r = client.responses.create(model=MODEL_ID, input="Weather and time in Oslo and Rome?", tools=[WEATHER, TIME],
                                    tool_choice="required", parallel_tool_calls=False, max_output_tokens=64, temperature=0)
        self.assertEqual([o.type for o in r.output], ["function_call"])


class TextFormatTest(unittest.TestCase):
    def test_json_schema_replies_validate(self):
        for prompt in ["Describe a fictional person as JSON.", "Invent a user of a website.", "Tell me about an admin named Bo."]:
            r = client.responses.create(model=MODEL_ID, input=prompt, max_output_tokens=96, temperature=0.7,
                                        text={"format": {"type": "json_schema", "name": "person", "schema": PERSON, "strict": True}})
            self.assertEqual(r.status, "completed", r.output_text)
            jsonschema.validate(json.loads(r.output_text), PERSON)
            self.assertEqual(r.text.format.type, "json_schema")

    def test_responses_parse_fills_a_pydantic_model(self):
        for prompt in ["Plan a short train trip.", "Plan a bus trip to Lyon."]:
            r = client.responses.parse(model=MODEL_ID, input=prompt, text_format=Trip, max_output_tokens=96, temperature=0.7)
            self.assertEqual(r.status, "completed", r.output_text)
            trip = r.output_parsed
            self.assertIsInstance(trip, Trip)
            self.assertIn(trip.kind, ("train", "bus"))
            self.assertTrue(1 <= trip.days <= 14)
            self.assertRegex(trip.first.zip_code, r"^\d{5}$")

    def test_json_object_replies_are_objects(self):
        r = client.responses.create(model=MODEL_ID, input="Give me a JSON object about a cat.", max_output_tokens=64,
                                    temperature=0, text={"format": {"type": "json_object"}})
        if r.status == "completed":
            self.assertIsInstance(json.loads(r.output_text), dict)
        else:
            self.assertTrue(r.output_text.lstrip().startswith("{"))

    def test_json_schema_properties_follow_the_schema_order(self):
        schema = {"type": "object", "properties": {"zeta": {"type": "integer"}, "alpha": {"type": "boolean"}},
                  "required": ["zeta", "alpha"], "additionalProperties": False}
        r = client.responses.create(model=MODEL_ID, input="Give me JSON.", max_output_tokens=32, temperature=0,
                                    text={"format": {"type": "json_schema", "name": "z", "schema": schema}})
        self.assertEqual(list(json.loads(r.output_text)), ["zeta", "alpha"])


class StoreTest(unittest.TestCase):
    def test_get_delete_and_continue_a_stored_response(self):
        first = client.responses.create(model=MODEL_ID, input="My name is Ana. Say hi.", max_output_tokens=8, temperature=0)
        got = client.responses.retrieve(first.id)
        self.assertEqual((got.id, got.output_text, got.usage.output_tokens), (first.id, first.output_text, first.usage.output_tokens))
        second = client.responses.create(model=MODEL_ID, previous_response_id=first.id, input="What is my name?",
                                         max_output_tokens=8, temperature=0)
        self.assertEqual(second.previous_response_id, first.id)
        # The stored conversation (question and reply) is part of the second prompt.
        self.assertGreater(second.usage.input_tokens, first.usage.input_tokens + first.usage.output_tokens)
        # It equals sending the whole conversation through chat completions.
        chat = client.chat.completions.create(model=MODEL_ID, temperature=0, max_tokens=8, messages=[
            {"role": "user", "content": "My name is Ana. Say hi."}, {"role": "assistant", "content": first.output_text},
            {"role": "user", "content": "What is my name?"}])
        self.assertEqual(second.output_text, chat.choices[0].message.content)
        client.responses.delete(first.id)
        with self.assertRaises(openai.NotFoundError):
            client.responses.retrieve(first.id)
        with self.assertRaises(openai.NotFoundError):
            client.responses.delete(first.id)
        with self.assertRaises(openai.BadRequestError) as e:
            client.responses.create(model=MODEL_ID, previous_response_id=first.id, input="Again?", max_output_tokens=4)
        self.assertEqual(e.exception.body["param"], "previous_response_id")

    def test_input_items_list_the_request_input(self):
        """GET /v1/responses/{id}/input_items through the client's paginated list: the request's own
        items (not the continued conversation), newest first by default, pages by limit and after."""
        first = client.responses.create(model=MODEL_ID, max_output_tokens=4, temperature=0, input=[
            {"role": "developer", "content": "Answer briefly."},
            {"role": "user", "content": [{"type": "input_text", "text": "Hello"}, {"type": "input_text", "text": " there"}]},
            {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{\"city\": \"Oslo\"}"},
            {"type": "function_call_output", "call_id": "call_1", "output": "12 C"}], tools=[WEATHER])
        items = list(client.responses.input_items.list(first.id, order="asc"))
        self.assertEqual([i.type for i in items], ["message", "message", "function_call", "function_call_output"])
        self.assertEqual((items[0].role, items[0].content[0].text), ("system", "Answer briefly."))
        self.assertEqual((items[1].role, items[1].content[0].type, items[1].content[0].text), ("user", "input_text", "Hello there"))
        self.assertEqual((items[2].call_id, items[2].name, json.loads(items[2].arguments)), ("call_1", "get_weather", {"city": "Oslo"}))
        self.assertEqual((items[3].call_id, items[3].output), ("call_1", "12 C"))
        self.assertEqual(len({i.id for i in items}), 4)
        newest_first = list(client.responses.input_items.list(first.id))
        self.assertEqual([i.id for i in newest_first], [i.id for i in reversed(items)])
        # Pages of one: has_more until the last, and `after` continues where a page ended.
        page = client.responses.input_items.list(first.id, limit=1, order="asc")
        self.assertEqual(([i.id for i in page.data], page.has_more), ([items[0].id], True))
        rest = client.responses.input_items.list(first.id, limit=3, order="asc", after=items[0].id)
        self.assertEqual(([i.id for i in rest.data], rest.has_more), ([i.id for i in items[1:]], False))
        # A continuation lists its own input only.
        second = client.responses.create(model=MODEL_ID, previous_response_id=first.id, input="Thanks!", max_output_tokens=2)
        self.assertEqual([(i.role, i.content[0].text) for i in client.responses.input_items.list(second.id)], [("user", "Thanks!")])
        for bad, param in (({"limit": 0}, "limit"), ({"order": "sideways"}, "order"), ({"after": "msg_nope"}, "after")):
            with self.assertRaises(openai.BadRequestError) as e:
                client.responses.input_items.list(first.id, **bad)
            self.assertEqual(e.exception.body["param"], param)
        with self.assertRaises(openai.NotFoundError):
            client.responses.input_items.list("resp_never_stored")

    def test_store_false_is_not_kept(self):
        r = client.responses.create(model=MODEL_ID, input="Hi", max_output_tokens=2, store=False)
        self.assertFalse(r.store)
        with self.assertRaises(openai.NotFoundError):
            client.responses.retrieve(r.id)

    def test_the_store_keeps_only_the_newest(self):
        ids = [client.responses.create(model=MODEL_ID, input=f"Say {i}.", max_output_tokens=1).id for i in range(STORE_SIZE + 1)]
        with self.assertRaises(openai.NotFoundError):
            client.responses.retrieve(ids[0])
        self.assertEqual(client.responses.retrieve(ids[-1]).id, ids[-1])


class ErrorsTest(unittest.TestCase):
    def assertRefused(self, param, *words, **kwargs):
        kwargs.setdefault("model", MODEL_ID)
        kwargs.setdefault("input", "Hi")
        with self.assertRaises(openai.BadRequestError) as e:
            client.responses.create(max_output_tokens=4, **kwargs)
        body = e.exception.body
        self.assertEqual(body["param"], param, body)
        for w in words:
            self.assertIn(w, body["message"])

    def test_built_in_tools_are_refused_by_name(self):
        self.assertRefused("tools[0].type", "web_search", tools=[{"type": "web_search"}])
        self.assertRefused("tools[1].type", "file_search", tools=[WEATHER, {"type": "file_search", "vector_store_ids": ["vs_1"]}])
        self.assertRefused("tools[0].type", "computer_use_preview",
                           tools=[{"type": "computer_use_preview", "display_width": 800, "display_height": 600, "environment": "linux"}])
        self.assertRefused("tools[0].type", "code_interpreter", tools=[{"type": "code_interpreter", "container": {"type": "auto"}}])

    def test_fields_that_would_change_the_answer_are_refused(self):
        self.assertRefused("reasoning", "reasoning", reasoning={"effort": "high"})
        self.assertRefused("truncation", "auto", truncation="auto")
        self.assertRefused("include", "include", include=["message.output_text.logprobs"])
        self.assertRefused("text.verbosity", "verbosity", text={"verbosity": "low"})
        self.assertRefused("input[0].content[0].type", "input_image",
                           input=[{"role": "user", "content": [{"type": "input_image", "image_url": "https://x/y.png"}]}])
        self.assertRefused("input[0].type", "reasoning", input=[{"type": "reasoning", "id": "rs_1", "summary": []}])
        self.assertRefused("max_tool_calls", max_tool_calls=2)
        self.assertRefused("text.format", "both", tools=[WEATHER], text={"format": {"type": "json_object"}})
        self.assertRefused("tool_choice", "get_time", tools=[WEATHER], tool_choice={"type": "function", "name": "get_time"})
        self.assertRefused("tool_choice.type", "file_search", tools=[WEATHER], tool_choice={"type": "file_search"})
        self.assertRefused("seed", "seed", extra_body={"seed": 1})

    def test_malformed_requests_name_the_field(self):
        self.assertRefused("input", "required", input=openai.NOT_GIVEN)
        self.assertRefused("temperature", temperature=3)
        self.assertRefused("input[0].role", "user", input=[{"role": "robot", "content": "hi"}])
        self.assertRefused("tools[0].parameters", tools=[dict(WEATHER, parameters="nope")])
        self.assertRefused("text.format.schema", text={"format": {"type": "json_schema", "name": "x", "schema": {"type": "object", "properties": {"a": {"type": "string", "not": {}}}}}})
        self.assertRefused("previous_response_id", "not found", previous_response_id="resp_missing")
        with self.assertRaises(openai.NotFoundError):
            client.responses.create(model="nope", input="Hi")


if __name__ == "__main__":
    unittest.main()
