"""Renders of the real Qwen3 chat template by Python jinja2, configured as Hugging Face
transformers renders chat templates, for ChatTemplate's tests (Qwen3TemplateTests).

Reads Tests/Fixtures/qwen3_chat_template.jinja (the `chat_template` of Qwen/Qwen3-0.6B's
tokenizer_config.json, as llama.cpp keeps it in models/templates/Qwen-Qwen3-0.6B.jinja) and writes
Tests/Fixtures/qwen3_template_renders.json: for each case its messages, tools, extra template
variables (`chat_template_kwargs`, e.g. enable_thinking) and the expected text.

transformers' settings: ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks,
loopcontrols, `tojson` as json.dumps(ensure_ascii=False), `raise_exception`.
Run from the repository root: python3 tools/reference/gen_qwen3_template.py
"""

from __future__ import annotations

import json
import os
import pathlib
import sys

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

sys.path.insert(0, os.path.dirname(__file__))
from common import write_json  # noqa: E402

TEMPLATE = "Tests/Fixtures/qwen3_chat_template.jinja"
OUT = pathlib.Path("Tests/Fixtures/qwen3_template_renders.json")

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}

CONVERSATIONS = {
    "single": [{"role": "user", "content": "Hello"}],
    "system": [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi there"}],
    # An earlier assistant turn with its reasoning inline: the template drops it from history.
    "history": [
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "<think>\nAdd them.\n</think>\n\n4"},
        {"role": "user", "content": "And 3+3?"},
    ],
    # The last turn is the assistant's (continuing): its reasoning stays.
    "assistant_last": [
        {"role": "user", "content": "Why?"},
        {"role": "assistant", "content": "<think>\nBecause.\n</think>\n\nIt is so."},
    ],
    "tool_round": [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "call_0", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
        {"role": "tool", "tool_call_id": "call_0", "content": "{\"temp\": 21}"},
    ],
}

# (conversation, tools, chat_template_kwargs)
CASES = [
    ("single", None, {}),
    ("single", None, {"enable_thinking": True}),
    ("single", None, {"enable_thinking": False}),
    ("system", None, {"enable_thinking": False}),
    ("history", None, {}),
    ("history", None, {"enable_thinking": False}),
    ("tool_round", [WEATHER], {}),
    ("tool_round", [WEATHER], {"enable_thinking": False}),
]


def environment() -> jinja2.Environment:
    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = lambda x, indent=None: json.dumps(x, ensure_ascii=False, indent=indent)
    env.globals["raise_exception"] = raise_exception
    return env


def main() -> None:
    with open(TEMPLATE, encoding="utf-8") as f:
        source = f.read()
    template = environment().from_string(source)
    cases = []
    for name, tools, kwargs in CASES:
        messages = CONVERSATIONS[name]
        for add_generation_prompt in (True, False):
            if name == "assistant_last" and add_generation_prompt:
                continue
            text = template.render(messages=messages, tools=tools, add_generation_prompt=add_generation_prompt,
                                   bos_token="", eos_token="<|im_end|>", **kwargs)
            cases.append({"conversation": name, "messages": messages, "tools": tools, "kwargs": kwargs,
                          "add_generation_prompt": add_generation_prompt, "expected": text})
    cases.append({"conversation": "assistant_last", "messages": CONVERSATIONS["assistant_last"], "tools": None, "kwargs": {},
                  "add_generation_prompt": False,
                  "expected": template.render(messages=CONVERSATIONS["assistant_last"], tools=None, add_generation_prompt=False,
                                              bos_token="", eos_token="<|im_end|>")})
    write_json(OUT, {"note": "Qwen3's chat template rendered by jinja2 " + jinja2.__version__
                     + " with transformers' settings (tools/reference/gen_qwen3_template.py)", "cases": cases})
    print(len(cases), "cases ->", OUT, file=sys.stderr)


if __name__ == "__main__":
    main()
