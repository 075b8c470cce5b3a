"""Smoke tests of the HTTP load benchmark tools/bench/load.py: its pure helpers, a tiny run where it
starts cast-serve itself, and a tiny run against an already running server (--target url)."""

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
import unittest
import xml.etree.ElementTree as ET

from castserve_harness import FIXED_COST_MODEL, ROOT, MODEL, Server, binary_path, require_model

LOAD_PY = os.path.join(ROOT, "tools", "bench", "load.py")
THREADS = os.environ.get("CASTSERVE_E2E_THREADS", "1")


def import_load():
    spec = importlib.util.spec_from_file_location("castserve_load", LOAD_PY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


load = import_load()


def run_tool(*args, timeout=90):
    """Runs load.py; returns (CompletedProcess, parsed JSON report or None, SVG text or None)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "load.json")
        svg = os.path.join(tmp, "load.svg")
        proc = subprocess.run([sys.executable, LOAD_PY, *args, "--json", out, "--svg", svg], cwd=ROOT,
                              capture_output=True, text=True, timeout=timeout)
        report = chart = None
        if os.path.exists(out):
            with open(out) as f:
                report = json.load(f)
        if os.path.exists(svg):
            with open(svg) as f:
                chart = f.read()
    return proc, report, chart


class HelperTests(unittest.TestCase):
    def test_percentile_interpolates(self):
        self.assertEqual(load.percentile([3, 1, 2], 50), 2)
        self.assertAlmostEqual(load.percentile([0, 10], 95), 9.5)
        self.assertIsNone(load.percentile([], 50))

    def test_prometheus_sums_label_sets(self):
        text = ("# HELP x y\n# TYPE castserve_requests_total counter\n"
                'castserve_requests_total{route="/v1/completions",status="200"} 3\n'
                'castserve_requests_total{route="/health",status="200"} 4\n'
                "castserve_engine_steps_total 10\ncastserve_engine_rows_total 25\n"
                "castserve_engine_step_seconds_total 0.5\n")
        m = load.parse_prometheus(text)
        self.assertEqual(m["castserve_requests_total"], 7)
        before = {"castserve_engine_steps_total": 4, "castserve_engine_rows_total": 5,
                  "castserve_engine_step_seconds_total": 0.2}
        d = load.metric_deltas(before, m)
        self.assertAlmostEqual(d["rows_per_step"], 20 / 6)
        self.assertAlmostEqual(d["step_ms"], 50.0)

    def test_request_body_routes_chat_and_plain(self):
        path, body = load.request_body({"id": "a", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 9}, "m")
        self.assertEqual(path, "/v1/chat/completions")
        self.assertEqual((body["temperature"], body["stream"], body["max_tokens"]), (0, True, 9))
        self.assertTrue(body["stream_options"]["include_usage"])
        path, body = load.request_body({"id": "b", "prompt": "x", "max_tokens": 9}, "m", max_tokens_cap=4)
        self.assertEqual((path, body["max_tokens"]), ("/v1/completions", 4))

    def test_svg_and_tables(self):
        level = lambda c, v: {"concurrency": c, "tok_s": v, "ttft_p50_ms": 10.0, "ttft_p95_ms": 20.0,
                              "latency_p50_ms": 100.0, "latency_p95_ms": 200.0, "errors": 0, "requests": 3,
                              "engine": {}}
        results = [{"target": "castserve", "levels": [level(1, 50.0), level(4, 120.0)]},
                   {"target": "llama-server", "levels": [level(1, 25.0), level(4, 60.0)]}]
        root = ET.fromstring(load.svg_chart(results))
        self.assertEqual(len(root.findall("{http://www.w3.org/2000/svg}polyline")), 2)
        texts = [t.text for t in root.iter("{http://www.w3.org/2000/svg}text")]
        self.assertIn("castserve", texts)
        self.assertIn("llama-server", texts)
        self.assertIn("| castserve | 4 | 120.0 |", load.markdown_table(results))
        self.assertIn("| 4 | 2.00 |", load.ratio_table(results))


    def test_replot_rewrites_chart_from_saved_report(self):
        level = {"concurrency": 2, "tok_s": 80.0, "ttft_p50_ms": 1.0, "ttft_p95_ms": 2.0, "latency_p50_ms": 3.0,
                 "latency_p95_ms": 4.0, "errors": 0, "requests": 1, "engine": {}}
        report = {"date": "2026-01-01T00:00:00+00:00", "prompt_count": 1,
                  "results": [{"target": "url", "levels": [level], "invariance": None}]}
        with tempfile.TemporaryDirectory() as tmp:
            path, svg = os.path.join(tmp, "r.json"), os.path.join(tmp, "r.svg")
            with open(path, "w") as f:
                json.dump(report, f)
            proc = subprocess.run([sys.executable, LOAD_PY, "--replot", path, "--svg", svg],
                                  capture_output=True, text=True, timeout=30)
            self.assertEqual(proc.returncode, 0, proc.stderr)
            self.assertIn("| url | 2 | 80.0 |", proc.stdout)
            with open(svg) as f:
                self.assertIn("2026-01-01", f.read())


class CastServeRunTests(unittest.TestCase):
    def test_tool_starts_castserve_and_reports(self):
        require_model()
        started = time.monotonic()
        # The fixed cost model: no start-up measurement of 16 slots, which a busy host makes slow.
        # The time bounds are generous: they check that the run is bounded, not how fast it is.
        proc, report, chart = run_tool("--target", "castserve", "--castserve-bin", binary_path(), "--model", MODEL,
                                       "--limit", "3", "--concurrency", "1,2", "--max-tokens", "32",
                                       "--threads", THREADS, "--timeout", "60", "--max-seconds", "240", "--quiet",
                                       "--castserve-args", f"--cost-model {FIXED_COST_MODEL}")
        elapsed = time.monotonic() - started
        self.assertEqual(proc.returncode, 0, proc.stderr[-2000:])
        self.assertLess(elapsed, 300)
        self.assertIsNotNone(report)
        (result,) = report["results"]
        self.assertEqual(result["target"], "castserve")
        self.assertEqual(result["server"]["exit_status"], 0)
        self.assertEqual([lv["concurrency"] for lv in result["levels"]], [1, 2])
        for lv in result["levels"]:
            self.assertEqual((lv["requests"], lv["errors"]), (3, 0))
            self.assertGreater(lv["tok_s"], 0)
            self.assertGreater(lv["completion_tokens"], 0)
            self.assertLessEqual(lv["completion_tokens"], 3 * 32)
            self.assertEqual(lv["token_source"], "usage")
            self.assertLessEqual(lv["ttft_p50_ms"], lv["latency_p50_ms"])
            self.assertGreater(lv["engine"]["steps"], 0)
            self.assertGreaterEqual(lv["engine"]["rows_per_step"], 1.0)
        for records in result["requests"].values():
            self.assertEqual([r["id"] for r in records], ["chat-1", "chat-2", "chat-3"])
            self.assertTrue(all(r["ok"] and r["text"] for r in records))
        inv = result["invariance"]
        self.assertEqual((inv["low"], inv["high"], inv["compared"], inv["identical"]), (1, 2, 3, 3))
        self.assertIn("| castserve | 2 |", proc.stdout)
        self.assertIn("<svg", chart)


class UrlTargetTests(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = Server(slots=2).start()

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def test_url_target_plain_prompts(self):
        # The plain rows go to /v1/completions (the other run covers chat).
        proc, report, _ = run_tool("--target", "url", "--url", self.server.base_url, "--categories", "plain", "--limit", "2",
                                   "--concurrency", "2", "--max-tokens", "8", "--timeout", "30",
                                   "--max-seconds", "40", "--quiet")
        self.assertEqual(proc.returncode, 0, proc.stderr[-2000:])
        (result,) = report["results"]
        (level,) = result["levels"]
        self.assertEqual((level["requests"], level["errors"]), (2, 0))
        self.assertGreater(level["tok_s"], 0)
        self.assertIsNone(result["invariance"])
        self.assertEqual([r["id"] for r in result["requests"]["2"]], ["plain-1", "plain-2"])
        self.assertEqual(list(level["by_category"]), ["plain"])

    def test_unreachable_url_counts_errors(self):
        proc, report, _ = run_tool("--target", "url", "--url", "http://127.0.0.1:9", "--limit", "1",
                                   "--concurrency", "1", "--timeout", "5", "--max-seconds", "20", "--quiet")
        self.assertEqual(proc.returncode, 1)
        self.assertIn("warm-up request failed", report["results"][0]["error"])


if __name__ == "__main__":
    unittest.main()
