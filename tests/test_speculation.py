"""Speculative decoding through the HTTP server: the step-cost model is measured once (with
progress), cached on disk and reused on restart (--recalibrate measures again), responses carry
per-request speculation usage, /metrics and GET /v1/cast/cost show what the planner does, sampled
requests speculate too, and a bad drafter name is a clear start-up error."""
import json
import os
import subprocess
import tempfile
import unittest

from castserve_harness import MODEL, Server, binary_path, metric_value

ARTICLE = ("The library opens at nine. The library closes at five. Children may borrow three books. "
           "Adults may borrow five books. Late books cost ten cents a day. ") * 2
BODY = {"model": "default", "temperature": 0, "max_tokens": 40,
        "messages": [{"role": "user", "content": "Repeat this text exactly:\n\n" + ARTICLE}]}


class CostModelCacheTest(unittest.TestCase):
    def test_measured_once_then_reused_and_recalibrated_on_request(self):
        cache = tempfile.mkdtemp(prefix="castserve-cost-")
        env = {"CASTSERVE_COST_CACHE_DIR": cache}
        costs = []
        for args in (("--speculation", "on"), ("--speculation", "on"), ("--speculation", "on", "--recalibrate")):
            s = Server(slots=2, env=env, args=args)
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
        self.assertEqual(status, 200)
        self.assertGreater(cost["accepted_tokens"], 0)
        self.assertGreaterEqual(cost["planned_goodput_tokens_per_second"], cost["plain_goodput_tokens_per_second"])


class DrafterConfigTest(unittest.TestCase):
    def run_serve(self, *args, env=None):
        e = {k: v for k, v in os.environ.items() if not k.startswith("CASTSERVE_")}
        e.update(env or {})
        return subprocess.run([binary_path(), "serve", "--port", "0", "--model", MODEL, *args], env=e,
                              capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)

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
