"""Finite-difference check of the drafter's hand-written backward (float64, central differences)."""
from __future__ import annotations

import numpy as np


def check_trainer(trainer, batch: int = 6, probes: int = 6, h: float = 1e-5) -> float:
    """Largest relative error between the analytic gradient and central differences over
    `probes` random entries of every parameter, on a batch of `batch` training starts with the
    full unroll (so the gradient through the fed-back features is checked too). The trainer's
    parameters and frozen tensors are cast to float64 for the check and restored after."""
    saved = {k: v for k, v in trainer.model.p.items()}
    saved_frozen = (trainer.head.rows, trainer.head.w_out, trainer.emb, trainer.train.feats)
    rng = np.random.default_rng(0)
    try:
        trainer.model.p = {k: v.astype(np.float64) for k, v in saved.items()}
        # Perturb the norms and the bias away from their initial values so every path is exercised.
        for k in ("enorm", "fnorm", "mnorm", "b_in"):
            trainer.model.p[k] = trainer.model.p[k] + rng.normal(0, 0.1, trainer.model.p[k].shape)
        trainer.head.rows = trainer.head.rows.astype(np.float64)
        trainer.head.w_out = trainer.head.w_out.astype(np.float64)
        trainer.emb = trainer.emb.astype(np.float64)
        trainer.train.feats = trainer.train.feats.astype(np.float64)
        idx = rng.choice(len(trainer.train.starts), size=min(batch, len(trainer.train.starts)), replace=False)
        _, grads, _ = trainer.loss_and_grads(idx, noise=False)
        worst = 0.0
        for name, param in trainer.model.p.items():
            flat = param.reshape(-1)
            g = grads[name].reshape(-1)
            for j in rng.choice(flat.size, size=min(probes, flat.size), replace=False):
                old = flat[j]
                flat[j] = old + h
                up, _, _ = trainer.loss_and_grads(idx, noise=False)
                flat[j] = old - h
                down, _, _ = trainer.loss_and_grads(idx, noise=False)
                flat[j] = old
                numeric = (up - down) / (2 * h)
                err = abs(numeric - g[j]) / max(1e-6, abs(numeric) + abs(g[j]))
                worst = max(worst, err)
        return worst
    finally:
        trainer.model.p = saved
        trainer.head.rows, trainer.head.w_out, trainer.emb, trainer.train.feats = saved_frozen
