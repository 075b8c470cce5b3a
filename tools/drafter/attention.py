#!/usr/bin/env python3
"""Measures what an attention layer adds to the learned drafter (PyTorch, CPU): trains the
feature-MLP drafter of drafter.py with and without an EAGLE-style attention block on the same data,
the same held-out split and the same offline chain acceptance as train.py, so the two can be
compared at equal data and training budget.

With attention, one drafter step at row r (feature f_r, token x_{r+1}) is
    z = W_in [rmsnorm(e(x)) w_enorm; rmsnorm(f) w_fnorm] + b_in
    a = rmsnorm(z) w_anorm ; z += W_o attn(W_q a, W_k a, W_v a)        (RoPE, causal)
    f' = z + W_down (silu(W_gate g) * W_up g),  g = rmsnorm(z) w_mnorm
The attention reads the drafter's own keys and values of every earlier row of the sequence,
computed from the target's true features (the drafter's KV cache at run time), and, for a drafted
row k steps past the root, the rows drafted before it on its path (EAGLE-3's training-time test:
step k at start r attends to step-1 rows 0..r and to its own steps 2..k). Without attention the
step is exactly drafter.py's feature-mlp.

This is a measuring tool: it writes a JSON report, not a drafter file. It needs PyTorch, pinned:
    pip install torch==2.15.0 --index-url https://download.pytorch.org/whl/cpu --extra-index-url https://pypi.org/simple
(a training tool only; the server never loads it). The comparison in drafters/README.md ran
    python3 tools/drafter/attention.py --model models/SmolLM2-135M-Instruct.Q4_1.gguf \
      --replies W/first.replies.jsonl W/chunk0{0..6}.replies.jsonl --features (the same, .features.bin) \
      --report attn.json --attention --steps 1000          (W: .build-drafter/SmolLM2-135M-Instruct.Q4_1)
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import drafter as drafter_module  # noqa: E402
import train as train_module  # noqa: E402


def load_data(model: Path, replies, features, log):
    target = drafter_module.Target.load(model)
    # Keep every feature row: the attention reads the prompt's rows too.
    original = train_module.read_features
    train_module.read_features = lambda p: drafter_module.read_features(p, keep_from_prompt=1 << 30)
    try:
        data = train_module.Data(replies, features, target, log)
    finally:
        train_module.read_features = original
    return target, data


def build(args, target, data, log):
    import torch
    import torch.nn.functional as F

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    counts = data.reply_counts(target.vocab_size)
    vocab = train_module.draft_vocabulary(counts, min(args.vocab, target.vocab_size))
    vocab_map = np.full(target.vocab_size, -1, dtype=np.int64)
    vocab_map[vocab] = np.arange(len(vocab))
    head_rows = torch.from_numpy(target.head_rows(vocab))                       # [K, d]
    w_out = torch.from_numpy(target.output_norm.copy())
    eps, softcap, d = target.eps, target.softcap, target.d
    ids = np.unique(np.concatenate([s.tokens for s in data.seqs]))
    emb_index = np.full(target.vocab_size, -1, dtype=np.int64)
    emb_index[ids] = np.arange(len(ids))
    emb = torch.from_numpy(target.embeddings(ids))
    scale = np.float32(data.scale)

    seqs = []
    for i, (s, lab) in enumerate(zip(data.seqs, data.labels)):
        mapped = np.where(lab >= 0, vocab_map[np.maximum(lab, 0)], -1)
        mapped[(lab >= 0) & (mapped < 0)] = -2
        seqs.append({"feats": torch.from_numpy(s.features.astype(np.float32) / scale),
                     "tokens": torch.from_numpy(emb_index[s.tokens]), "labels": torch.from_numpy(mapped),
                     "prompt": s.prompt_tokens, "n": len(s.tokens), "held": bool(data.split[i]),
                     "greedy": data.rows[i]["mode"] == "greedy", "category": data.rows[i]["category"]})

    H, hd, m = args.heads, args.head_dim, args.ffn

    def rms(x):
        return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + eps)

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            w_in = torch.randn(d, 2 * d) / np.sqrt(2 * d)
            w_in[:, d:] *= 0.1
            w_in[:, d:] += torch.eye(d)
            P = torch.nn.Parameter
            self.enorm, self.fnorm, self.mnorm = P(torch.ones(d)), P(torch.ones(d)), P(torch.ones(d))
            self.w_in, self.b_in = P(w_in), P(torch.zeros(d))
            self.gate = P(torch.randn(m, d) / np.sqrt(d))
            self.up = P(torch.randn(m, d) / np.sqrt(d))
            self.down = P(torch.randn(d, m) * 0.1 / np.sqrt(m))
            if args.attention:
                self.anorm = P(torch.ones(d))
                self.wq = P(torch.randn(H * hd, d) / np.sqrt(d))
                self.wk = P(torch.randn(H * hd, d) / np.sqrt(d))
                self.wv = P(torch.randn(H * hd, d) / np.sqrt(d))
                self.wo = P(torch.randn(d, H * hd) * 0.1 / np.sqrt(H * hd))
            inv = 1.0 / (args.rope_base ** (torch.arange(0, hd, 2).float() / hd))
            self.register_buffer("inv_freq", inv)

        def inp(self, tok, f):
            return torch.cat([rms(emb[tok]) * self.enorm, rms(f) * self.fnorm], -1) @ self.w_in.T + self.b_in

        def rope(self, x, pos):
            # x [..., n, H, hd], pos [..., n]
            ang = pos[..., None].float() * self.inv_freq                   # [..., n, hd/2]
            cos, sin = ang.cos()[..., None, :], ang.sin()[..., None, :]
            x1, x2 = x[..., : hd // 2], x[..., hd // 2:]
            return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], -1)

        def qkv(self, z, pos):
            a = rms(z) * self.anorm
            sh = z.shape[:-1] + (H, hd)
            q = self.rope((a @ self.wq.T).view(sh), pos)
            k = self.rope((a @ self.wk.T).view(sh), pos)
            return q, k, (a @ self.wv.T).view(sh)

        def mlp(self, z):
            g = rms(z) * self.mnorm
            return z + (F.silu(g @ self.gate.T) * (g @ self.up.T)) @ self.down.T

        def logits(self, f):
            raw = (rms(f) * w_out) @ head_rows.T
            return softcap * torch.tanh(raw / softcap) if softcap else raw

    model = Model()
    return model, seqs, vocab, rms, F


def run_steps(model, batch, unroll, noise, attention, rms, F, head_dim):
    """The drafter unrolled `unroll` steps from every start of a padded batch. Returns per step
    (logits [B, R, K], labels [B, R], predicted feature, true next feature, valid [B, R])."""
    import torch
    feats, toks, labels, lo, n = batch["feats"], batch["tokens"], batch["labels"], batch["lo"], batch["n"]
    B, N, d = feats.shape
    R = int((n - 1 - lo).clamp(min=0).max())
    ar = torch.arange(R)
    starts = lo[:, None] + ar[None, :]                                   # [B, R]
    start_ok = starts < (n - 1)[:, None]
    starts = torch.where(start_ok, starts, torch.zeros_like(starts))
    bi = torch.arange(B)[:, None]
    f_in = feats
    if noise > 0 and model.training:
        f_in = feats + (torch.rand_like(feats) * 2 - 1) * noise
    outs = []
    if attention:
        rows = torch.arange(N - 1)
        z_all = model.inp(toks[:, 1:], f_in[:, :-1])                     # rows 0..N-2: (f_r, x_{r+1})
        q_all, k_all, v_all = model.qkv(z_all, rows.expand(B, -1))
        keys = k_all.transpose(1, 2)                                     # [B, H, N-1, hd]
        values = v_all.transpose(1, 2)
        scale = 1.0 / np.sqrt(head_dim)
        causal = rows[None, None, :] <= starts[:, :, None]               # [B, R, N-1]
        extra_k, extra_v = [], []
    f = f_in[bi, starts]
    for k in range(1, unroll + 1):
        r = starts + (k - 1)                                             # this step's row
        ok = start_ok & (r < (n - 1)[:, None])
        rr = torch.where(ok, r, starts)
        tok = toks[bi, rr + 1]
        if attention:
            if k == 1:
                z = z_all[bi, starts]
                q = q_all[bi, starts]
            else:
                z = model.inp(tok, f)
                q, kk, vv = model.qkv(z, rr)
                extra_k.append(kk)
                extra_v.append(vv)
            qh = q.transpose(1, 2)                                       # [B, H, R, hd]
            s_main = (qh @ keys.transpose(-1, -2)) * scale               # [B, H, R, N-1]
            s_main = s_main.masked_fill(~causal[:, None], float("-inf"))
            parts = [s_main]
            for ek in extra_k:
                parts.append(((qh * ek.transpose(1, 2)).sum(-1) * scale)[..., None])
            s = torch.cat(parts, -1).softmax(-1)
            o = s[..., : N - 1] @ values
            for j, ev in enumerate(extra_v):
                o = o + s[..., N - 1 + j, None] * ev.transpose(1, 2)
            z = z + o.transpose(1, 2).reshape(B, R, -1) @ model.wo.T
        else:
            z = model.inp(tok, f)
        out = model.mlp(z)
        lab = torch.where(ok, labels[bi, rr], torch.full_like(rr, -1))
        nxt = feats[bi, torch.clamp(rr + 1, max=N - 1)]
        outs.append((model.logits(out), lab, out, nxt, ok))
        f = out
    return outs


def make_batch(seqs, which, min_offset):
    import torch
    B = len(which)
    N = max(seqs[i]["n"] for i in which)
    d = seqs[which[0]]["feats"].shape[1]
    feats = torch.zeros(B, N, d)
    toks = torch.zeros(B, N, dtype=torch.long)
    labels = torch.full((B, N), -1, dtype=torch.long)
    lo = torch.zeros(B, dtype=torch.long)
    n = torch.zeros(B, dtype=torch.long)
    for b, i in enumerate(which):
        s = seqs[i]
        feats[b, : s["n"]] = s["feats"]
        toks[b, : s["n"]] = s["tokens"]
        labels[b, : s["n"]] = s["labels"]
        lo[b] = max(0, s["prompt"] + min_offset)
        n[b] = s["n"]
    return {"feats": feats, "tokens": toks, "labels": labels, "lo": lo, "n": n}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, type=Path)
    ap.add_argument("--replies", required=True, type=Path, nargs="+")
    ap.add_argument("--features", required=True, type=Path, nargs="+")
    ap.add_argument("--report", required=True, type=Path)
    ap.add_argument("--attention", action="store_true", help="add the attention block")
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--rope-base", type=float, default=10000.0)
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--ffn", type=int, default=256)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--sequences", type=int, default=8, help="sequences per batch")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--unroll", type=int, default=3)
    ap.add_argument("--noise", type=float, default=0.1)
    ap.add_argument("--reg-weight", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    try:
        import torch
    except ImportError:
        print("attention: PyTorch is not installed; pip install torch==2.15.0 --index-url "
              "https://download.pytorch.org/whl/cpu --extra-index-url https://pypi.org/simple", file=sys.stderr)
        return 2

    def log(msg):
        print(f"attention: {msg}", file=sys.stderr, flush=True)

    target, data = load_data(args.model, args.replies, args.features, log)
    model, seqs, vocab, rms, F = build(args, target, data, log)
    train_ids = [i for i, s in enumerate(seqs) if not s["held"] and s["n"] - s["prompt"] > 0]
    test_ids = [i for i, s in enumerate(seqs) if s["held"] and s["greedy"]]
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    weights = [1.0, 0.8, 0.6, 0.5, 0.4][: args.unroll]
    rng = np.random.default_rng(args.seed)
    warm = max(1, args.steps // 20)
    t0 = time.time()
    positions = 0
    order, cursor = rng.permutation(train_ids), 0
    model.train()
    for step in range(1, args.steps + 1):
        if cursor + args.sequences > len(order):
            order, cursor = rng.permutation(train_ids), 0
        which = order[cursor: cursor + args.sequences].tolist()
        cursor += args.sequences
        batch = make_batch(seqs, which, -2)
        rate = args.lr * min(1.0, step / warm) * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * step / args.steps)))
        for g in opt.param_groups:
            g["lr"] = rate
        outs = run_steps(model, batch, args.unroll, args.noise, args.attention, rms, F, args.head_dim)
        loss = 0.0
        hits = []
        for w, (logits, lab, out, nxt, ok) in zip(weights, outs):
            keep = lab >= 0
            ce_lab = torch.where(keep, lab, torch.zeros_like(lab))
            ce = (F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ce_lab.reshape(-1), reduction="none")
                  * keep.reshape(-1)).sum() / keep.sum().clamp(min=1)
            diff = (out - nxt) * ok[..., None]
            reg = F.smooth_l1_loss(diff, torch.zeros_like(diff), reduction="sum") / diff.numel()
            loss = loss + w * (ce + args.reg_weight * reg)
            known = lab != -1
            hits.append(float(((logits.argmax(-1) == lab) & known).sum()) / max(1, int(known.sum())))
        positions += int((outs[0][1] != -1).sum())
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 25 == 0 or step == args.steps:
            log(f"step {step}/{args.steps} loss {float(loss.detach()):.3f} top-1 per depth "
                f"{' '.join(f'{h:.2f}' for h in hits)} ({positions} positions, {time.time() - t0:.0f} s)")
    seconds = time.time() - t0

    # Held-out chain acceptance, as train.py's evaluate: at depth k, of the starts whose drafts
    # 1..k-1 were the target's greedy tokens, the share whose top-1 is too.
    model.eval()
    depth = 4
    stats, cats = [], []
    with torch.no_grad():
        for b in range(0, len(test_ids), 8):
            which = test_ids[b: b + 8]
            batch = make_batch(seqs, which, -1)
            outs = run_steps(model, batch, depth, 0.0, args.attention, rms, F, args.head_dim)
            alive = None
            st = []
            for logits, lab, _, _, ok in outs:
                reached = ok & (lab != -1) & (alive if alive is not None else True)
                hit = logits.argmax(-1) == lab
                st.append(torch.where(reached, hit.to(torch.int8), torch.full_like(lab, -1, dtype=torch.int8)))
                alive = reached & hit
            st = torch.stack(st, -1)                                     # [B, R, depth]
            first_ok = outs[0][4] & (outs[0][1] != -1)
            for j, i in enumerate(which):
                rows = st[j][first_ok[j]]
                stats.append(rows.numpy())
                cats += [seqs[i]["category"]] * len(rows)
    evaluation = train_module.chain_report(np.concatenate(stats), np.array(cats))
    result = {"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                       if k not in ("replies", "features")},
              "parameters": int(sum(p.numel() for p in model.parameters())),
              "train_seconds": round(seconds, 1), "training_positions_seen": positions,
              **evaluation}
    args.report.write_text(json.dumps(result, indent=2) + "\n")
    log(f"held-out acceptance per depth {result['all']['acceptance_per_depth']}, chain4 {result['all']['expected_accepted_chain4']}")
    for c, e in result["categories"].items():
        log(f"  {c:10s} {e['acceptance_per_depth']} chain4 {e['expected_accepted_chain4']} ({e['positions']} positions)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
