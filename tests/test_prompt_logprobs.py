"""Prompt log-probabilities (/v1/completions with `echo` and `logprobs`, legacy format) and their
use by lm-evaluation-harness, plus POST /v1/embeddings, against one shared server.

The prompt's scores come from prefill rows; each is checked against a direct computation on a
different path: a decode step whose next token is forced with `logit_bias` (logprobs are reported
from the model's own logits, before the bias). lm-eval (`local-completions` with the server's own
tokenizer, `tokenized_requests=True`) runs a small local multiple-choice task; every per-sample
loglikelihood it reports must equal the sum computed here."""

import base64
import glob
import json
import math
import os
import struct
import subprocess
import sys
import tempfile
import unittest

from castserve_harness import MODEL_ID, ROOT, Server

server = None
client = None


def setUpModule():
    global server, client
    server = Server(slots=4).start()
    client = server.openai()


def tearDownModule():
    if server is not None:
        server.stop()


def tokenize(text):
    status, body = server.json("POST", "/tokenize", {"content": text, "parse_special": False})
    assert status == 200, body
    return body["tokens"]


def decode_logprob(prefix_ids, token):
    """log p(token | prefix) from a decode step that is forced to produce `token`."""
    r = client.completions.create(model=MODEL_ID, prompt=prefix_ids, max_tokens=1, temperature=0, logprobs=1,
                                  logit_bias={str(token): 100})
    return r.choices[0].logprobs.token_logprobs[0]


class PromptLogprobTests(unittest.TestCase):
    def test_echo_scores_the_prompt_then_the_completion(self):
        prompt = "The capital of France is"
        r = client.completions.create(model=MODEL_ID, prompt=prompt, max_tokens=3, temperature=0, echo=True, logprobs=2)
        c = r.choices[0]
        lp = c.logprobs
        n = len(tokenize(prompt))
        self.assertTrue(c.text.startswith(prompt))
        self.assertEqual(len(lp.tokens), n + 3)
        self.assertEqual("".join(lp.tokens), c.text)
        self.assertIsNone(lp.token_logprobs[0])
        self.assertIsNone(lp.top_logprobs[0])
        self.assertTrue(all(x is not None and x <= 0 for x in lp.token_logprobs[1:]))
        # text_offset: where each token starts in the returned text.
        for k, (token, offset) in enumerate(zip(lp.tokens, lp.text_offset)):
            self.assertEqual(c.text[offset:offset + len(token)], token, k)
        for k in range(1, n + 3):
            self.assertLessEqual(len(lp.top_logprobs[k]), 2)
            self.assertGreaterEqual(max(lp.top_logprobs[k].values()), lp.token_logprobs[k] - 1e-5)
        # The completion part equals a request without echo.
        plain = client.completions.create(model=MODEL_ID, prompt=prompt, max_tokens=3, temperature=0, logprobs=2)
        self.assertEqual(c.text[len(prompt):], plain.choices[0].text)
        for a, b in zip(lp.token_logprobs[n:], plain.choices[0].logprobs.token_logprobs):
            self.assertAlmostEqual(a, b, places=4)

    def test_max_tokens_zero_scores_without_generating(self):
        ids = tokenize("Water boils at one hundred degrees")
        r = client.completions.create(model=MODEL_ID, prompt=ids, max_tokens=0, echo=True, logprobs=1)
        c = r.choices[0]
        self.assertEqual(r.usage.completion_tokens, 0)
        self.assertEqual(c.finish_reason, "length")
        self.assertEqual(len(c.logprobs.token_logprobs), len(ids))
        # Each prompt token's score equals the decode path's for the same prefix.
        for k in range(1, len(ids)):
            direct = decode_logprob(ids[:k], ids[k])
            self.assertAlmostEqual(c.logprobs.token_logprobs[k], direct, places=3, msg=f"position {k}")

    def test_long_prompt_in_chunks(self):
        # Longer than one step's logit rows (256): scored over several prefill steps.
        ids = tokenize(" ".join(["alpha beta gamma delta"] * 90))
        self.assertGreater(len(ids), 300)
        r = client.completions.create(model=MODEL_ID, prompt=ids, max_tokens=0, echo=True, logprobs=0)
        lps = r.choices[0].logprobs.token_logprobs
        self.assertEqual(len(lps), len(ids))
        self.assertTrue(all(x is not None for x in lps[1:]))
        for k in (1, 255, 256, 257, len(ids) - 1):
            self.assertAlmostEqual(lps[k], decode_logprob(ids[:k], ids[k]), places=3, msg=f"position {k}")

    def test_streaming_echo(self):
        chunks = list(client.completions.create(model=MODEL_ID, prompt="One two three", max_tokens=2, temperature=0, echo=True,
                                                logprobs=1, stream=True))
        first = chunks[0].choices[0]
        self.assertEqual(first.text, "One two three")
        self.assertIsNone(first.logprobs.token_logprobs[0])
        self.assertEqual("".join(c.choices[0].text for c in chunks if c.choices), client.completions.create(
            model=MODEL_ID, prompt="One two three", max_tokens=2, temperature=0, echo=True).choices[0].text)

    def test_max_tokens_zero_needs_echo(self):
        status, body = server.json("POST", "/v1/completions", {"model": MODEL_ID, "prompt": "x", "max_tokens": 0})
        self.assertEqual(status, 400)
        self.assertEqual(body["error"]["param"], "max_tokens")


class LMEvalTests(unittest.TestCase):
    def test_multiple_choice_task(self):
        out = tempfile.mkdtemp(prefix="castserve-lmeval-")
        env = dict(os.environ, HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
                   HF_DATASETS_CACHE=os.path.join(out, "cache"), OPENAI_API_KEY="unused")
        args = [sys.executable, "-m", "lm_eval", "--model", "local-completions",
                "--model_args", f"model={MODEL_ID},base_url={server.base_url}/v1/completions,tokenizer_backend=remote,"
                                "tokenized_requests=True,num_concurrent=1,max_retries=1,max_length=1024",
                "--tasks", "castserve_mc", "--include_path", "tests/lm_eval", "--output_path", out, "--log_samples"]
        run = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        self.assertEqual(run.returncode, 0, run.stderr[-4000:])
        results = json.load(open(glob.glob(os.path.join(out, "**", "results_*.json"), recursive=True)[0]))
        acc = results["results"]["castserve_mc"]["acc,none"]
        samples = [json.loads(line) for f in glob.glob(os.path.join(out, "**", "samples_castserve_mc_*.jsonl"), recursive=True)
                   for line in open(f)]
        self.assertEqual(len(samples), 8)
        checked = 0
        for s in samples:
            arguments = s["arguments"]
            if isinstance(arguments, dict):  # {"gen_args_0": {"arg_0": context, "arg_1": continuation}, ...}
                arguments = [(a["arg_0"], a["arg_1"]) for _, a in sorted(arguments.items(), key=lambda kv: int(kv[0].rsplit("_", 1)[1]))]
            for (context, continuation), resp in zip(arguments, s["resps"]):
                loglik = float(resp[0][0])
                self.assertLess(loglik, 0)
                # lm-eval's split: trailing spaces of the context move to the continuation.
                n = len(context) - len(context.rstrip())
                if n:
                    context, continuation = context[:-n], context[-n:] + continuation
                whole, ctx = tokenize(context + continuation), tokenize(context)
                cont = whole[len(ctx):]
                # The server's own prompt logprobs for the same tokens.
                r = client.completions.create(model=MODEL_ID, prompt=whole, max_tokens=0, echo=True, logprobs=1)
                own = sum(r.choices[0].logprobs.token_logprobs[len(ctx):])
                self.assertAlmostEqual(loglik, own, places=4)
                # And the decode path, token by token.
                direct = sum(decode_logprob(whole[:len(ctx) + i], t) for i, t in enumerate(cont))
                self.assertAlmostEqual(loglik, direct, places=3)
                checked += 1
        self.assertEqual(checked, 24)
        chance = 1 / 3
        print(f"\n    lm-eval castserve_mc: acc {acc:.3f} over 8 questions (chance {chance:.3f}); 24 loglikelihoods equal", end=" ")


    def test_generate_until_task(self):
        out = tempfile.mkdtemp(prefix="castserve-lmeval-gen-")
        env = dict(os.environ, HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
                   HF_DATASETS_CACHE=os.path.join(out, "cache"), OPENAI_API_KEY="unused")
        args = [sys.executable, "-m", "lm_eval", "--model", "local-completions",
                "--model_args", f"model={MODEL_ID},base_url={server.base_url}/v1/completions,tokenizer_backend=remote,"
                                "tokenized_requests=True,num_concurrent=1,max_retries=1,max_length=1024",
                "--tasks", "castserve_gen", "--include_path", "tests/lm_eval", "--output_path", out, "--log_samples"]
        run = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        self.assertEqual(run.returncode, 0, run.stderr[-4000:])
        samples = [json.loads(line) for f in glob.glob(os.path.join(out, "**", "samples_castserve_gen_*.jsonl"), recursive=True)
                   for line in open(f)]
        self.assertEqual(len(samples), 8)
        for s in samples:
            arguments = s["arguments"]
            context = arguments["gen_args_0"]["arg_0"] if isinstance(arguments, dict) else arguments[0][0]
            generated = s["resps"][0][0]
            # The same greedy request, sent directly: the same text.
            direct = client.completions.create(model=MODEL_ID, prompt=[tokenize(context)], max_tokens=12, temperature=0,
                                               stop=["\n", "."]).choices[0].text
            self.assertEqual(generated, direct, context)
        print(f"\n    lm-eval castserve_gen: 8 greedy generations equal direct requests", end=" ")


class EmbeddingTests(unittest.TestCase):
    def test_embeddings_create(self):
        texts = ["The cat sat on the mat.", "Quantum chromodynamics describes the strong force.", "A kitten rested on a rug."]
        r = client.embeddings.create(model=MODEL_ID, input=texts)
        self.assertEqual([d.index for d in r.data], [0, 1, 2])
        vectors = [d.embedding for d in r.data]
        width = len(vectors[0])
        self.assertEqual(width, 576)
        for v in vectors:
            self.assertAlmostEqual(math.sqrt(sum(x * x for x in v)), 1.0, places=4)
        self.assertEqual(r.usage.prompt_tokens, sum(len(tokenize(t)) for t in texts))
        # Each input alone gives the same vector as in a batch.
        alone = client.embeddings.create(model=MODEL_ID, input=texts[1]).data[0].embedding
        self.assertLess(max(abs(a - b) for a, b in zip(alone, vectors[1])), 1e-5)
        # Token ids and text give the same vector.
        by_ids = client.embeddings.create(model=MODEL_ID, input=[tokenize(texts[0])]).data[0].embedding
        self.assertLess(max(abs(a - b) for a, b in zip(by_ids, vectors[0])), 1e-5)
        # Different texts differ.
        self.assertGreater(max(abs(a - b) for a, b in zip(vectors[0], vectors[1])), 1e-3)

    def test_base64_matches_float(self):
        status, f = server.json("POST", "/v1/embeddings", {"model": MODEL_ID, "input": "hello", "encoding_format": "float"})
        self.assertEqual(status, 200)
        status, b = server.json("POST", "/v1/embeddings", {"model": MODEL_ID, "input": "hello", "encoding_format": "base64"})
        self.assertEqual(status, 200)
        raw = base64.b64decode(b["data"][0]["embedding"])
        decoded = struct.unpack(f"<{len(raw) // 4}f", raw)
        self.assertEqual(len(decoded), len(f["data"][0]["embedding"]))
        self.assertLess(max(abs(x - y) for x, y in zip(decoded, f["data"][0]["embedding"])), 1e-6)

    def test_errors(self):
        for body, param in [({"model": MODEL_ID, "input": ""}, "input"), ({"model": MODEL_ID, "input": "x", "encoding_format": "hex"}, "encoding_format"),
                            ({"model": MODEL_ID, "input": "x", "dimensions": 12}, "dimensions"), ({"model": MODEL_ID}, "input")]:
            status, reply = server.json("POST", "/v1/embeddings", body)
            self.assertEqual(status, 400, reply)
            self.assertEqual(reply["error"]["param"], param)


if __name__ == "__main__":
    unittest.main()
