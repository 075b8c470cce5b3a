#!/usr/bin/env python3
"""Trains the learned drafter (feature-mlp) on the target's own replies and features, in numpy.

Inputs: the replies of `cast-bench replies` (JSON lines with tokens, prompt_tokens, top1,
category, id, mode) and the features of `cast-bench features` over the same lines, in order.
Output: the drafter GGUF (format: drafters/README.md) and a JSON report (coverage of the
draft vocabulary, offline acceptance per depth on the held-out prompts, per category).

Loss per unrolled step k = 1..U (the drafter's own predicted feature feeds step k + 1, the data's
token its input token): cross-entropy over the draft vocabulary of the target's greedy token
(top1) + lambda * smooth L1 of the predicted feature against the target's, weighted w_k.
Adam, a fixed seed, uniform noise on the input features (EAGLE). Features are handled in units of
their global RMS s (every consumer of a feature normalizes it first); the exported W_in, b_in and
W_down carry s, so the file's f' is on the target's scale.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import zlib
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from drafter import (PARAMS, Drafter, DrafterError, Head, Target, cross_entropy, read_features,  # noqa: E402
                     smooth_l1, write_gguf)

HELD_OUT_PERCENT = 10


def held_out_split(prompt_ids: list[str]) -> np.ndarray:
    """The held-out split: crc32(prompt id) % 100 < HELD_OUT_PERCENT (both replies of a prompt go
    together); when no id falls there (tiny data), the id with the smallest such value."""
    bucket = np.array([zlib.crc32(i.encode()) % 100 for i in prompt_ids])
    if len(bucket) and not np.any(bucket < HELD_OUT_PERCENT):
        return bucket == bucket.min()
    return bucket < HELD_OUT_PERCENT


class Data:
    """Sequences with their labels (the target's greedy token for the next position)."""

    def __init__(self, replies_paths, features_paths, target: Target, log):
        """`replies_paths[i]` and `features_paths[i]` (one path each, or lists of equal length) are
        a replies file and the features of its lines; the pairs are read in order."""
        replies_paths = [replies_paths] if isinstance(replies_paths, (str, Path)) else list(replies_paths)
        features_paths = [features_paths] if isinstance(features_paths, (str, Path)) else list(features_paths)
        if len(replies_paths) != len(features_paths):
            raise DrafterError(f"{len(replies_paths)} replies files but {len(features_paths)} features files: "
                               "pass one features file per replies file, in the same order")
        rows, seqs = [], []
        for replies_path, features_path in zip(replies_paths, features_paths):
            part = [json.loads(l) for l in Path(replies_path).read_text().splitlines() if l.strip()]
            d, vocab, part_seqs = read_features(features_path)
            if d != target.d or vocab != target.vocab_size:
                raise DrafterError(f"{features_path} has d = {d}, vocab = {vocab}; the target {target.path} has "
                                   f"{target.d}, {target.vocab_size}: compute the features with that model")
            if len(part) != len(part_seqs):
                raise DrafterError(f"{replies_path} has {len(part)} lines, {features_path} {len(part_seqs)} sequences: "
                                   "compute the features from that replies file")
            for r, s in zip(part, part_seqs):
                if r["tokens"] != s.tokens.tolist():
                    raise DrafterError(f"{features_path}: sequence {r.get('id')} differs from {replies_path}")
            rows += part
            seqs += part_seqs
        self.rows, self.seqs = rows, seqs
        self.labels = []      # per sequence: [n] target ids of the greedy token at row t + 1, -1 where unknown
        for r, s in zip(rows, seqs):
            n, p = len(s.tokens), s.prompt_tokens
            top1 = np.asarray(r.get("top1") or [], dtype=np.int64)
            lab = np.full(n, -1, dtype=np.int64)
            # lab[t] = greedy token at position t + 2 = top1[t + 2 - p]
            t = np.arange(n)
            j = t + 2 - p
            ok = (j >= 0) & (j < len(top1))
            lab[ok] = top1[j[ok]]
            self.labels.append(lab)
        self.split = held_out_split([r["id"] for r in rows])
        all_feats = np.concatenate([s.features[: 4096] for s in seqs]).astype(np.float32)
        self.scale = float(np.sqrt(np.mean(all_feats * all_feats)))
        reply_tokens = sum(len(s.tokens) - s.prompt_tokens for s in seqs)
        log(f"{len(seqs)} sequences ({int(self.split.sum())} held out), {sum(len(s.tokens) for s in seqs)} tokens, "
            f"{reply_tokens} reply tokens; feature RMS {self.scale:.3f}")

    def reply_counts(self, vocab_size: int) -> np.ndarray:
        """Frequency of each token among the training split's reply tokens."""
        counts = np.zeros(vocab_size, dtype=np.int64)
        for s, h in zip(self.seqs, self.split):
            if not h:
                np.add.at(counts, s.tokens[s.prompt_tokens:], 1)
        return counts


def chain_report(stats: np.ndarray, cats: np.ndarray) -> dict:
    """Chain acceptance from per-start outcomes `stats` [starts, depth] (1 hit, 0 miss, -1 not
    reached), overall and per category: at each depth the hit rate of the starts that reached it,
    and the expected accepted tokens of the chain (sum over k of the product of the rates to k)."""
    def summarize(mask):
        s = stats[mask]
        per_depth, chain, prod = [], 0.0, 1.0
        for k in range(s.shape[1]):
            reached = s[:, k] >= 0
            rate = float(np.mean(s[reached, k] == 1)) if reached.any() else 0.0
            per_depth.append(round(rate, 4))
            prod *= rate
            chain += prod
        return {"positions": int(mask.sum()), "acceptance_per_depth": per_depth, "expected_accepted_chain4": round(chain, 3)}

    return {"all": summarize(np.ones(len(stats), bool)),
            "categories": {c: summarize(cats == c) for c in sorted(set(cats.tolist()))}}


def draft_vocabulary(counts: np.ndarray, k: int) -> np.ndarray:
    """The K most frequent tokens (ties by id), most frequent first."""
    order = np.lexsort((np.arange(len(counts)), -counts))
    return order[:k].astype(np.int32)


class Examples:
    """Flattened training positions: for every kept row t of a sequence, where the unroll reads."""

    def __init__(self, data: Data, which: np.ndarray, vocab_map: np.ndarray, unroll: int, scale: float, min_offset: int):
        feats, tokens, labels, starts, seq_of = [], [], [], [], []
        base = 0
        for i, (s, lab) in enumerate(zip(data.seqs, data.labels)):
            if not which[i]:
                continue
            n = len(s.tokens)
            f = s.features.astype(np.float32) / np.float32(scale)
            feats.append(f)
            tokens.append(s.tokens[s.first:])
            mapped = np.where(lab >= 0, vocab_map[np.maximum(lab, 0)], -1)
            missing = (lab >= 0) & (mapped < 0)
            mapped[missing] = -2    # a known label outside the draft vocabulary: a certain miss
            labels.append(mapped[s.first:])
            lo = max(s.first, s.prompt_tokens + min_offset)
            ts = np.arange(lo, n - 1)
            ts = ts[lab[ts] >= 0]
            starts.append(base + ts - s.first)
            seq_of.append(np.full(len(ts), i))
            base += n - s.first
        self.feats = np.concatenate(feats)
        self.tokens = np.concatenate(tokens).astype(np.int64)
        self.labels = np.concatenate(labels)
        self.starts = np.concatenate(starts)
        self.seq_of = np.concatenate(seq_of)
        # Row r + k belongs to the same sequence as row r when r + k < end[r].
        end = np.zeros(len(self.tokens), dtype=np.int64)
        pos = 0
        for i, s in enumerate(data.seqs):
            if which[i]:
                m = len(s.tokens) - s.first
                end[pos:pos + m] = pos + m
                pos += m
        self.end = end
        self.unroll = unroll

    def gather(self, idx: np.ndarray, k: int):
        """Rows of step k (1-based) for starts `idx`: input token, label, target feature, valid mask."""
        r = self.starts[idx] + k
        valid = r < self.end[self.starts[idx]]
        rr = np.where(valid, r, self.starts[idx])
        label = np.where(valid, self.labels[rr - 1], -1)
        return self.tokens[rr], label, self.feats[rr], valid


class Trainer:
    def __init__(self, target: Target, data: Data, vocab: np.ndarray, m: int, seed: int, unroll: int,
                 noise: float, reg_weight: float, log):
        self.target, self.data, self.vocab, self.log = target, data, vocab, log
        self.rng = np.random.default_rng(seed)
        self.model = Drafter(target.d, m, self.rng, feature_scale=1.0)
        self.head = Head(target, vocab)
        self.vocab_map = np.full(target.vocab_size, -1, dtype=np.int64)
        self.vocab_map[vocab] = np.arange(len(vocab))
        self.unroll, self.noise, self.reg_weight = unroll, noise, reg_weight
        self.depth_weights = [1.0, 0.8, 0.6, 0.5, 0.4][:unroll]
        self.train = Examples(data, ~data.split, self.vocab_map, unroll, data.scale, min_offset=-2)
        self.test = Examples(data, data.split, self.vocab_map, unroll, data.scale, min_offset=-1)
        ids = np.unique(np.concatenate([self.train.tokens, self.test.tokens]))
        self.emb_index = np.full(target.vocab_size, -1, dtype=np.int64)
        self.emb_index[ids] = np.arange(len(ids))
        self.emb = target.embeddings(ids)
        log(f"{len(self.train.starts)} training positions, {len(self.test.starts)} held-out positions, "
            f"{len(ids)} distinct tokens embedded")

    def embed(self, tokens):
        return self.emb[self.emb_index[tokens]]

    def loss_and_grads(self, idx: np.ndarray, noise: bool = True):
        """Loss, gradients and per-depth top-1 hits of one batch of starts."""
        ex, eps = self.train, self.target.eps
        grads = {k: np.zeros_like(v) for k, v in self.model.p.items()}
        f = ex.feats[ex.starts[idx]]
        if noise and self.noise > 0:
            f = f + self.rng.uniform(-self.noise, self.noise, f.shape).astype(np.float32)
        caches, total, hits = [], 0.0, []
        for k in range(1, self.unroll + 1):
            tok, label, ftrue, valid = ex.gather(idx, k)
            out, c = self.model.step(self.embed(tok), f, eps)
            logits, hc = self.head.forward(out)
            ce_labels = np.where(valid & (label >= 0), label, -1)
            ce, dlogits, h, n = cross_entropy(logits, ce_labels)
            reg, dreg = smooth_l1(out * valid[:, None], ftrue * valid[:, None], 1.0)
            w = self.depth_weights[k - 1]
            total += w * (ce + self.reg_weight * reg)
            caches.append((c, hc, w * dlogits, w * self.reg_weight * dreg * valid[:, None]))
            hits.append((h, int(np.sum(valid & (label != -1)))))
            f = out
        dnext = None
        for c, hc, dlogits, dreg in reversed(caches):
            dout = self.head.backward(dlogits, hc) + dreg
            if dnext is not None:
                dout = dout + dnext
            dnext = self.model.step_backward(dout, c, eps, grads)
        return total, grads, hits

    def fit(self, steps: int, batch: int, lr: float, log_every: int = 50):
        p = self.model.p
        m = {k: np.zeros_like(v) for k, v in p.items()}
        v = {k: np.zeros_like(x) for k, x in p.items()}
        b1, b2, eps = 0.9, 0.999, 1e-8
        n = len(self.train.starts)
        order = self.rng.permutation(n)
        cursor = 0
        t0 = time.time()
        warm = max(1, steps // 20)
        for step in range(1, steps + 1):
            if cursor + batch > n:
                order = self.rng.permutation(n)
                cursor = 0
            idx = order[cursor:cursor + batch]
            cursor += batch
            loss, grads, hits = self.loss_and_grads(idx)
            norm = np.sqrt(sum(float(np.sum(g * g)) for g in grads.values()))
            clip = min(1.0, 1.0 / (norm + 1e-12))
            rate = lr * min(1.0, step / warm) * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * step / steps)))
            for k in p:
                g = grads[k] * clip
                m[k] = b1 * m[k] + (1 - b1) * g
                v[k] = b2 * v[k] + (1 - b2) * g * g
                p[k] -= rate * (m[k] / (1 - b1 ** step)) / (np.sqrt(v[k] / (1 - b2 ** step)) + eps)
            if step % log_every == 0 or step == steps:
                acc = " ".join(f"{h / max(c, 1):.2f}" for h, c in hits)
                self.log(f"step {step}/{steps} loss {loss:.3f} |g| {norm:.2f} lr {rate:.2e} top-1 per depth {acc} "
                         f"({time.time() - t0:.0f} s)")
        return time.time() - t0

    def evaluate(self, depth: int = 4, batch: int = 2048) -> dict:
        """Offline chain acceptance on the held-out greedy replies: at each depth, of the starts
        whose drafts were all right so far, the share whose top-1 is the target's greedy token."""
        ex, eps = self.test, self.target.eps
        greedy = np.array([self.data.rows[i]["mode"] == "greedy" for i in ex.seq_of])
        starts = np.nonzero(greedy)[0]
        cats = np.array([self.data.rows[i]["category"] for i in ex.seq_of[starts]])
        stats = np.zeros((len(starts), depth), dtype=np.int8)   # 1 hit, 0 miss, -1 not reached / no label
        for b in range(0, len(starts), batch):
            idx = starts[b:b + batch]
            f = ex.feats[ex.starts[idx]]
            alive = np.ones(len(idx), bool)
            for k in range(1, depth + 1):
                r = ex.starts[idx] + k
                valid = r < ex.end[ex.starts[idx]]
                rr = np.where(valid, r, ex.starts[idx])
                label = np.where(valid, ex.labels[rr - 1], -1)
                out, _ = self.model.step(self.embed(ex.tokens[rr]), f, eps)
                logits, _ = self.head.forward(out)
                hit = (np.argmax(logits, axis=1) == label)
                reached = alive & valid & (label != -1)
                stats[b:b + len(idx), k - 1] = np.where(reached, hit.astype(np.int8), -1)
                alive = reached & hit
                f = out

        return chain_report(stats, cats)

    def coverage(self, ks=(512, 1024, 2048, 4096, 8192, 16384, 32768)) -> dict:
        """Share of the held-out greedy labels inside the K most frequent training reply tokens."""
        counts = self.data.reply_counts(self.target.vocab_size)
        labels = np.concatenate([lab[lab >= 0] for lab, h in zip(self.data.labels, self.data.split) if h])
        out = {}
        for k in ks:
            if k > self.target.vocab_size:
                continue
            inside = np.zeros(self.target.vocab_size, bool)
            inside[draft_vocabulary(counts, k)] = True
            out[str(k)] = round(float(np.mean(inside[labels])), 4)
        return out

    def export_params(self) -> Drafter:
        """A copy whose feature output is on the target's scale (W_in, b_in, W_down times s)."""
        s = np.float32(self.data.scale)
        out = Drafter.__new__(Drafter)
        out.d, out.m = self.model.d, self.model.m
        out.p = {k: v.copy() for k, v in self.model.p.items()}
        for k in ("w_in", "b_in", "down"):
            out.p[k] *= s
        return out


def layer_bytes(target: Target, k: int, m: int, matrix_bytes: int = 2) -> int:
    """Bytes one draft layer reads: the drafter's matrices and K rows of the target's head."""
    d = target.d
    return (2 * d * d + 3 * d * m) * matrix_bytes + k * target.head_row_bytes


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, type=Path, help="the target GGUF")
    ap.add_argument("--replies", required=True, type=Path, nargs="+", help="replies files (cast-bench replies)")
    ap.add_argument("--features", required=True, type=Path, nargs="+", help="their features files, in the same order")
    ap.add_argument("--out", required=True, type=Path, help="the drafter GGUF to write")
    ap.add_argument("--report", type=Path, help="JSON report (default: OUT with .json)")
    ap.add_argument("--vocab", type=int, default=4096, help="draft vocabulary size K")
    ap.add_argument("--ffn", type=int, default=512, help="MLP width m")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--unroll", type=int, default=3)
    ap.add_argument("--noise", type=float, default=0.1, help="uniform noise on input features, in units of their RMS")
    ap.add_argument("--reg-weight", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--dtype", choices=("f16", "f32"), default="f16")
    ap.add_argument("--recipe", default="", help="the data recipe, recorded in the file's provenance")
    ap.add_argument("--command", default="", help="the command that reproduces the file, recorded in its provenance")
    ap.add_argument("--grad-check", action="store_true", help="run the finite-difference gradient check first and stop")
    args = ap.parse_args(argv)

    def log(msg):
        print(f"train: {msg}", file=sys.stderr, flush=True)

    try:
        t_start = time.time()
        target = Target.load(args.model)
        data = Data(args.replies, args.features, target, log)
        counts = data.reply_counts(target.vocab_size)
        k = min(args.vocab, target.vocab_size)
        vocab = draft_vocabulary(counts, k)
        trainer = Trainer(target, data, vocab, args.ffn, args.seed, args.unroll, args.noise, args.reg_weight, log)
        if args.grad_check:
            from gradcheck import check_trainer
            err = check_trainer(trainer)
            log(f"gradient check: max relative error {err:.2e}")
            return 0 if err < 1e-2 else 1
        coverage = trainer.coverage()
        log(f"draft vocabulary coverage of held-out greedy tokens by K: {coverage}")
        seconds = trainer.fit(args.steps, args.batch, args.lr)
        evaluation = trainer.evaluate()
        log(f"held-out acceptance per depth {evaluation['all']['acceptance_per_depth']}, "
            f"expected accepted of a chain of 4: {evaluation['all']['expected_accepted_chain4']}")
        for c, e in evaluation["categories"].items():
            log(f"  {c:10s} {e['acceptance_per_depth']} chain4 {e['expected_accepted_chain4']} ({e['positions']} positions)")
        lb = layer_bytes(target, k, args.ffn)
        training = {
            "command": args.command, "seed": args.seed, "data": args.recipe, "steps": args.steps, "batch": args.batch,
            "lr": args.lr, "unroll": args.unroll, "noise": args.noise, "reg_weight": args.reg_weight,
            "draft_vocab": k, "ffn": args.ffn, "feature_scale": data.scale,
            "held_out": f"crc32(prompt id) % 100 < {HELD_OUT_PERCENT}",
            "held_out_acceptance_per_depth": evaluation["all"]["acceptance_per_depth"],
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_gguf(args.out, trainer.export_params(), vocab, target, training, args.dtype)
        report = {
            "target": str(args.model), "target_sha256": target.sha256, "out": str(args.out),
            "file_bytes": args.out.stat().st_size, "training": training,
            "sequences": len(data.seqs), "tokens": int(sum(len(s.tokens) for s in data.seqs)),
            "reply_tokens": int(sum(len(s.tokens) - s.prompt_tokens for s in data.seqs)),
            "training_positions": int(len(trainer.train.starts)), "train_seconds": round(seconds, 1),
            "total_seconds": round(time.time() - t_start, 1), "coverage": coverage,
            "coverage_at_k": coverage.get(str(k)), "evaluation": evaluation,
            "layer_bytes": lb, "target_step_bytes": target.weight_bytes_per_step,
            "layer_share_of_step_bytes": round(lb / target.weight_bytes_per_step, 4),
        }
        report_path = args.report or args.out.with_suffix(".json")
        report_path.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
        log(f"wrote {args.out} ({report['file_bytes']} bytes); a draft layer reads {lb} bytes, "
            f"{100 * report['layer_share_of_step_bytes']:.1f}% of a target decode step")
        return 0
    except DrafterError as e:
        log(f"error: {e}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
