"""Steady-state decode allocates nothing per token: the alloc-probe executable (which counts every
heap allocation of its process, all threads) decodes with the default model and reports allocations
per token for the forward pass and for a request through the engine; they must not exceed the
thresholds committed in tests/allocation_thresholds.json (0 and 0). With speculation on, the tree
bookkeeping of drafting and verification allocates a few arrays per step: its figure must not grow
past its committed threshold.
"""

import json
import os
import subprocess
import unittest

from castserve_harness import MODEL, ROOT, binary_path, require_model


class AllocationTests(unittest.TestCase):
    def test_steady_state_decode_allocates_nothing_per_token(self):
        require_model()
        probe = os.path.join(os.path.dirname(binary_path()), "alloc-probe")
        if not os.path.exists(probe):
            self.fail(f"{probe} is missing: `swift build -c release` builds it")
        with open(os.path.join(ROOT, "tests", "allocation_thresholds.json")) as f:
            thresholds = json.load(f)
        out = subprocess.run([probe, MODEL], cwd=ROOT, capture_output=True, text=True, timeout=300)
        self.assertEqual(out.returncode, 0, out.stderr)
        figures = json.loads(out.stdout)
        print(f"allocations per token: {figures}")
        self.assertTrue(figures["counter_works"], "the allocation counter saw no allocation of a new array")
        self.assertEqual(figures["tokens"], 320)
        self.assertEqual(figures["speculative_tokens"], 320)
        for key in ("forward_per_token", "engine_per_token", "speculative_engine_per_token"):
            self.assertLessEqual(figures[key], thresholds[key], f"{key}: {figures[key]} allocations per token")


if __name__ == "__main__":
    unittest.main()
