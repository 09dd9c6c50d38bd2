"""Exact small-problem Taylor tools (float64) for checking pruning criteria (chapter 1).

Exact, hence for small networks (a few thousand parameters) and data (a few hundred samples).
:func:`taylor_quantities` returns a :class:`TaylorQuantities` of flat float64 vectors over the prunable
weights (concatenated in ``names`` order): ``theta``; ``grad``, the full-batch mean gradient ĝ of the
mean cross-entropy L; ``fisher``, F̂ = mean_n g_n² (true labels, per-sample gradients); ``true_fisher``,
mean_n Σ_c p_c(x_n) (∂ℓ(x_n, c)/∂θ)² (labels from the model; the Gauss-Newton diagonal); ``hessian``,
the exact H_ii (one Hessian-vector product per weight); ``hutchinson``, a Rademacher estimate of it;
``delta_loss``, the actual change L(θ − θ_i e_i) − L(θ). :func:`scores_from_quantities` turns them into
SNIP, OBD, OBD-Fisher, FTS (both signs), FBSS and Hutchinson-Taylor scores with
:mod:`fts_core.scoring.formulas`, under the authors' conventions (removal model
ΔL_i ≈ −θ_i g_i + ½ θ_i² H_ii; the code's FTS has a ``+``). Derivations:
``notebooks/01_fisher_derivation.ipynb``.
"""
from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import stats
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn
from torch.func import functional_call, grad, jacrev, jvp, vmap

from fts_core.masks.select import num_kept, top_k_mask
from fts_core.scoring import curvature
from fts_core.scoring import formulas as Fm
from fts_core.setup.models import MLP, build_model
from fts_core.setup.seeding import seed_torch

__all__ = [
    "VARIANTS",
    "TaylorQuantities",
    "load_digits_arrays",
    "make_mlp",
    "train_full_batch",
    "mean_loss",
    "weight_names",
    "flatten",
    "unflatten",
    "fisher_and_gradient",
    "hessian_diag",
    "removal_loss_change",
    "taylor_quantities",
    "closed_form_mlp1",
    "scores_from_quantities",
    "signed_predictions",
    "spearman",
    "topk_overlap",
    "spearman_table",
    "trajectory",
]

#: the chapter's saliency variants, computed from exact quantities by :func:`scores_from_quantities`
#: -> their formula. Not a registry: the names shared with ``fts_core.CRITERIA`` are computed by the
#: same functions of ``fts_core.scoring.formulas`` as those criteria; the others (OBD with the exact
#: Hessian, the removal sign) exist only in this chapter.
VARIANTS: dict[str, str] = {
    "snip": "|θ ĝ| (first order)",
    "fisher_pruning": "½ θ² F̂ (OBD with the empirical Fisher)",
    "obd": "½ θ² H (OBD with the exact Hessian diagonal)",
    "fts": "|θ ĝ + ½ θ² F̂| (authors' code sign)",
    "fts_removal": "|−θ ĝ + ½ θ² F̂| (sign of an actual removal)",
    "fbss": "½ F̂ (θ − ĝ/F̂)² (diagonal OBS with gradient)",
    "hts": "|θ ĝ + ½ θ² Ĥ| (Hutchinson-Taylor, code sign)",
    "taylor2_exact": "|−θ ĝ + ½ θ² H| (exact diagonal second order)",
    "magnitude": "|θ|",
}


# --------------------------------------------------------------------------------------
# data and model
# --------------------------------------------------------------------------------------
def load_digits_arrays(
    n_train: int = 512, n_test: int = 512, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The scikit-learn 8x8 digits as float64 tensors, at their native resolution.

    Returns ``x_train (n_train, 64), y_train (n_train,), x_test (n_test, 64), y_test``.
    Pixels (0..16) are scaled to [0, 1] and standardised with the training mean/std of all
    pixels. The split is stratified and fixed by ``seed``.
    """
    if n_train < 10 or n_test < 10 or n_train + n_test > 1797:
        raise ValueError(f"need 10 <= n_train, n_test and n_train + n_test <= 1797, got {n_train}, {n_test}")
    digits = load_digits()
    x = digits.data.astype(np.float64) / 16.0
    y = digits.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, train_size=n_train, test_size=n_test, stratify=y, random_state=seed
    )
    mean, std = x_tr.mean(), x_tr.std()
    to = lambda a: torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731
    return to((x_tr - mean) / std), to(y_tr), to((x_te - mean) / std), to(y_te)


def make_mlp(
    in_features: int = 64,
    hidden: Sequence[int] = (32,),
    num_classes: int = 10,
    activation: str = "tanh",
    seed: int = 0,
) -> nn.Module:
    """A float64 ``mlp`` of the model registry on ``in_features``-vectors, with PyTorch's default
    initialisation drawn from ``seed`` (the global RNG is left as it was)."""
    gen_state = torch.random.get_rng_state()
    seed_torch(seed)
    try:
        model = build_model("mlp", num_classes=num_classes, in_channels=in_features, input_size=1,
                            hidden=tuple(hidden), activation=activation).double()
    finally:
        torch.random.set_rng_state(gen_state)
    return model


def train_full_batch(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, lr: float = 0.1, momentum: float = 0.9
) -> nn.Module:
    """``steps`` full-batch SGD steps (deterministic) on the mean cross-entropy; in place."""
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    model.train()
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval()
    return model


# --------------------------------------------------------------------------------------
# flat-vector plumbing
# --------------------------------------------------------------------------------------
def weight_names(model: nn.Module) -> list[str]:
    """Names of the weight matrices of every Linear/Conv layer (biases excluded)."""
    out = []
    for mod_name, mod in model.named_modules():
        if isinstance(mod, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            out.append(f"{mod_name}.weight" if mod_name else "weight")
    return out


def flatten(tensors: dict[str, torch.Tensor], names: Sequence[str]) -> torch.Tensor:
    """Concatenate ``tensors[n].reshape(-1)`` for ``n`` in ``names`` into one vector."""
    missing = [n for n in names if n not in tensors]
    if missing:
        raise KeyError(f"names {missing} not in tensors (have {sorted(tensors)})")
    return torch.cat([tensors[n].reshape(-1) for n in names])


def unflatten(vec: torch.Tensor, like: dict[str, torch.Tensor], names: Sequence[str]) -> dict[str, torch.Tensor]:
    """Inverse of :func:`flatten`: split ``vec`` into tensors shaped like ``like[n]``."""
    out, start = {}, 0
    for n in names:
        k = like[n].numel()
        out[n] = vec[start : start + k].view_as(like[n])
        start += k
    if start != vec.numel():
        raise ValueError(f"vector has {vec.numel()} entries, names need {start}")
    return out


def _params(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach() for k, v in model.named_parameters()}


def _prunable(model: nn.Module, names: Sequence[str]) -> dict[str, nn.Parameter]:
    params = dict(model.named_parameters())
    return {n: params[n] for n in names}


def _check_names(model: nn.Module, names: Sequence[str] | None) -> list[str]:
    params = dict(model.named_parameters())
    names = weight_names(model) if names is None else list(names)
    bad = [n for n in names if n not in params]
    if bad:
        raise ValueError(f"unknown parameter names {bad}; the model has {sorted(params)}")
    return names


def _loss_of_flat(model: nn.Module, names: Sequence[str], x: torch.Tensor, y: torch.Tensor):
    """``f(v) = L(θ with the prunable entries replaced by v)`` as a torch.func-friendly closure."""
    base = _params(model)

    def f(v: torch.Tensor) -> torch.Tensor:
        p = dict(base)
        p.update(unflatten(v, base, names))
        return F.cross_entropy(functional_call(model, p, (x,)), y)

    return f


def mean_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Mean cross-entropy of ``model`` on ``(x, y)`` (no grad)."""
    with torch.no_grad():
        return float(F.cross_entropy(model(x), y))


# --------------------------------------------------------------------------------------
# exact curvature quantities
# --------------------------------------------------------------------------------------
def fisher_and_gradient(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    names: Sequence[str] | None = None,
    chunk_size: int = 128,
) -> dict[str, torch.Tensor]:
    """Mean gradient, empirical Fisher and true Fisher diagonals from per-sample logit Jacobians.

    With ``J_n = ∂z(x_n)/∂θ`` (C, P) and ``p_n = softmax(z_n)``: per-sample gradient
    ``g_n = J_nᵀ(p_n − e_{y_n})``; ``grad = mean g_n``; ``fisher = mean g_n²`` (empirical,
    true labels); ``true_fisher = mean_n Σ_c p_nc (J_nᵀ(p_n − e_c))² =
    mean_n [Σ_c p_nc J_nc² − (Σ_c p_nc J_nc)²]`` (labels from the model; equals the
    Gauss-Newton diagonal). Returns flat (P,) vectors over ``names``.
    """
    names = _check_names(model, names)
    base = _params(model)
    theta = flatten(base, names)

    def logits_one(v: torch.Tensor, xi: torch.Tensor) -> torch.Tensor:
        p = dict(base)
        p.update(unflatten(v, base, names))
        return functional_call(model, p, (xi.unsqueeze(0),)).squeeze(0)

    jac = vmap(jacrev(logits_one), in_dims=(None, 0))
    g_sum = torch.zeros_like(theta)
    f_emp = torch.zeros_like(theta)
    f_true = torch.zeros_like(theta)
    n = x.shape[0]
    for s in range(0, n, chunk_size):
        xb, yb = x[s : s + chunk_size], y[s : s + chunk_size]
        with torch.no_grad():
            J = jac(theta, xb)  # (b, C, P)
            prob = torch.softmax(functional_call(model, base, (xb,)), dim=-1)  # (b, C)
            r = prob - F.one_hot(yb, prob.shape[-1]).to(prob.dtype)
            g_n = torch.einsum("bc,bcp->bp", r, J)
            g_sum += g_n.sum(0)
            f_emp += (g_n**2).sum(0)
            pj = torch.einsum("bc,bcp->bp", prob, J)
            f_true += (torch.einsum("bc,bcp->bp", prob, J**2) - pj**2).sum(0)
    return {"grad": g_sum / n, "fisher": f_emp / n, "true_fisher": f_true / n}


def _hvp_fn(model, names, x, y):
    f = _loss_of_flat(model, names, x, y)
    theta = flatten(_params(model), names)
    g = grad(f)

    def hvp(v: torch.Tensor) -> torch.Tensor:
        return jvp(g, (theta,), (v,))[1]

    return hvp, theta


def hessian_diag(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    names: Sequence[str] | None = None,
    index: torch.Tensor | None = None,
    chunk_size: int = 512,
) -> torch.Tensor:
    """Exact Hessian diagonal ``H_ii`` of the mean cross-entropy, one HVP ``H e_i`` per weight.

    ``index`` (long, (K,)) restricts it to some flat indices; returns (K,) or (P,).
    """
    names = _check_names(model, names)
    hvp, theta = _hvp_fn(model, names, x, y)
    idx = torch.arange(theta.numel()) if index is None else index.long()
    out = torch.empty(idx.numel(), dtype=theta.dtype)
    batched = vmap(hvp)
    for s in range(0, idx.numel(), chunk_size):
        rows = idx[s : s + chunk_size]
        e = torch.zeros(rows.numel(), theta.numel(), dtype=theta.dtype)
        e[torch.arange(rows.numel()), rows] = 1.0
        with torch.no_grad():
            out[s : s + rows.numel()] = batched(e)[torch.arange(rows.numel()), rows]
    return out


def removal_loss_change(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    names: Sequence[str] | None = None,
    index: torch.Tensor | None = None,
    chunk_size: int = 512,
) -> torch.Tensor:
    """The actual ``L(θ − θ_i e_i) − L(θ)`` for each flat index ``i`` (all, or ``index``)."""
    names = _check_names(model, names)
    f = _loss_of_flat(model, names, x, y)
    theta = flatten(_params(model), names)
    idx = torch.arange(theta.numel()) if index is None else index.long()
    out = torch.empty(idx.numel(), dtype=theta.dtype)
    batched = vmap(f)
    with torch.no_grad():
        base = f(theta)
        for s in range(0, idx.numel(), chunk_size):
            rows = idx[s : s + chunk_size]
            v = theta.expand(rows.numel(), -1).clone()
            v[torch.arange(rows.numel()), rows] = 0.0
            out[s : s + rows.numel()] = batched(v) - base
    return out


@dataclass
class TaylorQuantities:
    """Flat float64 (P,) vectors over the prunable weights ``names`` (see the module docstring)."""

    names: list[str]
    theta: torch.Tensor
    grad: torch.Tensor
    fisher: torch.Tensor
    true_fisher: torch.Tensor
    hessian: torch.Tensor
    hutchinson: torch.Tensor
    delta_loss: torch.Tensor
    loss: float


def _is_one_hidden_mlp(model: nn.Module, names: Sequence[str]) -> bool:
    """The registry's ``mlp`` with one hidden layer, scored on its two weight matrices."""
    return isinstance(model, MLP) and list(names) == ["features.1.weight", "linear.weight"] and len(model.features) == 3


def closed_form_mlp1(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, chunk_size: int = 128
) -> dict[str, torch.Tensor]:
    """Exact ``grad, fisher, true_fisher, hessian, delta_loss`` for a one-hidden-layer ``mlp``.

    Closed forms (``a = xW1ᵀ+b1``, ``h = σ(a)``, ``z = hW2ᵀ+b2``, ``r = p − e_y``,
    ``S = diag p − ppᵀ``, all per sample, averaged over samples):
    W2[c,j]: g = r_c h_j, H = F = h_j² S_cc (z is linear in W2);
    W1[j,k]: g = x_k σ'(a_j) (rW2)_j, F = x_k² σ'_j² w_jᵀSw_j,
    H = F + x_k² σ''_j (r·w_j) with ``w_j = W2[:, j]``.
    ``delta_loss`` evaluates the zeroed networks directly (no expansion). O(N·P·C) instead of
    the O(N·P²) of one Hessian-vector product per weight; flat order ``[features.1.weight, linear.weight]``.
    """
    if not _is_one_hidden_mlp(model, ["features.1.weight", "linear.weight"]):
        raise ValueError("closed_form_mlp1 needs the registry's mlp with exactly one hidden layer")
    hidden = model.features[1]
    W1, b1 = hidden.weight.detach(), hidden.bias.detach()
    W2, b2 = model.linear.weight.detach(), model.linear.bias.detach()
    tanh = isinstance(model.features[2], nn.Tanh)
    n = x.shape[0]
    with torch.no_grad():
        a = x @ W1.T + b1
        h = torch.tanh(a) if tanh else torch.relu(a)
        d1 = 1 - h**2 if tanh else (a > 0).to(a.dtype)
        d2 = -2 * h * d1 if tanh else torch.zeros_like(a)
        z = h @ W2.T + b2
        p = torch.softmax(z, -1)
        r = p - F.one_hot(y, z.shape[1]).to(z.dtype)
        rw = r @ W2  # (N, J)  r·w_j
        delta = d1 * rw
        pw2 = p @ W2**2 - (p @ W2) ** 2  # (N, J)  w_jᵀ S w_j
        x2 = x**2
        out = {
            "grad": torch.cat([(delta.T @ x).reshape(-1), (r.T @ h).reshape(-1)]) / n,
            "fisher": torch.cat([((delta**2).T @ x2).reshape(-1), ((r**2).T @ h**2).reshape(-1)]) / n,
        }
        f1 = ((d1**2 * pw2).T @ x2).reshape(-1) / n
        f2 = ((p - p**2).T @ h**2).reshape(-1) / n
        out["true_fisher"] = torch.cat([f1, f2])
        out["hessian"] = torch.cat([f1 + ((d2 * rw).T @ x2).reshape(-1) / n, f2])
        # zeroing W2[c, j]: z_c -= W2[c, j] h_j           -> (N, C, J, C) per chunk
        # zeroing W1[j, k]: h_j -> σ(a_j − W1[j, k] x_k)   -> (N, J, K, C) per chunk
        J, K, C = W1.shape[0], W1.shape[1], W2.shape[0]
        s1 = torch.zeros(J, K, dtype=x.dtype)
        s2 = torch.zeros(C, J, dtype=x.dtype)
        eye = torch.eye(C, dtype=x.dtype)
        for s in range(0, n, chunk_size):
            sl = slice(s, s + chunk_size)
            zb, yb, hb, ab, xb = z[sl], y[sl], h[sl], a[sl], x[sl]
            a_new = ab[:, :, None] - W1[None] * xb[:, None, :]  # (b, J, K)
            dh = (torch.tanh(a_new) if tanh else torch.relu(a_new)) - hb[:, :, None]
            z1 = zb[:, None, None, :] + dh[..., None] * W2.T[None, :, None, :]  # (b, J, K, C)
            lb = _ce(zb, yb)[:, None, None]  # per-sample differences: exact 0 where nothing moves
            s1 += (_ce(z1, yb) - lb).sum(0)
            dz = -(W2[None] * hb[:, None, :])  # (b, C, J)
            z2 = zb[:, None, None, :] + dz[..., None] * eye[None, :, None, :]  # (b, C, J, C)
            s2 += (_ce(z2, yb) - lb).sum(0)
        out["delta_loss"] = torch.cat([s1.reshape(-1), s2.reshape(-1)]) / n
    return out


def _ce(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-entry CE(z[n, ..., :], y[n]) for z (b, ..., C) -> (b, ...)."""
    yy = y.view(-1, *([1] * (z.dim() - 1))).expand(*z.shape[:-1], 1)
    return torch.logsumexp(z, -1) - z.gather(-1, yy).squeeze(-1)


def taylor_quantities(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    names: Sequence[str] | None = None,
    num_probes: int = 10,
    seed: int = 0,
    method: str = "auto",
) -> TaylorQuantities:
    """Everything of :class:`TaylorQuantities` for ``model`` on the scoring data ``(x, y)``.

    ``method``: ``"autograd"`` (generic torch.func: per-sample Jacobians, one HVP per weight,
    one forward per zeroed weight), ``"closed_form"`` (:func:`closed_form_mlp1`, one-hidden-layer
    mlp only; same numbers to round-off, much faster) or ``"auto"`` (closed form when it applies).
    """
    if method not in ("auto", "autograd", "closed_form"):
        raise ValueError(f"unknown method {method!r}; choose 'auto', 'autograd' or 'closed_form'")
    names = _check_names(model, names)
    use_cf = method == "closed_form" or (method == "auto" and _is_one_hidden_mlp(model, names))
    if use_cf:
        if not _is_one_hidden_mlp(model, names):
            raise ValueError("method='closed_form' needs a one-hidden-layer mlp with names [features.1.weight, linear.weight]")
        parts = closed_form_mlp1(model, x, y)
    else:
        parts = fisher_and_gradient(model, x, y, names)
        parts["hessian"] = hessian_diag(model, x, y, names)
        parts["delta_loss"] = removal_loss_change(model, x, y, names)
    return TaylorQuantities(
        names=names,
        theta=flatten(_params(model), names).clone(),
        hutchinson=flatten(curvature.hutchinson_diag(model, _prunable(model, names), [(x, y)], probes=num_probes,
                                                     temperature=1.0, seed=seed), names).detach(),
        loss=mean_loss(model, x, y),
        **{k: parts[k] for k in ("grad", "fisher", "true_fisher", "hessian", "delta_loss")},
    )


# --------------------------------------------------------------------------------------
# criteria and statistics
# --------------------------------------------------------------------------------------
def scores_from_quantities(q: TaylorQuantities, fbss_eps: float = 1e-12) -> dict[str, torch.Tensor]:
    """Scores (higher = keep) of each variant in :data:`VARIANTS` from ``q``.

    Every score is a predicted magnitude of the loss change caused by removing the weight;
    FBSS is the predicted change when the other weights are re-fitted by a diagonal Newton
    step, up to a constant. ``fbss_eps`` damps F̂ in FBSS's division.
    """
    th, g, f, h, hh = q.theta, q.grad, q.fisher, q.hessian, q.hutchinson
    return {
        "snip": Fm.snip(th, g),
        "fisher_pruning": Fm.fisher_pruning(th, f),
        "obd": Fm.obd(th, h),
        "fts": Fm.taylor(th, g, f),
        "fts_removal": Fm.taylor(th, g, f, sign=-1.0),
        "fbss": Fm.fbss(th, g, f, fbss_eps),
        "hts": Fm.taylor(th, g, hh),
        "taylor2_exact": Fm.taylor(th, g, h, sign=-1.0),
        "magnitude": th.abs(),
    }


def signed_predictions(q: TaylorQuantities) -> dict[str, torch.Tensor]:
    """Signed predicted ``ΔL`` of zeroing each weight, per criterion (before any abs).

    ``snip`` is the first-order removal change ``−θĝ``; ``fts`` and ``hts`` keep the code's
    ``+θĝ``, so their signed prediction has the wrong first-order sign on purpose.
    """
    th, g = q.theta, q.grad
    signed = lambda curv, sign: Fm.taylor(th, g, curv, sign, absolute=False)  # noqa: E731
    return {
        "snip": -th * g,
        "fisher_pruning": Fm.fisher_pruning(th, q.fisher),
        "obd": Fm.obd(th, q.hessian),
        "fts": signed(q.fisher, 1.0),
        "fts_removal": signed(q.fisher, -1.0),
        "hts": signed(q.hutchinson, 1.0),
        "taylor2_exact": signed(q.hessian, -1.0),
    }


def _np(a) -> np.ndarray:
    return a.detach().cpu().double().numpy() if isinstance(a, torch.Tensor) else np.asarray(a, dtype=np.float64)


def spearman(a, b) -> float:
    """Spearman rank correlation of two equally long vectors (ties: average ranks)."""
    a, b = _np(a).ravel(), _np(b).ravel()
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    return float(stats.spearmanr(a, b).statistic)


def topk_overlap(a, b, keep_fraction: float) -> float:
    """|top-k(a) ∩ top-k(b)| / k, k the weights ``make_masks`` keeps at sparsity 1 − keep_fraction
    (at least 1), with its tie-break."""
    if not 0.0 < keep_fraction <= 1.0:
        raise ValueError(f"keep_fraction must be in (0, 1], got {keep_fraction}")
    a, b = torch.as_tensor(_np(a)).ravel(), torch.as_tensor(_np(b)).ravel()
    k = max(num_kept(a.numel(), 1.0 - keep_fraction), 1)
    return int((top_k_mask(a, k) & top_k_mask(b, k)).sum()) / k


def spearman_table(q: TaylorQuantities, criteria: Sequence[str] | None = None) -> dict[str, dict[str, float]]:
    """Per criterion: Spearman of its score with the actual ``|ΔL|`` (``abs``) and of its
    signed prediction with the actual ``ΔL`` (``signed``; NaN where it has none)."""
    scores = scores_from_quantities(q)
    signed = signed_predictions(q)
    criteria = list(scores) if criteria is None else list(criteria)
    bad = [c for c in criteria if c not in scores]
    if bad:
        raise ValueError(f"unknown criteria {bad}; choose from {sorted(scores)}")
    return {
        c: {
            "abs": spearman(scores[c], q.delta_loss.abs()),
            "signed": spearman(signed[c], q.delta_loss) if c in signed else float("nan"),
        }
        for c in criteria
    }


def trajectory(
    x: torch.Tensor,
    y: torch.Tensor,
    steps: Sequence[int] = (0, 10, 30, 100, 300),
    *,
    seed: int = 0,
    hidden: Sequence[int] = (32,),
    activation: str = "tanh",
    lr: float = 0.1,
    momentum: float = 0.9,
    num_probes: int = 10,
    x_eval: torch.Tensor | None = None,
    y_eval: torch.Tensor | None = None,
    method: str = "auto",
) -> list[dict]:
    """Train a :func:`make_mlp` with full-batch SGD on ``(x, y)`` and take
    :func:`taylor_quantities` (on the same data) at each step count in ``steps``.

    Returns one dict per checkpoint: ``step``, ``quantities`` (:class:`TaylorQuantities`),
    ``loss`` (training loss), ``accuracy`` on ``(x_eval, y_eval)`` (NaN without them) and
    ``model`` (a copy of the network at that step).
    """
    steps = list(steps)
    if steps != sorted(steps) or (steps and steps[0] < 0):
        raise ValueError(f"steps must be non-negative and increasing, got {steps}")
    model = make_mlp(x.shape[1], hidden, int(y.max()) + 1, activation, seed=seed)
    names = weight_names(model)
    out, done = [], 0
    for step in steps:
        train_full_batch(model, x, y, step - done, lr=lr, momentum=momentum)
        done = step
        acc = float("nan")
        if x_eval is not None and y_eval is not None:
            with torch.no_grad():
                acc = float((model(x_eval).argmax(1) == y_eval).double().mean())
        q = taylor_quantities(model, x, y, names, num_probes=num_probes, seed=seed, method=method)
        out.append({"step": step, "quantities": q, "loss": q.loss, "accuracy": acc, "model": copy.deepcopy(model)})
    return out
