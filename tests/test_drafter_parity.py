"""The shipped learned drafter of the default model, in the engine and offline: on greedy replies
to prompts of the held-out split of its training source (Tests/Fixtures/drafter_heldout_prompts.jsonl,
never the bench workload), `cast-bench drafter-check` counts the engine's own acceptance per depth
(chains, the drafter alone) next to the same walk replayed on the prefill features that training
reads; and tools/drafter/parity.py checks the runtime's drafter (Q8_0 matrices, 8-bit activations)
against the numpy reference forward of tools/drafter/drafter.py on the same inputs. A feature of
the wrong row, a token off by one or a wrong draft-vocabulary mapping in the engine shows up as
engine acceptance below the replay; a runtime forward that is not the trained one, as parity
failing (a perturbed drafter is shown to fail it). Needs the default model, gguf and numpy."""

import json
import os
import subprocess
import sys
import tempfile
import unittest

from castserve_harness import MODEL, ROOT, binary_path, require_model

DRAFTER_DIR = os.path.join(ROOT, "tools", "drafter")
sys.path.insert(0, DRAFTER_DIR)
PROMPTS = os.path.join(ROOT, "Tests", "Fixtures", "drafter_heldout_prompts.jsonl")
DRAFTER = os.path.join(ROOT, "drafters", os.path.basename(MODEL).removesuffix(".gguf") + ".drafter.gguf")


def cast_bench():
    path = os.path.abspath(os.path.join(os.path.dirname(binary_path()), "cast-bench"))
    if not os.path.exists(path):
        raise unittest.SkipTest(f"{path} is not built; run `swift build -c release`")
    return path


class DrafterParityTests(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        require_model()
        try:
            import gguf  # noqa: F401
        except ImportError:
            raise unittest.SkipTest("gguf is not installed; run `make synthetic-models` (installs gguf==0.19.0 numpy==2.4.6)")
        cls.bench = cast_bench()
        cls.tmp = tempfile.TemporaryDirectory(prefix="castserve-parity-")
        cls.dump = os.path.join(cls.tmp.name, "dump.jsonl")
        cls.features = os.path.join(cls.tmp.name, "features.bin")
        check = subprocess.run([cls.bench, "drafter-check", "--model", MODEL, "--drafter-model", DRAFTER, "--prompts", PROMPTS,
                                "--max-tokens", "40", "--depth", "4", "--dump", cls.dump, "--json"],
                               cwd=ROOT, capture_output=True, text=True, timeout=600)
        cls.check = check
        cls.report = json.loads(check.stdout) if check.returncode == 0 else None

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def parity(self, drafter):
        if not os.path.exists(self.features):
            proc = subprocess.run([self.bench, "features", "--model", MODEL, "--input", self.dump, "--out", self.features],
                                  cwd=ROOT, capture_output=True, text=True, timeout=300)
            self.assertEqual(proc.returncode, 0, proc.stderr[-2000:])
        return subprocess.run([sys.executable, os.path.join(DRAFTER_DIR, "parity.py"), "--model", MODEL, "--drafter", drafter,
                               "--dump", self.dump, "--features", self.features, "--json"],
                              cwd=ROOT, capture_output=True, text=True, timeout=300)

    def test_engine_acceptance_equals_the_offline_replay(self):
        self.assertEqual(self.check.returncode, 0, self.check.stderr[-3000:])
        r = self.report
        self.assertTrue(r["greedy_identical"])
        self.assertEqual(r["sequences"], 4)
        engine, replayed = r["engine"], r["replayed"]
        # Depth 1 is drafted at every step: about 40 steps of 4 replies, minus what chains accepted.
        self.assertGreaterEqual(replayed[0]["observed"], 60)
        for depth, (e, p) in enumerate(zip(engine, replayed), start=1):
            # Prefill and decode compute the features alike but not bit for bit (f16 rounding of the
            # training features); a rare top-1 flip moves one walk, so counts agree within a few.
            self.assertLessEqual(abs(e["observed"] - p["observed"]), 3 + p["observed"] // 10, f"depth {depth}: {r}")
            self.assertLessEqual(abs(e["accepted"] - p["accepted"]), 3 + p["accepted"] // 10, f"depth {depth}: {r}")
        # The trained drafter is far from chance on its held-out prompts.
        self.assertGreater(r["every_position"][0]["accepted"] / r["every_position"][0]["observed"], 0.15)

    def test_runtime_forward_matches_numpy_reference(self):
        self.assertEqual(self.check.returncode, 0, self.check.stderr[-3000:])
        proc = self.parity(DRAFTER)
        self.assertEqual(proc.returncode, 0, proc.stdout + proc.stderr[-2000:])
        report = json.loads(proc.stdout)
        self.assertGreaterEqual(report["top1_agreement"], 0.95)
        self.assertLessEqual(report["probability_diff_median"], 0.02)
        # Both sides count the same chain acceptance from every reply position (within the rare
        # top-1 flips of Q8_0 rounding).
        mine = self.report["every_position"][0]
        numpy_first = report["numpy_every_position"][0]
        self.assertEqual(mine["observed"], numpy_first["observed"])
        self.assertLessEqual(abs(mine["accepted"] - numpy_first["accepted"]), 3 + mine["observed"] // 20)

    def test_parity_catches_another_forward(self):
        """The parity check can fail: a drafter whose feature path is changed (W_in's feature half
        scaled) is not the one the runtime ran."""
        import gguf
        import numpy as np
        from drafter import read_gguf, write_gguf, Target
        self.assertEqual(self.check.returncode, 0, self.check.stderr[-3000:])
        model, vocab = read_gguf(DRAFTER)
        d = model.d
        model.p["w_in"][:, d:] *= -1.0
        reader = gguf.GGUFReader(DRAFTER)
        training = json.loads(bytes(reader.fields["cast-drafter.training"].parts[-1]).decode())
        other = os.path.join(self.tmp.name, "other.drafter.gguf")
        write_gguf(other, model, np.asarray(vocab), Target.load(MODEL), training)
        proc = self.parity(other)
        self.assertEqual(proc.returncode, 1, proc.stdout + proc.stderr[-2000:])
        self.assertLess(json.loads(proc.stdout)["top1_agreement"], 0.9)


if __name__ == "__main__":
    unittest.main()
