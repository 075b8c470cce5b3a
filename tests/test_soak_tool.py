"""The soak tool (tools/soak/soak.py): a short real soak against cast-serve passes and writes its
results; a server that leaks a file descriptor per request fails the fd check."""

import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
import unittest

import castserve_harness as h

SOAK = os.path.join(h.ROOT, "tools", "soak", "soak.py")

# A stand-in OpenAI server that keeps one file descriptor open per request (a deliberate leak).
LEAKY_SERVER = textwrap.dedent('''
    import json, sys
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    leaked = []
    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        def log_message(self, *a): pass
        def do_GET(self):
            self.send_response(200); self.send_header("Content-Length", "2"); self.end_headers(); self.wfile.write(b"ok")
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            leaked.append(open("/dev/null"))
            usage = {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}
            if body.get("stream"):
                self.send_response(200); self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close"); self.end_headers()
                for piece in ("a", "b"):
                    chunk = {"choices": [{"index": 0, "delta": {"content": piece}}]}
                    self.wfile.write(b"data: " + json.dumps(chunk).encode() + b"\\n\\n")
                self.wfile.write(b"data: " + json.dumps({"choices": [], "usage": usage}).encode() + b"\\n\\ndata: [DONE]\\n\\n")
                self.close_connection = True
            else:
                out = json.dumps({"choices": [{"message": {"content": "ab"}}], "usage": usage}).encode()
                self.send_response(200); self.send_header("Content-Length", str(len(out))); self.end_headers()
                self.wfile.write(out)
    class S(ThreadingHTTPServer):
        def handle_error(self, *a): pass
    s = S(("127.0.0.1", 0), H)
    print(s.server_address[1], flush=True)
    s.serve_forever()
''')


def run_soak(args, timeout):
    return subprocess.run([sys.executable, SOAK, *args], capture_output=True, text=True, timeout=timeout, cwd=h.ROOT)


class SoakToolTest(unittest.TestCase):
    def test_short_soak_against_castserve_passes(self):
        h.require_model()
        binary = h.binary_path()
        with tempfile.TemporaryDirectory() as out:
            env_bin = ["--castserve-bin", binary, "--threads", os.environ.get("CASTSERVE_E2E_THREADS", "1")]
            r = run_soak(["--duration", "20", "--warmup", "20", "--interval", "2", "--concurrency", "4",
                          "--max-tokens", "12", "--context-length", "256", "--settle", "45",
                          "--disconnect-rate", "0.3", "--cancel-rate", "0.3", "--out", out] + env_bin, timeout=300)
            self.assertEqual(r.returncode, 0, f"soak failed:\n{r.stdout}\n{r.stderr[-3000:]}")
            with open(os.path.join(out, "soak.json")) as f:
                result = json.load(f)
            self.assertTrue(result["passed"])
            load = result["load"]
            self.assertGreater(load["ok"], 0)
            self.assertGreater(load["abandoned_streams"] + load["cancelled_requests"], 0)
            self.assertEqual(load["error_count"], 0, load["errors"])
            self.assertGreater(load["tok_s"], 0)
            self.assertGreaterEqual(len(result["samples"]), 5)
            self.assertTrue(all(s["rss_kb"] > 0 and s["fds"] > 0 for s in result["samples"]))
            self.assertGreater(result["idle"]["peak"]["fds"], result["idle"]["warm"]["fds"])
            self.assertEqual(result["idle"]["after"]["fds"], result["idle"]["warm"]["fds"])
            self.assertIn("PASS", open(os.path.join(out, "soak.md")).read())
            self.assertTrue(open(os.path.join(out, "soak.svg")).read().startswith("<svg"))

    def test_fd_leak_fails_the_soak(self):
        server = subprocess.Popen([sys.executable, "-c", LEAKY_SERVER], stdout=subprocess.PIPE, text=True)
        try:
            port = int(server.stdout.readline())
            with tempfile.TemporaryDirectory() as out:
                r = run_soak(["--url", f"http://127.0.0.1:{port}", "--pid", str(server.pid), "--duration", "3",
                              "--warmup", "0", "--interval", "1", "--concurrency", "2", "--settle", "3",
                              "--out", out], timeout=120)
                self.assertEqual(r.returncode, 1, f"{r.stdout}\n{r.stderr[-3000:]}")
                with open(os.path.join(out, "soak.json")) as f:
                    result = json.load(f)
            self.assertFalse(result["passed"])
            failed = [text for text, ok in result["checks"] if not ok]
            self.assertTrue(any("open fds" in t for t in failed), failed)
            self.assertGreater(result["idle"]["after"]["fds"], result["idle"]["warm"]["fds"])
        finally:
            server.kill()
            server.wait(timeout=10)
            server.stdout.close()

    def test_url_without_pid_is_a_usage_error(self):
        r = run_soak(["--url", "http://127.0.0.1:9"], timeout=30)
        self.assertEqual(r.returncode, 2)
        self.assertIn("--pid", r.stderr)


if __name__ == "__main__":
    unittest.main()
