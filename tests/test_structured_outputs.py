"""Structured outputs by constrained decoding, through the `openai` client: `chat.completions.parse`
with pydantic models, `response_format` json_schema / json_object (every reply validated with the
`jsonschema` package over several prompts), the keywords pydantic writes (`Field(ge=, le=, gt=, lt=,
pattern=)`, nested models as `$defs`, `Optional`, `Literal`, tagged unions as `oneOf`, `date` and
`uuid` formats), llama.cpp's `grammar` and `json_schema` fields,
`logit_bias`, `sampling_defaults`, and 400s naming the field for what the server cannot honour."""

import datetime
import json
import re
import unittest
import uuid
from typing import Annotated, List, Literal, Optional, Union

import jsonschema
import openai
from pydantic import BaseModel, Field

from castserve_harness import MODEL_ID, Server

server = None
client = None

PROMPTS = [
    "Describe a fictional person as JSON.",
    "Give me details about a city you like.",
    "Invent a book and describe it.",
    "Tell me about a cat named Tom.",
]

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 40},
        "age": {"type": "integer"},
        "email": {"anyOf": [{"type": "string", "maxLength": 40}, {"type": "null"}]},
        "hobbies": {"type": "array", "items": {"type": "string", "maxLength": 30}, "maxItems": 3},
        "role": {"enum": ["admin", "user", "guest"]},
        "verified": {"type": "boolean"},
    },
    "required": ["name", "age", "role", "verified", "hobbies", "email"],
    "additionalProperties": False,
}

NESTED = {
    "type": "object",
    "$defs": {
        "address": {
            "type": "object",
            "properties": {"street": {"type": "string", "maxLength": 30}, "zip": {"type": "string", "maxLength": 8}},
            "required": ["street", "zip"],
            "additionalProperties": False,
        }
    },
    "properties": {
        "id": {"const": "customer"},
        "score": {"type": "number"},
        "home": {"$ref": "#/$defs/address"},
        "others": {"type": "array", "items": {"$ref": "#/$defs/address"}, "minItems": 1, "maxItems": 2},
    },
    "required": ["id", "score", "home", "others"],
    "additionalProperties": False,
}


# Strings are bounded: a 135M model can wander inside a free string until max_tokens.
Short = Annotated[str, Field(max_length=24)]


class Pet(BaseModel):
    name: Short
    species: Literal["cat", "dog", "bird"]
    age_years: int
    tags: List[Short] = Field(max_length=3)
    owner: Optional[Short]


class Address(BaseModel):
    street: Short
    zip_code: str = Field(pattern=r"^\d{5}$")


class Booking(BaseModel):
    """Every keyword pydantic writes for these fields must be honoured, not refused."""
    guest: Short
    guests: int = Field(ge=1, le=12)
    nights: int = Field(gt=0, lt=31)
    rating: float = Field(ge=0, le=5)
    discount: float = Field(gt=-1, lt=0)
    room: Literal["single", "double", "suite"]
    code: str = Field(pattern=r"^[A-Z]{3}-[0-9]{3}$")
    address: Address
    previous: Optional[Address]
    arrival: datetime.date
    ref: uuid.UUID
    notes: Optional[Short] = None


class Cat(BaseModel):
    kind: Literal["cat"]
    lives: int = Field(ge=1, le=9)


class Dog(BaseModel):
    kind: Literal["dog"]
    good: bool


class Owner(BaseModel):
    name: Short
    pet: Union[Cat, Dog] = Field(discriminator="kind")


def setUpModule():
    global server, client
    server = Server(slots=4, args=["--speculation", "on"]).start()
    client = server.openai()


def tearDownModule():
    if server is not None:
        server.stop()


def chat(prompt, **kwargs):
    kwargs.setdefault("max_tokens", 160)
    kwargs.setdefault("temperature", 0)
    return client.chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": prompt}], **kwargs)


class JSONSchemaTests(unittest.TestCase):
    def check_schema(self, schema, **kwargs):
        for prompt in PROMPTS:
            r = chat(prompt, response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema, "strict": True}}, **kwargs)
            choice = r.choices[0]
            self.assertEqual(choice.finish_reason, "stop", f"{prompt}: {choice.message.content!r}")
            value = json.loads(choice.message.content)
            jsonschema.validate(value, schema)

    def test_every_reply_validates_greedy(self):
        self.check_schema(PERSON)

    def test_every_reply_validates_sampled(self):
        self.check_schema(PERSON, temperature=0.9, seed=7)

    def test_refs_const_and_nested_objects(self):
        self.check_schema(NESTED)

    def test_parse_with_pydantic(self):
        for prompt in ["Describe a pet.", "My dog Rex is 3 years old and loves balls."]:
            r = client.chat.completions.parse(model=MODEL_ID, messages=[{"role": "user", "content": prompt}],
                                              response_format=Pet, max_tokens=200, temperature=0)
            pet = r.choices[0].message.parsed
            self.assertIsInstance(pet, Pet, r.choices[0].message.content)
            self.assertIn(pet.species, ("cat", "dog", "bird"))
            jsonschema.validate(json.loads(r.choices[0].message.content), Pet.model_json_schema())

    def test_parse_with_bounds_patterns_formats_and_nested_models(self):
        schema = Booking.model_json_schema()
        checker = jsonschema.FormatChecker()
        for prompt, seed in [("Book a room for two in Rome.", 1), ("I need a suite for a week, three guests.", 2),
                             ("Make up a booking.", 3), ("Reserve a single room, arriving next Monday.", 4)]:
            r = client.chat.completions.parse(model=MODEL_ID, messages=[{"role": "user", "content": prompt}], response_format=Booking,
                                              max_tokens=400, temperature=0.9, seed=seed)
            content = r.choices[0].message.content
            self.assertEqual(r.choices[0].finish_reason, "stop", content)
            booking = r.choices[0].message.parsed
            self.assertIsInstance(booking, Booking, content)
            self.assertTrue(1 <= booking.guests <= 12 and 0 < booking.nights < 31 and 0 <= booking.rating <= 5, content)
            self.assertTrue(re.fullmatch(r"[A-Z]{3}-[0-9]{3}", booking.code), content)
            self.assertTrue(re.fullmatch(r"\d{5}", booking.address.zip_code), content)
            jsonschema.validate(json.loads(content), schema, format_checker=checker)

    def test_parse_tagged_union(self):
        for prompt, seed in [("Tell me about Ann and her cat.", 5), ("Bob has a dog.", 6), ("Describe a pet owner.", 7)]:
            r = client.chat.completions.parse(model=MODEL_ID, messages=[{"role": "user", "content": prompt}], response_format=Owner,
                                              max_tokens=120, temperature=0.9, seed=seed)
            owner = r.choices[0].message.parsed
            self.assertIsInstance(owner, Owner, r.choices[0].message.content)
            jsonschema.validate(json.loads(r.choices[0].message.content), Owner.model_json_schema())

    def test_integer_range_boundaries_with_biased_digits(self):
        # A digit pushed far above the rest must still stop at the bounds: the grammar, not the
        # model, ends "9..." at 99 (999 > 300) and "-9..." at -99 (-999 < -123).
        status, nine = server.json("POST", "/tokenize", {"content": "9"})
        self.assertEqual((status, len(nine["tokens"])), (200, 1), nine)
        digits = {str(nine["tokens"][0]): 30}
        schema = {"type": "object", "properties": {"a": {"type": "integer", "minimum": 15, "maximum": 300},
                                                   "b": {"type": "integer", "minimum": -123, "exclusiveMaximum": 0}},
                  "required": ["a", "b"], "additionalProperties": False}
        r = chat(PROMPTS[0], response_format={"type": "json_schema", "json_schema": {"name": "r", "schema": schema}},
                 logit_bias=digits, max_tokens=40)
        value = json.loads(r.choices[0].message.content)
        jsonschema.validate(value, schema)
        self.assertEqual((value["a"], value["b"]), (99, -99), value)

    def test_streamed_reply_equals_whole_and_validates(self):
        fmt = {"type": "json_schema", "json_schema": {"name": "p", "schema": PERSON}}
        whole = chat(PROMPTS[0], response_format=fmt).choices[0].message.content
        parts = []
        for c in client.chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": PROMPTS[0]}], stream=True,
                                                response_format=fmt, max_tokens=160, temperature=0):
            for ch in c.choices:
                parts.append(ch.delta.content or "")
        self.assertEqual("".join(parts), whole)
        jsonschema.validate(json.loads(whole), PERSON)

    def test_json_object(self):
        for prompt in PROMPTS[:2]:
            r = chat(prompt, response_format={"type": "json_object"}, max_tokens=200)
            if r.choices[0].finish_reason == "stop":
                self.assertIsInstance(json.loads(r.choices[0].message.content), dict)
            else:
                self.assertTrue(r.choices[0].message.content.startswith("{"))

    def test_speculation_off_gives_the_same_reply_and_forced_runs_are_drafted(self):
        fmt = {"type": "json_schema", "json_schema": {"name": "p", "schema": PERSON}}
        on = chat(PROMPTS[1], response_format=fmt)
        off = chat(PROMPTS[1], response_format=fmt, extra_body={"speculation": False})
        self.assertEqual(on.choices[0].message.content, off.choices[0].message.content)
        spec = on.usage.model_extra["speculation"]
        # Property names and separators are forced by the schema: drafted without a drafter.
        self.assertGreater(spec["forced_drafted_tokens"], 0, spec)
        self.assertGreater(spec["forced_accepted_tokens"], 0, spec)
        print(f"\n    forced runs: {spec['forced_accepted_tokens']}/{spec['forced_drafted_tokens']} forced draft tokens accepted, "
              f"{on.usage.completion_tokens} tokens in {spec['decode_steps']} decode steps", end=" ")


class LlamaCppFieldTests(unittest.TestCase):
    def test_gbnf_grammar(self):
        grammar = 'root ::= "The answer is " ("yes" | "no") "."'
        for prompt in ["Is the sky blue?", "Is fire cold?"]:
            for kind in ("chat", "completion"):
                if kind == "chat":
                    text = chat(prompt, extra_body={"grammar": grammar}).choices[0].message.content
                else:
                    text = client.completions.create(model=MODEL_ID, prompt=prompt, max_tokens=20, temperature=0,
                                                     extra_body={"grammar": grammar}).choices[0].text
                self.assertRegex(text, r"^The answer is (yes|no)\.$")

    def test_gbnf_with_repetition_and_classes(self):
        grammar = 'root ::= item (", " item){2}\nitem ::= [a-z]{1,8}'
        text = chat("List three fruits.", extra_body={"grammar": grammar}, temperature=0.7, seed=3).choices[0].message.content
        self.assertRegex(text, r"^[a-z]{1,8}, [a-z]{1,8}, [a-z]{1,8}$")

    def test_json_schema_field(self):
        schema = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}, "population": {"type": "integer"}},
                  "required": ["city", "population"]}
        r = client.completions.create(model=MODEL_ID, prompt="A city as JSON:", max_tokens=60, temperature=0, extra_body={"json_schema": schema})
        jsonschema.validate(json.loads(r.choices[0].text), schema)


class LogitBiasTests(unittest.TestCase):
    def tokens(self, text):
        status, body = server.json("POST", "/tokenize", {"content": text})
        self.assertEqual(status, 200)
        return body["tokens"]

    def test_ban_and_force(self):
        base = client.completions.create(model=MODEL_ID, prompt="The capital of France is", max_tokens=4, temperature=0, logprobs=1)
        first = base.choices[0].logprobs.tokens[0]
        first_id = self.tokens(first)[0]
        banned = client.completions.create(model=MODEL_ID, prompt="The capital of France is", max_tokens=4, temperature=0,
                                           logit_bias={str(first_id): -100}, logprobs=1)
        self.assertNotEqual(banned.choices[0].logprobs.tokens[0], first)
        forced_id = self.tokens(" banana")[0]
        forced = client.completions.create(model=MODEL_ID, prompt="The capital of France is", max_tokens=3, temperature=0,
                                           logit_bias={str(forced_id): 100})
        self.assertTrue(forced.choices[0].text.startswith(" banana"), forced.choices[0].text)

    def test_bias_with_speculation_keeps_greedy_output(self):
        bias = {str(self.tokens(" the")[0]): -5, str(self.tokens(",")[0]): 3}
        kwargs = dict(model=MODEL_ID, prompt="Once upon a time", max_tokens=40, temperature=0, logit_bias=bias)
        on = client.completions.create(**kwargs)
        off = client.completions.create(**kwargs, extra_body={"speculation": False})
        self.assertEqual(on.choices[0].text, off.choices[0].text)


class RefusalTests(unittest.TestCase):
    def expect_400(self, param_prefix, fragment, **kwargs):
        body = {"model": MODEL_ID, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
        body.update(kwargs)
        status, reply = server.json("POST", "/v1/chat/completions", body)
        self.assertEqual(status, 400, reply)
        self.assertTrue(reply["error"]["param"].startswith(param_prefix), reply)
        self.assertIn(fragment, reply["error"]["message"])
        return reply

    def test_unsupported_schema_keywords(self):
        for keyword, value in [("multipleOf", 3), ("uniqueItems", True), ("patternProperties", {"^a": {}})]:
            schema = {"type": "object", "properties": {"x": {"type": "integer", keyword: value}}}
            reply = self.expect_400("response_format.json_schema.schema", f"'{keyword}' at #/properties/x",
                                    response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}})
            self.assertIn("supported keywords", reply["error"]["message"])
        # Supported keywords used in ways the compiler does not support name the keyword and the construct.
        for sub, fragment in [({"type": "string", "pattern": "^(a)\\1$"}, "'pattern' at #/properties/x: backreferences"),
                              ({"type": "string", "pattern": "(?=a)"}, "'pattern' at #/properties/x: lookaround"),
                              ({"type": "string", "format": "email"}, "'format' at #/properties/x: format 'email' is not supported"),
                              ({"type": "number", "minimum": 0.5}, "'minimum' at #/properties/x: a fractional bound")]:
            schema = {"type": "object", "properties": {"x": sub}}
            self.expect_400("response_format.json_schema.schema", fragment,
                            response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}})
        self.expect_400("json_schema", "'minLength' beside 'oneOf'", json_schema={"oneOf": [{"type": "string"}], "minLength": 2})
        self.expect_400("tools[0].function.parameters", "'pattern'",
                        tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {"a": {"type": "string", "pattern": "\\bx"}}}}}])

    def test_invalid_grammars(self):
        self.expect_400("grammar", "left-recursive", grammar="root ::= root \"a\" | \"a\"")
        self.expect_400("grammar", "'item' is used but not defined", grammar="root ::= item")
        self.expect_400("grammar", "line 2", grammar="root ::= x\nx ::= \"unterminated")
        self.expect_400("grammar", "no 'root'", grammar="start ::= \"a\"")

    def test_bad_logit_bias(self):
        self.expect_400("logit_bias", "between -100 and 100", logit_bias={"42": 101})
        self.expect_400("logit_bias", "not a token id", logit_bias={"hello": 1})
        self.expect_400("logit_bias", "outside the vocabulary", logit_bias={"99999999": 1})
        self.expect_400("logit_bias", "must be an object", logit_bias=[1, 2])

    def test_bad_formats_and_conflicts(self):
        self.expect_400("response_format.type", "json_object or json_schema", response_format={"type": "xml"})
        self.expect_400("grammar", "both constrain", response_format={"type": "json_object"}, grammar='root ::= "a"')
        self.expect_400("tool_choice", "not among", tools=[{"type": "function", "function": {"name": "f"}}],
                        tool_choice={"type": "function", "function": {"name": "g"}})

    def test_server_keeps_serving(self):
        self.expect_400("grammar", "left-recursive", grammar="root ::= root")
        self.assertEqual(chat("hi", max_tokens=3).choices[0].finish_reason, "length")


class SamplingDefaultsTests(unittest.TestCase):
    def test_defaults_fill_omitted_fields(self):
        greedy_server = Server(slots=1, env={"CASTSERVE_SAMPLING_DEFAULTS": '{"temperature": 0}'}).start()
        try:
            c = greedy_server.openai()
            kwargs = dict(model=MODEL_ID, messages=[{"role": "user", "content": "Name a colour."}], max_tokens=12)
            a = c.chat.completions.create(**kwargs).choices[0].message.content
            b = c.chat.completions.create(**kwargs).choices[0].message.content
            explicit = c.chat.completions.create(temperature=0, **kwargs).choices[0].message.content
            self.assertEqual(a, b)
            self.assertEqual(a, explicit)
        finally:
            greedy_server.stop()

    def test_bad_defaults_stop_the_start(self):
        bad = Server(slots=1, env={"CASTSERVE_SAMPLING_DEFAULTS": '{"temprature": 0.5}'})
        with self.assertRaises(AssertionError) as ctx:
            bad.start()
        self.assertIn("sampling_defaults.temprature", str(ctx.exception))


if __name__ == "__main__":
    unittest.main()
