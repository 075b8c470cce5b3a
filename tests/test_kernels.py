"""Kernel sets and key/value cache types as a user chooses them: `--kernels`, the config key
`kernels` and CASTSERVE_KERNELS; `--kv-cache-type` / `kv_cache_type`. The choice shows in GET /health,
GET /v1/models, /metrics (castserve_build_info) and the start-up log; forcing a set this CPU cannot
run stops the start with an error naming the missing CPU features.
"""

import json
import os
import platform
import shutil
import subprocess
import tempfile
import unittest

from castserve_harness import MODEL, ROOT, Server, binary_path, metric_value, require_model

# A fixed step-cost model where rows cost what they do on a CPU: small trees (the emulated server).
ROWS_COST_MODEL = os.path.join(ROOT, "tests", "fixtures", "cost_model_rows_cost.json")


def cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags") or line.startswith("Features"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


FLAGS = cpu_flags()
X86 = platform.machine() in ("x86_64", "AMD64")
AVX512 = X86 and {"avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_vnni", "avx2", "fma", "f16c"} <= FLAGS
AVX2 = X86 and {"avx2", "fma", "f16c"} <= FLAGS
NEON = platform.machine() in ("aarch64", "arm64") and "asimddp" in FLAGS
BEST = "avx512" if AVX512 else "neon" if NEON else "avx2" if AVX2 else "scalar"
# A set this CPU cannot run, and the features the server must name for it.
UNSUPPORTED = ("neon", "x86-64") if X86 else ("avx2", "arm64")
if X86 and not AVX512:
    UNSUPPORTED = ("avx512", "avx512f")


class KernelChoiceTests(unittest.TestCase):
    def serve(self, args=(), env=None):
        server = Server(slots=2, args=args, env=env).start()
        self.addCleanup(server.stop)
        return server

    def chat(self, server):
        status, body = server.json("POST", "/v1/chat/completions", {
            "model": "default", "messages": [{"role": "user", "content": "What is the capital of France?"}],
            "max_tokens": 12, "temperature": 0})
        self.assertEqual(status, 200, body)
        self.assertTrue(body["choices"][0]["message"]["content"].strip())
        return body["choices"][0]["message"]["content"]

    def test_auto_picks_the_best_set_and_reports_it_everywhere(self):
        # Auto named explicitly: CASTSERVE_E2E_KERNELS forces a set only where a test names none.
        server = self.serve(env={"CASTSERVE_KERNELS": "auto"})
        status, health = server.json("GET", "/health")
        self.assertEqual((status, health["kernels"]), (200, BEST))
        _, models = server.json("GET", "/v1/models")
        self.assertEqual(models["data"][0]["kernels"], BEST)
        self.assertEqual(models["data"][0]["kv_cache_type"], "f16")
        families = server.metrics()
        self.assertEqual(metric_value(families, "castserve_build_info", kernels=BEST, kv_cache_type="f16"), 1.0)
        log = server.log_text(tail=20000)
        self.assertIn(f"kernels: {BEST} (auto", log)
        # 30 layers x keys and values x 3 heads x 64 values x 2 bytes.
        self.assertIn("KV cache f16 with 23040 bytes per position", log)
        self.chat(server)

    def test_flag_forces_the_scalar_reference(self):
        # Speculation off: its start-up step-cost measurement runs the scalar kernels through up
        # to 128-row steps, minutes on a slow 2-core host, and is not what this test checks.
        server = self.serve(args=["--kernels", "scalar", "--speculation", "off"])
        self.assertEqual(server.json("GET", "/health")[1]["kernels"], "scalar")
        self.assertIn("forced by configuration", server.log_text(tail=20000))
        self.chat(server)

    @unittest.skipUnless(AVX2, "this CPU has no AVX2")
    def test_environment_variable_forces_avx2(self):
        server = self.serve(env={"CASTSERVE_KERNELS": "avx2"})
        self.assertEqual(server.json("GET", "/health")[1]["kernels"], "avx2")

    def test_q8_0_cache_serves_and_is_reported(self):
        server = self.serve(args=["--kv-cache-type", "q8_0"])
        _, models = server.json("GET", "/v1/models")
        self.assertEqual(models["data"][0]["kv_cache_type"], "q8_0")
        self.assertIn("KV cache q8_0 with 12240 bytes per position", server.log_text(tail=20000))
        self.chat(server)

    def run_failing(self, args, config=None):
        """Starts cast-serve expecting it to stop before serving; returns its output."""
        require_model()
        env = {k: v for k, v in os.environ.items() if not k.startswith("CASTSERVE_")}
        cmd = [binary_path(), "serve", "--port", "0", "--model", MODEL]
        if config is not None:
            f = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False)
            json.dump(config, f)
            f.close()
            self.addCleanup(os.unlink, f.name)
            cmd += ["--config", f.name]
        proc = subprocess.run(cmd + list(args), cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
        self.assertNotEqual(proc.returncode, 0, proc.stdout + proc.stderr)
        self.assertNotIn("listening on", proc.stdout)
        return proc.stderr

    def test_a_set_this_cpu_cannot_run_stops_the_start_naming_the_missing_features(self):
        name, feature = UNSUPPORTED
        err = self.run_failing(["--kernels", name])
        self.assertIn(f"kernel set '{name}' cannot run on this CPU", err)
        self.assertIn(feature, err)
        self.assertIn(BEST, err)  # what would run instead

    def test_bad_names_are_configuration_errors(self):
        err = self.run_failing([], config={"kernels": "sse9"})
        self.assertIn("configuration key 'kernels'", err)
        self.assertIn("auto, avx512, avx2, neon or scalar", err)
        err = self.run_failing(["--kv-cache-type", "q4_0"])
        self.assertIn("kv_cache_type", err)
        self.assertIn("f16, q8_0 or f32", err)


# An AVX2-only x86-64 CPU (no AVX-512), emulated: qemu-user's Haswell model without the features
# its TCG does not emulate (each would print a warning per thread). qemu-user is in the Makefile's
# apt packages for the neon kernel tests.
HASWELL = ["qemu-x86_64", "-cpu", "Haswell-noTSX,-pcid,-x2apic,-tsc-deadline,-invpcid"]


@unittest.skipUnless(X86 and AVX2 and shutil.which(HASWELL[0]), "needs an x86-64 host with AVX2 and qemu-x86_64")
class AVX2OnlyCPUTests(unittest.TestCase):
    """The server on an AVX2-only CPU, as an AVX-512 host can show it: under qemu's Haswell model
    (CPUID without AVX-512) the kernel set chosen by auto is avx2, the learned drafter and
    speculation run on it, and greedy answers are those of a native server with avx2 forced. Any
    AVX-512 instruction reached on the way would stop the emulated server with SIGILL. The emulator
    is tens of times slower than the host and its time goes with the rows computed, so the prompt
    and the reply are short and the fixed cost model keeps the draft trees small (the tests' default
    one, where rows are free, verifies the widest trees)."""

    def test_auto_picks_avx2_and_answers_as_the_forced_set_does(self):
        request = {"model": "default", "prompt": "def add(a, b):\n    return", "max_tokens": 8, "temperature": 0}
        emulated = Server(slots=1, env={"CASTSERVE_KERNELS": "auto"}, launcher=HASWELL, cost_model=ROWS_COST_MODEL).start()
        self.addCleanup(emulated.stop)
        status, health = emulated.json("GET", "/health")
        self.assertEqual((status, health["kernels"]), (200, "avx2"))
        log = emulated.log_text(tail=10**7)   # the emulated start-up logs many polls of /health
        self.assertIn("kernels: avx2 (auto", log)
        self.assertIn("learned drafter: drafters/", log)
        status, answer = emulated.json("POST", "/v1/completions", request, timeout=300)
        self.assertEqual(status, 200, answer)
        emulated.stop()
        self.assertGreater(answer["usage"]["speculation"]["drafted_tokens"], 0, answer["usage"])
        native = Server(slots=1, env={"CASTSERVE_KERNELS": "avx2"}, cost_model=ROWS_COST_MODEL).start()
        self.addCleanup(native.stop)
        status, expected = native.json("POST", "/v1/completions", request)
        self.assertEqual(status, 200, expected)
        self.assertEqual(answer["choices"][0]["text"], expected["choices"][0]["text"])
        self.assertEqual(answer["usage"]["completion_tokens"], 8)


if __name__ == "__main__":
    unittest.main()
