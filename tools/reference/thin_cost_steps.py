"""Makes Tests/Fixtures/cost_steps.json from a `cast-bench matrix --record-steps` file.

The recording holds the start-up cost model and every step of the cast strategy (and the plain
one's wall times), tagged with batch size and round. The fixture keeps one round (fresh engines:
the online refresh starts from the start-up model, as in a new server) and every `stride`-th of
its cast steps, in order, rounded to 4 decimals: a few hundred KB at most.

Usage: python3 thin_cost_steps.py RECORDING [--round 2] [--stride 4] [--out ../../Tests/Fixtures/cost_steps.json]
"""

from __future__ import annotations

import argparse
import json
import pathlib

HERE = pathlib.Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("recording")
    ap.add_argument("--round", type=int, default=2)
    ap.add_argument("--stride", type=int, default=4)
    ap.add_argument("--out", default=str(HERE.parent.parent / "Tests/Fixtures/cost_steps.json"))
    args = ap.parse_args()
    rec = json.loads(pathlib.Path(args.recording).read_text())
    steps = [s for s in rec["steps"] if s.get("round", 1) == args.round][:: args.stride]
    keep = ["batch", "rows", "logit_rows", "positions", "nodes", "forward_ms", "host_ms"]
    out = {
        "machine": rec["machine"],
        "kernels": rec["kernels"],
        "source": f"cast-bench matrix --record-steps, round {args.round}, every {args.stride}th cast step",
        "cost_model": rec["cost_model"],
        "steps": [{k: (round(s[k], 4) if isinstance(s[k], float) else s[k]) for k in keep} for s in steps],
    }
    pathlib.Path(args.out).write_text(json.dumps(out, separators=(",", ":")) + "\n")
    print(f"{len(out['steps'])} steps -> {args.out}")


if __name__ == "__main__":
    main()
