"""Speculative decoding through the HTTP server: the step-cost model is measured once (with
progress), cached on disk and reused on restart (--recalibrate measures again), or given fixed from
a file (--cost-model, "cost_model_file"; a bad file stops the start naming it), responses carry
per-request speculation usage, /metrics and GET /v1/cast/cost show what the planner does, sampled
requests speculate too, and a bad drafter name is a clear start-up error.

The tests that assert what the planner decides (drafted > 0, accepted > 0, tree rows, goodput)
run on the fixed rows-free cost model, so they hold on any host at any load; the calibration test
measures, and asserts only what holds on a slow, busy host."""
import json
import os
import subprocess
import tempfile
import unittest

from castserve_harness import FIXED_COST_MODEL, MODEL, Server, binary_path, metric_value

ARTICLE = ("The library opens at nine. The library closes at five. Children may borrow three books. "
           "Adults may borrow five books. Late books cost ten cents a day. ") * 2
BODY = {"model": "default", "temperature": 0, "max_tokens": 40,
        "messages": [{"role": "user", "content": "Repeat this text exactly:\n\n" + ARTICLE}]}


class CostModelCacheTest(unittest.TestCase):
    def test_measured_once_then_reused_and_recalibrated_on_request(self):
        cache = tempfile.mkdtemp(prefix="castserve-cost-")
        # Steps of at most 32 rows: the measurement (rows 1 to 32, twice, 8 runs each) takes a
        # quarter of the default's (to 128), which a busy 2-core host makes minutes.
        env = {"CASTSERVE_COST_CACHE_DIR": cache, "CASTSERVE_MAX_STEP_ROWS": "32"}
        costs = []
        for args in (("--speculation", "on"), ("--speculation", "on"), ("--speculation", "on", "--recalibrate")):
            s = Server(slots=2, env=env, args=args, cost_model=None)  # measured: what this test checks
            s.start()
            try:
                status, cost = s.json("GET", "/v1/cast/cost")
                self.assertEqual(status, 200, cost)
                costs.append(cost)
                log = s.log_text(tail=1 << 22)
            finally:
                s.stop()
            if len(costs) != 2:
                self.assertIn("measuring the step-cost model", log)
                self.assertIn("row counts measured", log)  # progress
        self.assertEqual([c["source"] for c in costs], ["measured", "cache", "measured"])
        files = [f for f in os.listdir(cache) if f.startswith("cost-") and f.endswith(".json")]
        self.assertEqual(len(files), 1, files)
        first = costs[0]
        self.assertTrue(first["speculation"])
        self.assertEqual(first["drafter"], "recycle")
        rows = [p["rows"] for p in first["step_cost"]]
        self.assertEqual(rows, sorted(rows))
        self.assertEqual(rows[0], 1)
        self.assertGreaterEqual(len(rows), 6)
        self.assertTrue(all(p["ms"] > 0 for p in first["step_cost"]))
        self.assertGreaterEqual(first["ms_per_position"], 0)
        # The cached table is the measured one.
        self.assertEqual(costs[1]["step_cost"], costs[0]["step_cost"])
        with open(os.path.join(cache, files[0])) as f:
            entry = json.load(f)
        self.assertEqual(entry["key"]["threads"], 1)


class SpeculationUsageTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = Server(slots=2, args=("--speculation", "on"))
        cls.server.start()

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def test_usage_carries_per_request_speculation_stats(self):
        client = self.server.openai()
        out = client.chat.completions.create(**BODY)
        extra = out.usage.model_extra or {}
        spec = extra.get("speculation")
        self.assertIsNotNone(spec, out.usage)
        self.assertGreater(spec["drafted_tokens"], 0)
        self.assertGreater(spec["accepted_tokens"], 0)
        self.assertLessEqual(spec["accepted_tokens"], spec["drafted_tokens"])
        self.assertLessEqual(spec["speculative_steps"], spec["decode_steps"])
        # Fewer decode steps than tokens: speculation did commit several tokens per step.
        self.assertLess(spec["decode_steps"], out.usage.completion_tokens - 1)
        status, opted = self.server.json("POST", "/v1/chat/completions", dict(BODY, speculation=False))
        self.assertEqual(status, 200, opted)
        self.assertEqual(opted["usage"]["speculation"]["drafted_tokens"], 0)
        self.assertEqual(opted["choices"][0]["message"]["content"], out.choices[0].message.content)

    def test_sampled_requests_speculate_unless_seeded(self):
        status, out = self.server.json("POST", "/v1/chat/completions", dict(BODY, temperature=0.3))
        self.assertEqual(status, 200, out)
        self.assertTrue(out["choices"][0]["message"]["content"])
        self.assertGreater(out["usage"]["speculation"]["drafted_tokens"], 0)
        # A seed asks for a reproducible output: no drafting, and the same text twice.
        seeded = [self.server.json("POST", "/v1/chat/completions", dict(BODY, temperature=0.9, seed=5))[1] for _ in range(2)]
        self.assertEqual(seeded[0]["usage"]["speculation"]["drafted_tokens"], 0)
        self.assertEqual(seeded[0]["choices"][0]["message"]["content"], seeded[1]["choices"][0]["message"]["content"])

    def test_metrics_and_cost_endpoint_show_the_planner(self):
        status, _ = self.server.json("POST", "/v1/chat/completions", BODY)
        self.assertEqual(status, 200)
        m = self.server.metrics()
        self.assertGreater(metric_value(m, "castserve_speculation_accepted_tokens_per_step", "castserve_speculation_accepted_tokens_per_step_count"), 0)
        self.assertGreater(metric_value(m, "castserve_speculation_tree_rows_per_step", "castserve_speculation_tree_rows_per_step_sum"), 0)
        self.assertGreater(metric_value(m, "castserve_speculation_drafted_tokens_total"),
                           metric_value(m, "castserve_speculation_accepted_tokens_total") - 1)
        self.assertGreater(metric_value(m, "castserve_planner_plain_goodput_tokens_per_second"), 0)
        self.assertGreaterEqual(metric_value(m, "castserve_planner_goodput_tokens_per_second"),
                                metric_value(m, "castserve_planner_plain_goodput_tokens_per_second"))
        status, cost = self.server.json("GET", "/v1/cast/cost")
        self.assertEqual(cost["source"], "fixed")
        self.assertEqual(status, 200)
        self.assertGreater(cost["accepted_tokens"], 0)
        self.assertGreaterEqual(cost["planned_goodput_tokens_per_second"], cost["plain_goodput_tokens_per_second"])


class DrafterConfigTest(unittest.TestCase):
    def run_serve(self, *args, env=None):
        e = {k: v for k, v in os.environ.items() if not k.startswith("CASTSERVE_")}
        e.update(env or {})
        return subprocess.run([binary_path(), "serve", "--port", "0", "--model", MODEL, *args], env=e,
                              capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)

    def test_a_bad_cost_model_file_stops_the_start_naming_it(self):
        out = self.run_serve("--cost-model", "/nonexistent/cost.json")
        self.assertNotEqual(out.returncode, 0)
        self.assertIn("cost-model file /nonexistent/cost.json cannot be read", out.stderr)
        self.assertIn("--cost-model", out.stderr)
        self.assertNotIn("listening on", out.stdout)
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump({"step_cost": [{"rows": 1, "ms": 2}, {"rows": 0, "ms": 3}]}, f)
        self.addCleanup(os.unlink, f.name)
        out = self.run_serve(env={"CASTSERVE_COST_MODEL_FILE": f.name})
        self.assertNotEqual(out.returncode, 0)
        self.assertIn(f"cost-model file {f.name} is not a cost model: step_cost[1].rows is 0", out.stderr)
        out = self.run_serve("--cost-model", FIXED_COST_MODEL, "--recalibrate")
        self.assertNotEqual(out.returncode, 0)
        self.assertIn("--recalibrate", out.stderr)

    def test_unknown_drafter_is_a_clear_error(self):
        out = self.run_serve("--drafter", "eagle")
        self.assertNotEqual(out.returncode, 0)
        self.assertIn("drafter", out.stderr)
        self.assertIn("recycle, suffix, ngram, skip or learned", out.stderr)
        out = self.run_serve(env={"CASTSERVE_DRAFTER": "eagle"})
        self.assertNotEqual(out.returncode, 0)
        self.assertIn("CASTSERVE_DRAFTER", out.stderr)

    def test_a_bad_learned_drafter_file_is_a_clear_error(self):
        # The model itself is a GGUF, but not a drafter: the key is named.
        out = self.run_serve("--drafter-model", MODEL)
        self.assertNotEqual(out.returncode, 0)
        self.assertIn("general.architecture", out.stderr)
        self.assertIn("cast-drafter", out.stderr)
        out = self.run_serve("--drafter-model", "/nonexistent/x.drafter.gguf")
        self.assertNotEqual(out.returncode, 0)
        self.assertIn("/nonexistent/x.drafter.gguf", out.stderr)
        # The learned drafter alone needs a file.
        out = self.run_serve("--drafter", "learned", "--drafter-model", "")
        self.assertNotEqual(out.returncode, 0)
        self.assertIn("--drafter-model", out.stderr)


if __name__ == "__main__":
    unittest.main()


class FixedCostModelTest(unittest.TestCase):
    """--cost-model serves with a fixed model: GET /v1/cast/cost says "fixed" and shows the file's
    table, before and after requests (no step time refreshes it); the start-up log says it was not
    measured; a saved /v1/cast/cost answer is itself a valid file; the config key does the same."""

    def test_served_fixed_and_never_refreshed(self):
        with open(FIXED_COST_MODEL) as f:
            given = json.load(f)
        s = Server(slots=2)
        s.start()
        try:
            status, before = s.json("GET", "/v1/cast/cost")
            self.assertEqual(status, 200, before)
            self.assertEqual(before["source"], "fixed")
            self.assertEqual(before["step_cost"], given["step_cost"])
            self.assertEqual(before["host_ms"]["fixed"], given["host_ms"]["fixed"])
            self.assertIn(f"step-cost model: fixed, from {FIXED_COST_MODEL} (not measured", s.log_text(tail=1 << 20))
            self.assertNotIn("measuring the step-cost model", s.log_text(tail=1 << 20))
            for _ in range(2):
                status, body = s.json("POST", "/v1/chat/completions", BODY)
                self.assertEqual(status, 200, body)
            status, after = s.json("GET", "/v1/cast/cost")
            self.assertEqual((after["step_cost"], after["host_ms"]), (before["step_cost"], before["host_ms"]))
            self.assertGreater(after["accuracy"]["steps"], 0)
        finally:
            self.assertEqual(s.stop(), 0)
        # The answer, saved, serves again through the config key.
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump(after, f)
        self.addCleanup(os.unlink, f.name)
        again = Server(slots=2, env={"CASTSERVE_COST_MODEL_FILE": f.name}, cost_model=None)
        again.start()
        try:
            _, cost = again.json("GET", "/v1/cast/cost")
            self.assertEqual((cost["source"], cost["step_cost"]), ("fixed", given["step_cost"]))
        finally:
            again.stop()


class SpeculationByDefaultTest(unittest.TestCase):
    """With nothing configured, the server speculates: /v1/cast/cost says so, responses carry
    usage.speculation, and the recycle table survives a restart (saved beside the cost cache)."""

    def test_on_by_default_and_the_recycle_table_is_kept_across_restarts(self):
        cache = tempfile.mkdtemp(prefix="castserve-default-")
        env = {"CASTSERVE_COST_CACHE_DIR": cache}
        server = Server(slots=2, env=env)  # no --speculation flag: config.json's default
        server.start()
        try:
            status, cost = server.json("GET", "/v1/cast/cost")
            self.assertEqual(status, 200, cost)
            self.assertTrue(cost["speculation"])
            self.assertEqual(cost["drafter_state"], "new")
            status, body = server.json("POST", "/v1/chat/completions", BODY)
            self.assertEqual(status, 200, body)
            usage = body["usage"]["speculation"]
            self.assertGreater(usage["decode_steps"], 0)
            self.assertIn("drafted_tokens", usage)
            # The shipped learned drafter is on by default; per depth, its accepted nodes are its
            # expansions with an accepted child (one accepted node per depth, below a tested
            # parent), and an expansion verifies at least one node.
            learned = server.json("GET", "/v1/cast/cost")[1]["learned_drafter"]
            per_node = {d["depth"]: d for d in learned["acceptance_by_depth"]}
            per_expansion = {d["depth"]: d for d in learned["acceptance_per_expansion"]}
            self.assertEqual(set(per_node), set(per_expansion))
            for depth, e in per_expansion.items():
                self.assertEqual(e["accepted"], per_node[depth]["accepted"], learned)
                self.assertLessEqual(e["verified"], per_node[depth]["verified"], learned)
        finally:
            self.assertEqual(server.stop(), 0)
        tables = [f for f in os.listdir(cache) if f.startswith("recycle-") and f.endswith(".bin")]
        self.assertEqual(len(tables), 1, os.listdir(cache))
        self.assertGreater(os.path.getsize(os.path.join(cache, tables[0])), 1 << 20)
        again = Server(slots=2, env=env)
        again.start()
        try:
            self.assertEqual(again.json("GET", "/v1/cast/cost")[1]["drafter_state"], "loaded")
        finally:
            again.stop()

    def test_off_by_flag(self):
        server = Server(slots=2, args=("--speculation", "off"))
        server.start()
        try:
            self.assertFalse(server.json("GET", "/v1/cast/cost")[1]["speculation"])
        finally:
            server.stop()
