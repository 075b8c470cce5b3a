"""Several models in one server: SmolLM2 (the default, --model) and Gemma 3 from --models-dir,
beside a corrupt GGUF there.

- GET /v1/models lists every model with its state, architecture, quantization and context length;
- the first request to an unloaded model loads it;
- 4 concurrent greedy requests to each model all succeed, and their outputs equal those of
  single-model servers of each model;
- an unknown model is a 404 model_not_found naming the known ids; the corrupt file is an error
  naming the reason, and the other models keep serving;
- POST /v1/models/{id}/load and /unload need the key;
- /health reports each model's state, /metrics labels every series with its model;
- under a small memory_budget_bytes, loading a model unloads the least recently used idle one and
  the process's resident memory (VmRSS) falls; a model bigger than the budget is refused with the
  reason; keep_alive_seconds unloads idle models;
- a mistake in the model list stops the start naming the key.
"""

import concurrent.futures
import json
import os
import shutil
import subprocess
import tempfile
import time
import unittest

from castserve_harness import MODEL, MODEL_ID, ROOT, Server, binary_path, metric_value

GEMMA = os.path.join(ROOT, "models", "gemma-3-270m-q4_k_m.gguf")
GEMMA_ID = "gemma-3-270m-q4_k_m"
KEY = "multi-secret"
AUTH = {"Authorization": "Bearer " + KEY}
PROMPTS = ["The capital of France is", "Once upon a time", "def fibonacci(n):", "The three primary colors are"]
MAX_TOKENS = 16

directory = None
multi = None  # SmolLM2 (default) + Gemma 3 + a corrupt file, with an API key


def setUpModule():
    global directory, multi
    if not os.path.exists(GEMMA):
        raise unittest.SkipTest(f"{GEMMA} is missing; run `make gemma3-model`")
    directory = tempfile.mkdtemp(prefix="castserve-models-")
    os.symlink(GEMMA, os.path.join(directory, GEMMA_ID + ".gguf"))
    with open(os.path.join(directory, "broken.gguf"), "wb") as f:
        f.write(b"GGUF\x03\x00\x00\x00" + b"\xff" * 64)  # a header, then garbage counts
    multi = Server(slots=4, args=["--models-dir", directory, "--api-key", KEY]).start()


def tearDownModule():
    if multi is not None:
        multi.stop()
    if directory is not None:
        shutil.rmtree(directory, ignore_errors=True)


def models(server, headers=AUTH):
    status, body = server.json("GET", "/v1/models", headers=headers)
    assert status == 200, (status, body)
    return {m["id"]: m for m in body["data"]}


def complete(server, model, prompt, headers=AUTH):
    body = {"model": model, "prompt": prompt, "max_tokens": MAX_TOKENS, "temperature": 0}
    return server.json("POST", "/v1/completions", body, headers=headers, timeout=180)


def rss_bytes(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS line")


class BothModelsTests(unittest.TestCase):
    """In name order (this class runs before EvictionTests): the first test sees Gemma unloaded."""

    def test_1_list_then_first_request_loads_the_model(self):
        listed = models(multi)
        self.assertEqual(list(listed), [MODEL_ID, "broken", GEMMA_ID])
        self.assertEqual(listed[MODEL_ID]["state"], "loaded")
        self.assertEqual((listed[MODEL_ID]["architecture"], listed[MODEL_ID]["quantization"]), ("llama", "Q4_1"))
        gemma = listed[GEMMA_ID]
        self.assertEqual(gemma["state"], "unloaded")
        self.assertEqual(gemma["architecture"], "gemma3")
        self.assertEqual(gemma["context_length"], 1024)
        self.assertTrue(gemma["quantization"])
        status, health = multi.json("GET", "/health")
        self.assertEqual(status, 200)
        self.assertEqual({m["id"]: m["state"] for m in health["models"]},
                         {MODEL_ID: "loaded", GEMMA_ID: "unloaded", "broken": "unloaded"})

        status, body = complete(multi, GEMMA_ID, "Hello")
        self.assertEqual(status, 200, body)
        self.assertEqual(body["model"], GEMMA_ID)
        gemma = models(multi)[GEMMA_ID]
        self.assertEqual(gemma["state"], "loaded")
        self.assertGreater(gemma["load_seconds"], 0)
        self.assertGreater(gemma["memory_bytes"], 100_000_000)
        self.assertIn(f"loading {GEMMA_ID}", multi.log_text(tail=200_000))

    def test_2_concurrent_requests_to_both_equal_single_model_servers(self):
        jobs = [(m, p) for m in (MODEL_ID, GEMMA_ID) for p in PROMPTS]
        with concurrent.futures.ThreadPoolExecutor(len(jobs)) as pool:
            results = list(pool.map(lambda job: complete(multi, *job), jobs))
        for (model, prompt), (status, body) in zip(jobs, results):
            self.assertEqual(status, 200, (model, prompt, body))
            self.assertEqual(body["model"], model)
        outputs = {job: body["choices"][0]["text"] for job, (_, body) in zip(jobs, results)}
        # The same requests, one at a time, to a server of each model alone.
        for model, args in ((MODEL_ID, []), (GEMMA_ID, ["--model", GEMMA])):
            single = Server(slots=4, args=args).start()
            try:
                for prompt in PROMPTS:
                    status, body = complete(single, model, prompt, headers=None)
                    self.assertEqual(status, 200, body)
                    self.assertEqual(outputs[(model, prompt)], body["choices"][0]["text"], (model, prompt))
            finally:
                single.stop()
        # Every series carries its model.
        families = multi.metrics()
        for model in (MODEL_ID, GEMMA_ID):
            self.assertGreaterEqual(metric_value(families, "castserve_requests", "castserve_requests_total", model=model,
                                                 route="/v1/completions", status="200"), 4, model)
            self.assertGreater(metric_value(families, "castserve_completion_tokens", "castserve_completion_tokens_total", model=model), 0,
                               model)
            self.assertEqual(metric_value(families, "vllm:num_requests_running", model_name=model), 0, model)

    def test_3_unknown_model_is_404_naming_the_known_ids(self):
        status, body = complete(multi, "no-such-model", "Hi")
        self.assertEqual(status, 404)
        self.assertEqual(body["error"]["code"], "model_not_found")
        for known in (MODEL_ID, GEMMA_ID, "broken"):
            self.assertIn(known, body["error"]["message"])

    def test_4_corrupt_file_is_an_error_and_the_others_serve(self):
        status, body = complete(multi, "broken", "Hi")
        self.assertEqual(status, 500, body)
        self.assertEqual(body["error"]["code"], "model_load_failed")
        self.assertIn("broken", body["error"]["message"])
        self.assertIn("broken.gguf is truncated", body["error"]["message"])  # the reason, from the file parser
        listed = models(multi)
        self.assertEqual(listed["broken"]["state"], "unloaded")
        self.assertTrue(listed["broken"]["error"])
        for model in (MODEL_ID, GEMMA_ID):
            status, body = complete(multi, model, "Hi")
            self.assertEqual(status, 200, body)

    def test_5_load_and_unload_need_the_key(self):
        for action in ("load", "unload"):
            status, body = multi.json("POST", f"/v1/models/{GEMMA_ID}/{action}")
            self.assertEqual(status, 401, body)
        status, body = multi.json("POST", f"/v1/models/{GEMMA_ID}/unload", headers=AUTH)
        self.assertEqual((status, body["state"]), (200, "unloaded"))
        status, body = multi.json("POST", f"/v1/models/{GEMMA_ID}/load", headers=AUTH)
        self.assertEqual((status, body["state"]), (200, "loaded"))
        status, body = multi.json("POST", "/v1/models/no-such-model/load", headers=AUTH)
        self.assertEqual((status, body["error"]["code"]), (404, "model_not_found"))


class EvictionTests(unittest.TestCase):
    def test_budget_unloads_the_least_recently_used_idle_model_and_rss_falls(self):
        # Measured footprints (weights + KV cache) from the shared server, at the same settings.
        listed = models(multi)
        for model in (MODEL_ID, GEMMA_ID):
            if listed[model]["state"] != "loaded":
                self.assertEqual(complete(multi, model, "Hi")[0], 200)
        listed = models(multi)
        smol, gemma = listed[MODEL_ID]["memory_bytes"], listed[GEMMA_ID]["memory_bytes"]
        # Room for Gemma and one SmolLM2, not for a second SmolLM2 beside them.
        budget = gemma + smol + smol // 2
        own = tempfile.mkdtemp(prefix="castserve-evict-")
        try:
            for name in ("smol-a", "smol-b"):
                os.symlink(MODEL, os.path.join(own, name + ".gguf"))
            server = Server(slots=4, args=["--model", GEMMA, "--models-dir", own],
                            env={"CASTSERVE_MEMORY_BUDGET_BYTES": str(budget)}).start()
            try:
                self.assertEqual(complete(server, "smol-a", "Hi", headers=None)[0], 200)
                # Gemma, then smol-a: Gemma is the least recently used when smol-b needs room.
                self.assertEqual(complete(server, GEMMA_ID, "Hi", headers=None)[0], 200)
                self.assertEqual(complete(server, "smol-a", "Hi", headers=None)[0], 200)
                states = {m: s["state"] for m, s in models(server, headers=None).items()}
                self.assertEqual(states, {GEMMA_ID: "loaded", "smol-a": "loaded", "smol-b": "unloaded"})
                before = rss_bytes(server.proc.pid)
                status, body = complete(server, "smol-b", "Hi", headers=None)
                self.assertEqual(status, 200, body)
                states = {m: s["state"] for m, s in models(server, headers=None).items()}
                self.assertEqual(states, {GEMMA_ID: "unloaded", "smol-a": "loaded", "smol-b": "loaded"})
                self.assertIn(f"unloaded {GEMMA_ID} (evicted to make room for smol-b)", server.log_text(tail=200_000))
                # Gemma's weights and cache are bigger than smol-b's: the process holds less now.
                deadline = time.monotonic() + 10
                while rss_bytes(server.proc.pid) >= before - (gemma - smol) // 2 and time.monotonic() < deadline:
                    time.sleep(0.2)
                after = rss_bytes(server.proc.pid)
                self.assertLess(after, before - (gemma - smol) // 2, (before, after, gemma, smol))
            finally:
                server.stop()
        finally:
            shutil.rmtree(own, ignore_errors=True)

    def test_model_over_the_budget_is_refused_with_the_reason(self):
        listed = models(multi)
        budget = listed[MODEL_ID]["memory_bytes"] + 1_000_000
        own = tempfile.mkdtemp(prefix="castserve-budget-")
        try:
            os.symlink(GEMMA, os.path.join(own, GEMMA_ID + ".gguf"))
            server = Server(slots=4, args=["--models-dir", own], env={"CASTSERVE_MEMORY_BUDGET_BYTES": str(budget)}).start()
            try:
                status, body = complete(server, GEMMA_ID, "Hi", headers=None)
                self.assertEqual(status, 503, body)
                self.assertEqual(body["error"]["code"], "model_too_large")
                self.assertIn("memory_budget_bytes", body["error"]["message"])
                self.assertEqual(complete(server, MODEL_ID, "Hi", headers=None)[0], 200)
            finally:
                server.stop()
        finally:
            shutil.rmtree(own, ignore_errors=True)

    def test_keep_alive_unloads_idle_models_and_a_request_loads_them_again(self):
        own = tempfile.mkdtemp(prefix="castserve-keepalive-")
        try:
            os.symlink(MODEL, os.path.join(own, "smol-a.gguf"))
            server = Server(slots=4, args=["--models-dir", own], env={"CASTSERVE_KEEP_ALIVE_SECONDS": "1"}).start()
            try:
                self.assertEqual(complete(server, "smol-a", "Hi", headers=None)[0], 200)
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline:
                    states = {m: s["state"] for m, s in models(server, headers=None).items()}
                    if states == {MODEL_ID: "unloaded", "smol-a": "unloaded"}:
                        break
                    time.sleep(0.2)
                self.assertEqual(states, {MODEL_ID: "unloaded", "smol-a": "unloaded"})
                self.assertIn("(idle for 1 s (keep_alive_seconds))", server.log_text(tail=200_000))
                self.assertEqual(server.json("GET", "/health")[0], 200)
                status, body = complete(server, MODEL_ID, "Hi", headers=None)
                self.assertEqual(status, 200, body)
            finally:
                server.stop()
        finally:
            shutil.rmtree(own, ignore_errors=True)


class ConfigErrorTests(unittest.TestCase):
    """A mistake in the model list stops the start with a message naming the key and the fix."""

    def run_failing(self, config, args=()):
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump(config, f)
        self.addCleanup(os.unlink, f.name)
        env = {k: v for k, v in os.environ.items() if not k.startswith("CASTSERVE_")}
        proc = subprocess.run([binary_path(), "serve", "--port", "0", "--config", f.name] + list(args), cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=60)
        self.assertNotEqual(proc.returncode, 0, proc.stdout + proc.stderr)
        self.assertNotIn("listening on", proc.stdout)
        return proc.stderr

    def test_entry_keys_are_checked_by_name(self):
        err = self.run_failing({"models": [{"path": GEMMA, "slots": 0}]})
        self.assertIn("configuration key 'models[0].slots'", err)
        self.assertIn("1...256", err)
        err = self.run_failing({"models": [{"path": GEMMA, "slot": 2}]})
        self.assertIn("unknown configuration key 'models[0].slot'", err)
        self.assertIn("did you mean 'models[0].slots'?", err)
        err = self.run_failing({"models": [{"id": "gemma3"}]})
        self.assertIn("'models[0].path'", err)

    def test_two_files_with_one_id_and_a_missing_directory(self):
        err = self.run_failing({"model": MODEL, "models": [{"id": MODEL_ID, "path": GEMMA}]})
        self.assertIn(f"two models have the id '{MODEL_ID}'", err)
        err = self.run_failing({"model": MODEL, "models": [{"path": GEMMA, "aliases": ["default"]}]})
        self.assertIn("the name 'default' is an id or alias of two models", err)
        err = self.run_failing({}, args=["--models-dir", "/nonexistent-castserve-models"])
        self.assertIn("models_dir (--models-dir) /nonexistent-castserve-models cannot be read", err)


if __name__ == "__main__":
    unittest.main()
