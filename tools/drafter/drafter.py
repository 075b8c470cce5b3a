"""The learned drafter ("feature-mlp", the format in drafters/README.md) in numpy: the target's
frozen parts read from its GGUF, the features file of `cast-bench features`, the drafter's forward
and hand-written backward, and the drafter GGUF writer and checker.

One drafter step maps (f, x) (the feature at position t, the token at t + 1) to the predicted
feature at t + 1 and logits over the draft vocabulary for the token at t + 2:
    u = rmsnorm(e(x)) * w_enorm ; v = rmsnorm(f) * w_fnorm
    z = W_in [u; v] + b_in ; g = rmsnorm(z) * w_mnorm
    f' = z + W_down (silu(W_gate g) * (W_up g))
    logits = H_sub (rmsnorm(f') * w_out)            (H_sub, w_out: the target's, frozen)
"""
from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PARAMS = ("enorm", "fnorm", "w_in", "b_in", "mnorm", "gate", "up", "down")


class DrafterError(Exception):
    """A target, features or drafter file that cannot be used; the message names the fix."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _field(reader, key, default=None):
    f = reader.fields.get(key)
    if f is None:
        return default
    value = f.parts[f.data[0]]
    if value.dtype == np.uint8:
        return bytes(value).decode("utf-8")
    return value.tolist()[0]


@dataclass
class Target:
    """What the drafter borrows from its target GGUF (frozen)."""
    path: Path
    sha256: str
    architecture: str
    d: int
    vocab_size: int
    eps: float
    embedding_scale: float
    softcap: float | None
    output_norm: np.ndarray          # [d]
    weight_bytes_per_step: int       # bytes of every matrix a decode step reads
    head_row_bytes: int              # bytes of one output-head row
    _embd: object = None             # the quantized token_embd tensor (rows dequantized on demand)
    _head: object = None             # output.weight's tensor, or token_embd's when tied

    @staticmethod
    def load(path: Path) -> "Target":
        import gguf
        path = Path(path)
        if not path.exists():
            raise DrafterError(f"target model {path} does not exist; run `make model` (or `make gemma3-model`)")
        reader = gguf.GGUFReader(str(path))
        arch = _field(reader, "general.architecture")
        tensors = {t.name: t for t in reader.tensors}
        embd = tensors.get("token_embd.weight")
        if embd is None or "output_norm.weight" not in tensors:
            raise DrafterError(f"{path} has no token_embd.weight or output_norm.weight: not a supported target")
        d = int(_field(reader, f"{arch}.embedding_length"))
        vocab = _field(reader, f"{arch}.vocab_size")
        if vocab is None:
            vocab = len(reader.fields["tokenizer.ggml.tokens"].data)
        head = tensors.get("output.weight", embd)
        weight_bytes = sum(int(t.n_bytes) for n, t in tensors.items()
                           if len(t.shape) == 2 and n != "token_embd.weight") + (int(embd.n_bytes) if head is embd else 0)
        return Target(path=path, sha256=sha256_file(path), architecture=arch, d=d, vocab_size=int(vocab),
                      eps=float(_field(reader, f"{arch}.attention.layer_norm_rms_epsilon")),
                      embedding_scale=float(np.float32(d) ** np.float32(0.5)) if arch.startswith("gemma") else 1.0,
                      softcap=_field(reader, f"{arch}.final_logit_softcapping"),
                      output_norm=np.array(tensors["output_norm.weight"].data, dtype=np.float32).reshape(d),
                      weight_bytes_per_step=weight_bytes, head_row_bytes=int(head.n_bytes) // int(vocab),
                      _embd=embd, _head=head)

    @staticmethod
    def _rows(tensor, ids: np.ndarray, d: int) -> np.ndarray:
        from gguf.quants import dequantize
        ids = np.asarray(ids, dtype=np.int64)
        raw = np.asarray(tensor.data)
        return dequantize(raw[ids], tensor.tensor_type).reshape(len(ids), d).astype(np.float32)

    def embeddings(self, ids) -> np.ndarray:
        """e(x) for each id, as the target's forward computes its input ([n, d])."""
        return self._rows(self._embd, ids, self.d) * np.float32(self.embedding_scale)

    def head_rows(self, ids) -> np.ndarray:
        """The output head's rows of `ids` ([n, d])."""
        return self._rows(self._head, ids, self.d)


@dataclass
class Sequence:
    tokens: np.ndarray       # [n] int32
    prompt_tokens: int
    features: np.ndarray     # [n - first, d] float16: rows first..n-1
    first: int               # index of the first kept feature row


def read_features(path: Path, keep_from_prompt: int = 2):
    """Reads a `cast-bench features` file. Keeps the feature rows from prompt_tokens -
    `keep_from_prompt` on (the rows a drafter trains on); returns (d, vocab, [Sequence])."""
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(16)
        if len(head) < 16 or head[:4] != b"CSFT":
            raise DrafterError(f"{path} is not a features file (no CSFT header); write it with `cast-bench features`")
        version, d, vocab = struct.unpack("<III", head[4:])
        if version != 1:
            raise DrafterError(f"{path}: features version {version}, this tool reads 1; rebuild cast-bench and rerun it")
        sequences = []
        while True:
            h = f.read(8)
            if not h:
                break
            if len(h) < 8:
                raise DrafterError(f"{path} is truncated; rerun `cast-bench features`")
            n, p = struct.unpack("<II", h)
            tokens = np.frombuffer(f.read(4 * n), dtype="<i4").astype(np.int32)
            first = max(0, p - keep_from_prompt)
            f.seek(2 * d * first, 1)
            feats = np.frombuffer(f.read(2 * d * (n - first)), dtype="<f2").reshape(n - first, d)
            if len(tokens) != n or feats.shape[0] != n - first:
                raise DrafterError(f"{path} is truncated; rerun `cast-bench features`")
            sequences.append(Sequence(tokens=tokens, prompt_tokens=p, features=feats, first=first))
    return d, vocab, sequences


# MARK: - The model


def rmsnorm_fwd(x, eps):
    inv = 1.0 / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)
    return x * inv, inv


def rmsnorm_bwd(dy, x, inv):
    """d/dx of y = x * inv(x) given dy (no weight)."""
    d = x.shape[-1]
    return inv * (dy - x * (inv * inv) * np.sum(dy * x, axis=-1, keepdims=True) / d)


def silu(x):
    return x / (1.0 + np.exp(-x))


class Drafter:
    """Parameters (float32) and one step's forward and backward."""

    def __init__(self, d: int, m: int, rng: np.random.Generator, feature_scale: float):
        self.d, self.m = d, m
        s_in = 1.0 / np.sqrt(2 * d)
        w_in = rng.normal(0, s_in, (d, 2 * d)).astype(np.float32)
        # Start as "the next feature is this one": the feature half passes rmsnorm(f) * scale.
        w_in[:, d:] *= 0.1
        w_in[:, d:] += np.eye(d, dtype=np.float32) * np.float32(feature_scale)
        self.p = {
            "enorm": np.ones(d, np.float32), "fnorm": np.ones(d, np.float32),
            "w_in": w_in, "b_in": np.zeros(d, np.float32), "mnorm": np.ones(d, np.float32),
            "gate": rng.normal(0, 1 / np.sqrt(d), (m, d)).astype(np.float32),
            "up": rng.normal(0, 1 / np.sqrt(d), (m, d)).astype(np.float32),
            "down": rng.normal(0, 0.1 / np.sqrt(m), (d, m)).astype(np.float32),
        }

    def step(self, e, f, eps):
        """Forward of one step: e(x) [n, d], f [n, d] -> (f' [n, d], cache for backward)."""
        p = self.p
        ue_n, ue_inv = rmsnorm_fwd(e, eps)
        vf_n, vf_inv = rmsnorm_fwd(f, eps)
        c = np.concatenate([ue_n * p["enorm"], vf_n * p["fnorm"]], axis=1)
        z = c @ p["w_in"].T + p["b_in"]
        zn, z_inv = rmsnorm_fwd(z, eps)
        g = zn * p["mnorm"]
        h1 = g @ p["gate"].T
        h2 = g @ p["up"].T
        sig = 1.0 / (1.0 + np.exp(-h1))
        a = h1 * sig
        s = a * h2
        out = z + s @ p["down"].T
        return out, (e, f, ue_n, ue_inv, vf_n, vf_inv, c, z, zn, z_inv, g, h1, h2, sig, a, s)

    def step_backward(self, dout, cache, eps, grads):
        """Accumulates parameter gradients into `grads`; returns d loss / d f (the input feature)."""
        p = self.p
        e, f, ue_n, ue_inv, vf_n, vf_inv, c, z, zn, z_inv, g, h1, h2, sig, a, s = cache
        d = self.d
        grads["down"] += dout.T @ s
        ds = dout @ p["down"]
        da = ds * h2
        dh2 = ds * a
        dh1 = da * (sig * (1.0 + h1 * (1.0 - sig)))
        grads["gate"] += dh1.T @ g
        grads["up"] += dh2.T @ g
        dg = dh1 @ p["gate"] + dh2 @ p["up"]
        grads["mnorm"] += np.sum(dg * zn, axis=0)
        dz = dout + rmsnorm_bwd(dg * p["mnorm"], z, z_inv)
        grads["w_in"] += dz.T @ c
        grads["b_in"] += np.sum(dz, axis=0)
        dc = dz @ p["w_in"]
        grads["enorm"] += np.sum(dc[:, :d] * ue_n, axis=0)
        grads["fnorm"] += np.sum(dc[:, d:] * vf_n, axis=0)
        return rmsnorm_bwd(dc[:, d:] * p["fnorm"], f, vf_inv)


class Head:
    """The target's output norm and its head restricted to the draft vocabulary (frozen)."""

    def __init__(self, target: Target, vocab_ids: np.ndarray):
        self.w_out = target.output_norm
        self.rows = target.head_rows(vocab_ids)        # [K, d]
        self.eps = target.eps
        self.softcap = target.softcap

    def forward(self, feat):
        n, inv = rmsnorm_fwd(feat, self.eps)
        o = n * self.w_out
        raw = o @ self.rows.T
        logits = self.softcap * np.tanh(raw / self.softcap) if self.softcap else raw
        return logits, (feat, inv, raw)

    def backward(self, dlogits, cache):
        feat, inv, raw = cache
        if self.softcap:
            t = np.tanh(raw / self.softcap)
            dlogits = dlogits * (1.0 - t * t)
        do = dlogits @ self.rows
        return rmsnorm_bwd(do * self.w_out, feat, inv)


def cross_entropy(logits, labels):
    """Mean CE over rows with label >= 0; returns (loss, dlogits, top-1 hits, counted rows)."""
    valid = labels >= 0
    z = logits - logits.max(axis=1, keepdims=True)
    ez = np.exp(z)
    probs = ez / ez.sum(axis=1, keepdims=True)
    count = max(int(valid.sum()), 1)
    idx = np.where(valid, labels, 0)
    picked = probs[np.arange(len(labels)), idx]
    loss = -np.sum(np.log(picked + 1e-30) * valid) / count
    dlogits = probs
    dlogits[np.arange(len(labels)), idx] -= 1.0
    dlogits *= (valid[:, None] / count)
    hits = int(np.sum((np.argmax(logits, axis=1) == labels) & valid))
    return loss, dlogits, hits, int(valid.sum())


def smooth_l1(pred, target, scale):
    """Mean smooth L1 of (pred - target) / scale over all elements; returns (loss, dpred)."""
    x = (pred - target) / scale
    ax = np.abs(x)
    loss = np.where(ax < 1.0, 0.5 * x * x, ax - 0.5)
    grad = np.where(ax < 1.0, x, np.sign(x)) / (scale * x.size)
    return float(loss.mean()), grad


# MARK: - The drafter file


def write_gguf(path: Path, drafter: Drafter, vocab_ids: np.ndarray, target: Target, training: dict, dtype: str = "f16"):
    """Writes the drafter GGUF of the contract (matrices in F16 or F32, norms and bias F32)."""
    import gguf
    w = gguf.GGUFWriter(str(path), "cast-drafter")
    w.add_string("cast-drafter.kind", "feature-mlp")
    w.add_uint32("cast-drafter.embedding_length", drafter.d)
    w.add_uint32("cast-drafter.feed_forward_length", drafter.m)
    w.add_string("cast-drafter.target.architecture", target.architecture)
    w.add_uint32("cast-drafter.target.vocab_size", target.vocab_size)
    w.add_uint32("cast-drafter.target.embedding_length", target.d)
    w.add_string("cast-drafter.target.sha256", target.sha256)
    w.add_string("cast-drafter.training", json.dumps(training, sort_keys=True, separators=(",", ":")))
    mat = np.float16 if dtype == "f16" else np.float32
    p = drafter.p
    w.add_tensor("draft.vocab", np.asarray(vocab_ids, dtype=np.int32))
    w.add_tensor("draft.enorm.weight", p["enorm"].astype(np.float32))
    w.add_tensor("draft.fnorm.weight", p["fnorm"].astype(np.float32))
    w.add_tensor("draft.in.weight", p["w_in"].astype(mat))
    w.add_tensor("draft.in.bias", p["b_in"].astype(np.float32))
    w.add_tensor("draft.mnorm.weight", p["mnorm"].astype(np.float32))
    w.add_tensor("draft.gate.weight", p["gate"].astype(mat))
    w.add_tensor("draft.up.weight", p["up"].astype(mat))
    w.add_tensor("draft.down.weight", p["down"].astype(mat))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


REQUIRED_KEYS = ("general.architecture", "cast-drafter.kind", "cast-drafter.embedding_length",
                 "cast-drafter.feed_forward_length", "cast-drafter.target.architecture",
                 "cast-drafter.target.vocab_size", "cast-drafter.target.embedding_length",
                 "cast-drafter.target.sha256", "cast-drafter.training")


def check_gguf(path: Path) -> dict:
    """Checks a drafter file against the contract; returns its metadata and tensor shapes.
    Raises DrafterError naming the first problem."""
    import gguf
    r = gguf.GGUFReader(str(path))
    meta = {}
    for k in REQUIRED_KEYS:
        v = _field(r, k)
        if v is None:
            raise DrafterError(f"{path}: metadata key {k} is missing")
        meta[k] = v
    if meta["general.architecture"] != "cast-drafter" or meta["cast-drafter.kind"] != "feature-mlp":
        raise DrafterError(f"{path}: not a feature-mlp cast-drafter")
    json.loads(meta["cast-drafter.training"])
    d, m = meta["cast-drafter.embedding_length"], meta["cast-drafter.feed_forward_length"]
    t = {x.name: x for x in r.tensors}
    k = int(t["draft.vocab"].shape[0]) if "draft.vocab" in t else 0
    want = {"draft.vocab": [k], "draft.enorm.weight": [d], "draft.fnorm.weight": [d], "draft.in.weight": [2 * d, d],
            "draft.in.bias": [d], "draft.mnorm.weight": [d], "draft.gate.weight": [d, m], "draft.up.weight": [d, m],
            "draft.down.weight": [m, d]}
    for name, shape in want.items():
        if name not in t:
            raise DrafterError(f"{path}: tensor {name} is missing")
        if [int(s) for s in t[name].shape] != shape:
            raise DrafterError(f"{path}: tensor {name} has shape {list(t[name].shape)} (ne0 first), expected {shape}")
    vocab = np.asarray(t["draft.vocab"].data)
    if k < 1 or vocab.min() < 0 or vocab.max() >= meta["cast-drafter.target.vocab_size"] or len(set(vocab.tolist())) != k:
        raise DrafterError(f"{path}: draft.vocab must hold {k} distinct ids below the target's vocabulary size")
    meta["draft_vocab_size"] = k
    meta["types"] = {name: t[name].tensor_type.name for name in want}
    return meta


def read_gguf(path: Path) -> tuple[Drafter, np.ndarray]:
    """A drafter file's parameters (float32, the target's feature scale) and draft vocabulary."""
    import gguf
    r = gguf.GGUFReader(str(path))
    t = {x.name: np.asarray(x.data) for x in r.tensors}
    names = {"enorm": "draft.enorm.weight", "fnorm": "draft.fnorm.weight", "w_in": "draft.in.weight",
             "b_in": "draft.in.bias", "mnorm": "draft.mnorm.weight", "gate": "draft.gate.weight",
             "up": "draft.up.weight", "down": "draft.down.weight"}
    out = Drafter.__new__(Drafter)
    out.p = {k: t[v].astype(np.float32) for k, v in names.items()}
    out.d, out.m = out.p["w_in"].shape[0], out.p["gate"].shape[0]
    return out, t["draft.vocab"].astype(np.int32)
