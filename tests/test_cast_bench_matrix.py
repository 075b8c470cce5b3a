"""`cast-bench matrix` on the default model with its learned drafter, one prompt a category, one
round, B = 1: the report's cells and the drafters' share of step time per category (issue 20 asks
for it). At B = 1 a unit is one prompt, so the per-category shares partition the cell's steps:
the cell's share (from the engine's counters) must lie between the smallest and largest category
share (from the step reports, each unit's steps up to the next unit's start), plain decoding's
must be 0, and speculation's must be positive in every category (the learned drafter runs a layer
at every root). A unit whose steps went to another (the attribution off by a unit) breaks the
bracket or leaves a category at 0. Speeds are not asserted. Needs the default model and the bench
workload."""

import json
import os
import subprocess
import unittest

from castserve_harness import ROOT, binary_path, require_model

BENCH = os.path.join(os.path.dirname(ROOT), "shared", "bench", "prompts.jsonl")


class MatrixReportTests(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        require_model()
        bench = os.path.abspath(os.path.join(os.path.dirname(binary_path()), "cast-bench"))
        if not os.path.exists(bench):
            raise unittest.SkipTest(f"{bench} is not built; run `swift build -c release`")
        if not os.path.exists(BENCH):
            raise unittest.SkipTest(f"{BENCH} (the bench workload) is missing")
        cls.proc = subprocess.run([bench, "matrix", "--strategies", "plain,cast", "--rounds", "1", "--per-category", "1",
                                   "--batches", "1", "--prompts", BENCH, "--json"],
                                  cwd=ROOT, capture_output=True, text=True, timeout=900)

    def test_draft_share_per_category(self):
        self.assertEqual(self.proc.returncode, 0, self.proc.stderr[-3000:])
        report = json.loads(self.proc.stdout)
        self.assertTrue((report["drafterModel"] or "").endswith(".drafter.gguf"), report.get("drafterModel"))
        cells = {c["strategy"]: c for c in report["cells"]}
        self.assertEqual(set(cells), {"plain", "cast"})
        categories = set(cells["cast"]["categories"])
        self.assertGreaterEqual(len(categories), 5)
        self.assertEqual(set(cells["cast"]["category_draft_share"]), categories)
        self.assertTrue(all(v == 0 for v in cells["plain"]["category_draft_share"].values()), cells["plain"])
        self.assertEqual(cells["plain"]["draft_share"], 0)
        shares = cells["cast"]["category_draft_share"]
        self.assertTrue(all(0 < v < 0.5 for v in shares.values()), shares)
        share = cells["cast"]["draft_share"]
        self.assertGreaterEqual(share, min(shares.values()) * 0.98, (share, shares))
        self.assertLessEqual(share, max(shares.values()) * 1.02, (share, shares))


if __name__ == "__main__":
    unittest.main()
