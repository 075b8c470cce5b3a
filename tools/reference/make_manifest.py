"""Writes tools/reference/MANIFEST.json: model hash, generator scripts, fixture hashes, the hashes of
the K-quant files kquantize.py writes (`make kquant-models` checks them), versions, date, and the
learned drafters (drafters/*.drafter.gguf) with the scripts that train them.

Usage: python3 make_manifest.py [--llama-cpp-commit SHA] [--kquant-dir models]
       python3 make_manifest.py --drafters-only     (rewrites only the "drafters" entry)
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import pathlib
import platform

import numpy
import gguf

import common
from kquantize import MIX_NAMES, output_path

HERE = pathlib.Path(__file__).resolve().parent
SCRIPTS = ["common.py", "texts.py", "float_ref.py", "gen_tokenizer.py", "gen_greedy_llamacpp.py",
           "gen_float_reference.py", "compare.py", "validate_f32.py", "make_manifest.py", "thin_cost_steps.py",
           "gen_kquant_fixture.py", "requantize.py", "gen_kquant_reference.py", "gen_gemma3.py", "gen_synthetic.py",
           "requantize_gguf.py", "compare_gemma3_greedy.py", "compare_gemma3_logits_llamacpp.py", "kquantize.py",
           "gen_qwen3_template.py"]
FIXTURES = {
    "tokenizer.json": "gen_tokenizer.py (llama.cpp tokenizer)",
    "greedy_llamacpp.json": "gen_greedy_llamacpp.py (llama.cpp greedy)",
    "logits_reference.json": "gen_float_reference.py (numpy float64 reference)",
    "greedy_reference.json": "gen_float_reference.py (numpy float64 reference)",
    "cost_steps.json": "thin_cost_steps.py (steps recorded by cast-bench matrix --record-steps)",
    "kquant_dequant.json": "gen_kquant_fixture.py (gguf.quants.dequantize of 5-bit, K-quant, IQ4_NL and BF16 blocks)",
    "gemma3_tokenizer.json": "gen_gemma3.py tokenizer (llama.cpp tokenizer, vocab_only, Gemma 3 270M)",
    "gemma3_logits.json": "gen_gemma3.py logits (numpy float64 reference, Gemma 3 270M Q4_K_M)",
    "gemma3_greedy_llamacpp.json": "gen_gemma3.py greedy (llama.cpp greedy, Gemma 3 270M Q4_K_M, 32 tokens)",
    "synthetic_logits.json": "gen_synthetic.py (numpy float64 reference on the tiny synthetic GGUFs)",
    "synthetic/qwen2.gguf": "gen_synthetic.py (random weights)",
    "synthetic/qwen3.gguf": "gen_synthetic.py (random weights)",
    "synthetic/llama3_rope.gguf": "gen_synthetic.py (random weights)",
    "synthetic/gemma3_swa.gguf": "gen_synthetic.py (random weights)",
    "synthetic/qwen3_chat.gguf": "gen_synthetic.py (random weights, byte tokenizer, Qwen3 chat template)",
    "qwen3_chat_template.jinja": "Qwen/Qwen3-0.6B tokenizer_config.json chat_template (as llama.cpp's models/templates keeps it)",
    "qwen3_template_renders.json": "gen_qwen3_template.py (jinja2 with transformers' settings)",
}


REPO = HERE.parents[1]
DRAFTER_SCRIPTS = ["data.py", "drafter.py", "gradcheck.py", "pipeline.py", "train.py"]


def drafters() -> dict:
    """The committed drafter files (sha256, size, the target they were trained for) and the
    training scripts' hashes."""
    files = {}
    for p in sorted((REPO / "drafters").glob("*.drafter.gguf")):
        reader = gguf.GGUFReader(str(p))
        field = reader.fields["cast-drafter.target.sha256"]
        files[f"drafters/{p.name}"] = {"sha256": sha(p), "bytes": p.stat().st_size,
                                       "target_sha256": bytes(field.parts[field.data[0]]).decode(),
                                       "generated_by": "tools/drafter/pipeline.py (make drafters)"}
    return {"files": files,
            "scripts": {f"tools/drafter/{s}": sha(REPO / "tools" / "drafter" / s) for s in DRAFTER_SCRIPTS}}


def sha(path: pathlib.Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def version(mod: str) -> str:
    try:
        from importlib.metadata import version as v

        return v(mod)
    except Exception:  # noqa: BLE001
        return "?"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--llama-cpp-commit", default="0c1e57098 (vendored in llama-cpp-python 0.3.36, ggml 0.25.3)")
    ap.add_argument("--kquant-dir", default=str(common.ROOT / "models"), help="where `make kquant-models` wrote the files")
    ap.add_argument("--drafters-only", action="store_true", help="update only the drafters entry of MANIFEST.json")
    args = ap.parse_args()
    if args.drafters_only:
        manifest = json.loads((HERE / "MANIFEST.json").read_text(encoding="utf-8"))
        manifest["drafters"] = drafters()
        (HERE / "MANIFEST.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        print(json.dumps(manifest["drafters"], indent=2))
        return
    kquant = {}
    for mix in MIX_NAMES:
        p = output_path(pathlib.Path(args.kquant_dir), mix)
        if not p.exists():
            raise SystemExit(f"{p} is missing: run `make kquant-models` (KQUANT_DIR={args.kquant_dir}) first")
        kquant[p.name] = {"sha256": sha(p), "bytes": p.stat().st_size, "generated_by": f"kquantize.py {mix}"}
    fixtures = {}
    for name, by in FIXTURES.items():
        p = common.FIXTURES / name
        if p.exists() and p.suffix == ".gguf":
            fixtures[f"Tests/Fixtures/{name}"] = {"sha256": sha(p), "bytes": p.stat().st_size, "generated_by": by}
        elif p.exists():
            doc = json.loads(p.read_text(encoding="utf-8"))
            count = len(doc) if isinstance(doc, list) else len(doc.get("prompts", doc.get("cases", [])))
            fixtures[f"Tests/Fixtures/{name}"] = {"sha256": sha(p), "bytes": p.stat().st_size,
                                                  "entries": count, "generated_by": by}
    manifest = {
        "model": {"file": "models/SmolLM2-135M-Instruct.Q4_1.gguf", "sha256": common.MODEL_SHA256},
        "gemma3_model": {"file": "models/gemma-3-270m-q4_k_m.gguf",
                         "sha256": "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"},
        "bench_prompts": {"file": "../shared/bench/prompts.jsonl", "sha256": sha(common.PROMPTS)},
        "scripts": {f"tools/reference/{s}": sha(HERE / s) for s in SCRIPTS},
        "fixtures": fixtures,
        "kquant_models": kquant,
        "drafters": drafters(),
        "versions": {
            "python": platform.python_version(),
            "numpy": numpy.__version__,
            "gguf": version("gguf"),
            "jinja2": version("jinja2"),
            "llama_cpp_python": "0.3.36 (sdist, bindings loaded via PYTHONPATH, not pip-installed)",
            "llama_cpp": args.llama_cpp_commit,
            "llama_cpp_build": "CMake Release, BUILD_SHARED_LIBS=ON, GGML_NATIVE=ON, CPU only, OpenMP",
        },
        "date": datetime.date.today().isoformat(),
    }
    (HERE / "MANIFEST.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(manifest, indent=2))


if __name__ == "__main__":
    main()
