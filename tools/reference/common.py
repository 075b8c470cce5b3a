"""Shared paths, prompt loading and chat-template rendering for the reference scripts."""

from __future__ import annotations

import json
import os
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[2]
MODEL = pathlib.Path(os.environ.get("CASTSERVE_REF_MODEL", ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"))
PROMPTS = pathlib.Path(os.environ.get("CASTSERVE_BENCH_PROMPTS", ROOT.parent / "shared" / "bench" / "prompts.jsonl"))
FIXTURES = ROOT / "Tests" / "Fixtures"
MODEL_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
EOS = 2


def load_prompts() -> list[dict]:
    with open(PROMPTS, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def chat_template(model_path=MODEL) -> str:
    from gguf import GGUFReader

    return GGUFReader(str(model_path)).fields["tokenizer.chat_template"].contents()


def render_chatml(messages: list[dict]) -> str:
    """Hand-written ChatML, identical to the SmolLM2 template with add_generation_prompt."""
    out = ""
    if messages and messages[0]["role"] != "system":
        out += "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
    for m in messages:
        out += "<|im_start|>" + m["role"] + "\n" + m["content"] + "<|im_end|>\n"
    return out + "<|im_start|>assistant\n"


def render_prompt(row: dict, template: str | None = None) -> str:
    """Text the model sees for a bench row: chat rows through the GGUF's Jinja chat template
    (add_generation_prompt=True), checked against the hand-written ChatML; plain rows as-is."""
    if "prompt" in row:
        return row["prompt"]
    text = render_chatml(row["messages"])
    if template is not None:
        import jinja2

        env = jinja2.Environment(trim_blocks=False, lstrip_blocks=False)
        jt = env.from_string(template).render(messages=row["messages"], add_generation_prompt=True)
        assert jt == text, (row["id"], jt, text)
    return text


def _dumps(obj) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def write_json(path: pathlib.Path, obj) -> None:
    """Compact but diff-friendly: a top-level list gets one element per line; a top-level dict
    gets one key per line, and its list values one element per line."""
    path.parent.mkdir(parents=True, exist_ok=True)

    def block(v, indent: str) -> str:
        if isinstance(v, list) and v and isinstance(v[0], (dict, list)):
            return "[\n" + ",\n".join(indent + "  " + _dumps(e) for e in v) + "\n" + indent + "]"
        return _dumps(v)

    if isinstance(obj, dict):
        body = ",\n".join("  " + _dumps(k) + ":" + block(v, "  ") for k, v in obj.items())
        text = "{\n" + body + "\n}"
    else:
        text = block(obj, "")
    assert json.loads(text) == obj
    with open(path, "w", encoding="utf-8") as f:
        f.write(text + "\n")


def llama_cpp_versions() -> dict:
    """Versions of the llama-cpp-python bindings and the llama.cpp build they load."""
    import llama_cpp

    info = {"llama_cpp_python": getattr(llama_cpp, "__version__", "?")}
    try:
        info["llama_cpp_system_info"] = llama_cpp.llama_print_system_info().decode()
    except Exception:  # noqa: BLE001 - informational only
        pass
    return info
