"""Fisher information spectra of random networks (Karakida, Akaho & Amari, AISTATS 2019), chapter 2.

* Mean-field theory (:func:`mean_field`, :func:`karakida_predictions`): the order parameters, κ₁, κ₂ and
  the predicted moments and outliers of a fully connected net's Fisher (ReLU exact, else Gauss-Hermite).
* Exact spectra of MLPs (:class:`FunctionalMLP`, :func:`mlp_dual_gram`): the nonzero eigenvalues from
  the dual Gram matrix, assembled layer by layer, never forming a P-sized Jacobian.
* Any module (:class:`FisherOperator`): matrix-free Fisher-vector products (``jvp`` and ``vjp``),
  Lanczos or power iteration for the top eigenvalues, and the exact trace.

``kind`` (:data:`FISHER_KINDS`): F = (1/T) Σ_t J_tᵀ B_t J_t, J_t = ∂f(x_t)/∂θ (C x P, f = logits), with
B_t = I for ``"label_free"`` (Karakida's), diag(p_t) − p_t p_tᵀ for ``"softmax"`` (the true Fisher), and
r_t r_tᵀ, r_t = p_t − e_{y_t}, for ``"empirical"`` (true labels: the one FTS uses). Derivations and
checks: ``notebooks/02_karakida_spectrum.ipynb``.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
from scipy.sparse.linalg import LinearOperator, eigsh
from torch import Tensor, nn
from torch.func import functional_call, jacrev, jvp, vjp, vmap

from fts_core.masks.select import check_sparsity, make_masks
from fts_core.setup.seeding import make_generator

__all__ = [
    "ACTIVATIONS_WITH_DERIVATIVES",
    "FISHER_KINDS",
    "gauss_expectations",
    "MeanField",
    "mean_field",
    "karakida_predictions",
    "FunctionalMLP",
    "init_mlp",
    "mlp_forward",
    "mlp_backward",
    "output_factor",
    "mlp_dual_gram",
    "mlp_dual_grams",
    "mlp_fisher_diagonal",
    "mlp_mean_gradient",
    "mlp_to_module",
    "dual_eigenvalues",
    "spectrum_stats",
    "fit_loglog",
    "global_kept_fraction",
    "collapse_sparsity",
    "small_convnet",
    "FisherOperator",
    "jacobian_dual_gram",
]

FISHER_KINDS = ("label_free", "softmax", "empirical")


# ----------------------------------------------------------------------------- activations
def _relu_d(u: Tensor) -> Tensor:
    return (u > 0).to(u.dtype)


def _tanh_d(u: Tensor) -> Tensor:
    return 1.0 - torch.tanh(u) ** 2


def _linear_d(u: Tensor) -> Tensor:
    return torch.ones_like(u)


#: name -> (phi, phi')
ACTIVATIONS_WITH_DERIVATIVES: dict[str, tuple[Callable[[Tensor], Tensor], Callable[[Tensor], Tensor]]] = {
    "relu": (torch.relu, _relu_d),
    "tanh": (torch.tanh, _tanh_d),
    "linear": (lambda u: u, _linear_d),
}


def _check_activation(name: str) -> None:
    if name not in ACTIVATIONS_WITH_DERIVATIVES:
        raise ValueError(f"unknown activation {name!r}; allowed: {sorted(ACTIVATIONS_WITH_DERIVATIVES)}")


def _check_kind(kind: str) -> None:
    if kind not in FISHER_KINDS:
        raise ValueError(f"unknown Fisher kind {kind!r}; allowed: {list(FISHER_KINDS)}")


# ----------------------------------------------------------------------------- mean-field theory
def gauss_expectations(activation: str, q1: float, q2: float, n_quad: int = 80,
                       closed_form: bool = True) -> tuple[float, float, float, float]:
    """E[phi(u)^2], E[phi(u)phi(u')], E[phi'(u)^2], E[phi'(u)phi'(u')] for (u, u') Gaussian,
    zero mean, variance q1 and covariance q2: ReLU by the arc-cosine kernels when
    ``closed_form``, otherwise tensor Gauss-Hermite quadrature with ``n_quad`` nodes per axis."""
    _check_activation(activation)
    if q1 <= 0:
        raise ValueError(f"q1 must be > 0, got {q1}")
    if activation == "relu" and closed_form:  # arc-cosine kernels (Cho & Saul), exact
        c = min(max(q2 / q1, -1.0), 1.0)
        th = math.acos(c)
        e_pp = q1 / (2 * math.pi) * (math.sin(th) + (math.pi - th) * c)
        return q1 / 2, e_pp, 0.5, (math.pi - th) / (2 * math.pi)
    phi, dphi = ACTIVATIONS_WITH_DERIVATIVES[activation]
    z, w = np.polynomial.hermite_e.hermegauss(n_quad)  # weight exp(-z^2/2)
    w = w / w.sum()
    z1, z2 = np.meshgrid(z, z, indexing="ij")
    ww = np.outer(w, w)
    c = min(max(q2 / q1, -1.0), 1.0)
    u = torch.from_numpy(math.sqrt(q1) * z1)
    v = torch.from_numpy(math.sqrt(q1) * (c * z1 + math.sqrt(max(1 - c * c, 0.0)) * z2))
    W = torch.from_numpy(ww)
    e_p2 = float((W * phi(u) ** 2).sum())
    e_pp = float((W * phi(u) * phi(v)).sum())
    e_d2 = float((W * dphi(u) ** 2).sum())
    e_dd = float((W * dphi(u) * dphi(v)).sum())
    return e_p2, e_pp, e_d2, e_dd


@dataclass
class MeanField:
    """Mean-field order parameters of an L-layer MLP (layer l maps width M_{l-1} -> M_l).

    Lists are indexed by layer ``l = 0..L``: ``q_hat1[l]``, ``q_hat2[l]`` for the activations
    h^l (l = 0 is the input), ``q1[l]``, ``q2[l]`` and ``q_tilde1[l]``, ``q_tilde2[l]`` for the
    pre-activations u^l and backward vectors (l >= 1; index 0 unused, NaN).
    """

    widths: list[int]
    activation: str
    sigma_w2: float
    sigma_b2: float
    bias: bool
    q1: list[float] = field(default_factory=list)
    q2: list[float] = field(default_factory=list)
    q_hat1: list[float] = field(default_factory=list)
    q_hat2: list[float] = field(default_factory=list)
    q_tilde1: list[float] = field(default_factory=list)
    q_tilde2: list[float] = field(default_factory=list)

    @property
    def alpha(self) -> float:
        """alpha with P ~ alpha M^2, M = widths[1] (hidden layers only, as in Karakida et al.)."""
        M = self.widths[1]
        return sum(self.widths[l] * self.widths[l - 1] for l in range(1, len(self.widths) - 1)) / M**2

    @property
    def kappa1(self) -> float:
        """kappa_1 = sum_l (alpha_{l-1}/alpha) q~_1^l q^_1^{l-1}."""
        M = self.widths[1]
        return sum(self.widths[l - 1] / M * self.q_tilde1[l] * self.q_hat1[l - 1]
                   for l in range(1, len(self.widths))) / self.alpha

    @property
    def kappa2(self) -> float:
        """kappa_2 = sum_l (alpha_{l-1}/alpha) q~_2^l q^_2^{l-1}."""
        M = self.widths[1]
        return sum(self.widths[l - 1] / M * self.q_tilde2[l] * self.q_hat2[l - 1]
                   for l in range(1, len(self.widths))) / self.alpha

    def layer_trace(self, num_outputs: int | None = None) -> list[float]:
        """Predicted per-layer trace of the label-free Fisher over the weights of layer l
        (l = 1..L): ``C M_{l-1} q~_1^l q^_1^{l-1}`` (biases excluded)."""
        C = self.widths[-1] if num_outputs is None else num_outputs
        return [C * self.widths[l - 1] * self.q_tilde1[l] * self.q_hat1[l - 1]
                for l in range(1, len(self.widths))]


def mean_field(widths: Sequence[int], activation: str = "relu", *, sigma_w2: float = 2.0,
               sigma_b2: float = 0.1, bias: bool = True, q_in: float = 1.0, q_in_cross: float = 0.0,
               n_quad: int = 80) -> MeanField:
    """Order parameters of a random MLP with ``widths = [M_0, M_1, ..., M_L]`` (input to output).

    Weights N(0, sigma_w2 / M_{l-1}), biases N(0, sigma_b2) (``bias=False``: none), activation
    on all hidden layers, linear outputs. ``q_in = |x|^2/M_0`` and ``q_in_cross = x.x'/M_0`` of
    the inputs (1 and 0 for independent standardized inputs).
    """
    _check_activation(activation)
    widths = [int(w) for w in widths]
    if len(widths) < 2 or min(widths) < 1:
        raise ValueError(f"widths must list at least an input and an output size >= 1, got {widths}")
    L = len(widths) - 1
    sb = sigma_b2 if bias else 0.0
    mf = MeanField(widths, activation, sigma_w2, sigma_b2, bias)
    nan = float("nan")
    mf.q_hat1, mf.q_hat2 = [q_in], [q_in_cross]
    mf.q1, mf.q2 = [nan], [nan]
    d2, dd = [nan], [nan]
    for _ in range(1, L + 1):
        q1 = sigma_w2 * mf.q_hat1[-1] + sb
        q2 = sigma_w2 * mf.q_hat2[-1] + sb
        e_p2, e_pp, e_d2, e_dd = gauss_expectations(activation, q1, q2, n_quad)
        mf.q1.append(q1)
        mf.q2.append(q2)
        mf.q_hat1.append(e_p2)
        mf.q_hat2.append(e_pp)
        d2.append(e_d2)
        dd.append(e_dd)
    qt1 = [nan] * (L + 1)
    qt2 = [nan] * (L + 1)
    qt1[L] = qt2[L] = 1.0  # linear output layer
    for l in range(L - 1, 0, -1):
        qt1[l] = sigma_w2 * qt1[l + 1] * d2[l]
        qt2[l] = sigma_w2 * qt2[l + 1] * dd[l]
    mf.q_tilde1, mf.q_tilde2 = qt1, qt2
    return mf


def karakida_predictions(widths: Sequence[int], num_samples: int, activation: str = "relu", **kwargs) -> dict:
    """Mean-field predictions for the label-free Fisher of ``T = num_samples`` inputs.

    Returns a dict with ``mean`` (Tr F / P), ``second`` (Tr F^2 / P), ``top`` (each of the C
    outliers), ``bulk`` (the other C(T-1) nonzero eigenvalues), ``kappa1``, ``kappa2``, ``alpha``,
    ``P`` and ``num_params``; computed at finite width from the diagonal ``b`` and off-diagonal
    ``a`` entries of the dual matrix (``b ~ alpha M kappa1``, ``a ~ alpha M kappa2``), so the
    M -> infinity limits are ``kappa1 C / M``, ``alpha C [(T-1)/T kappa2^2 + kappa1^2/T]`` and
    ``alpha M [(T-1)/T kappa2 + kappa1/T]``. kwargs go to :func:`mean_field`.
    """
    mf = mean_field(widths, activation, **kwargs)
    T = int(num_samples)
    if T < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    w = mf.widths
    C, L = w[-1], len(w) - 1
    nb = 1.0 if mf.bias else 0.0
    b = sum(mf.q_tilde1[l] * (w[l - 1] * mf.q_hat1[l - 1] + nb) for l in range(1, L + 1))
    a = sum(mf.q_tilde2[l] * (w[l - 1] * mf.q_hat2[l - 1] + nb) for l in range(1, L + 1))
    P = sum(w[l] * w[l - 1] + (w[l] if mf.bias else 0) for l in range(1, L + 1))
    return {
        "mean": C * b / P,
        "second": C * (b * b + (T - 1) * a * a) / (T * P),
        "top": (b + (T - 1) * a) / T,
        "bulk": (b - a) / T,
        "kappa1": mf.kappa1,
        "kappa2": mf.kappa2,
        "alpha": mf.alpha,
        "P": P,
        "mean_field": mf,
    }


# ----------------------------------------------------------------------------- exact MLP spectra
@dataclass
class FunctionalMLP:
    """A functional MLP: ``weights[l]`` (M_{l+1}, M_l), ``biases[l]`` (M_{l+1},) or None."""

    weights: list[Tensor]
    biases: list[Tensor] | None
    activation: str = "relu"

    @property
    def widths(self) -> list[int]:
        return [self.weights[0].shape[1]] + [W.shape[0] for W in self.weights]

    @property
    def num_params(self) -> int:
        n = sum(W.numel() for W in self.weights)
        return n + (sum(b.numel() for b in self.biases) if self.biases is not None else 0)


def init_mlp(widths: Sequence[int], activation: str = "relu", *, sigma_w2: float = 2.0, sigma_b2: float = 0.1,
             bias: bool = True, seed: int = 0, dtype: torch.dtype = torch.float64,
             device: str | torch.device = "cpu") -> FunctionalMLP:
    """Random MLP ``widths = [M_0, ..., M_L]``: W^l ~ N(0, sigma_w2/M_{l-1}), b^l ~ N(0, sigma_b2)."""
    _check_activation(activation)
    widths = [int(w) for w in widths]
    if len(widths) < 2 or min(widths) < 1:
        raise ValueError(f"widths must list at least an input and an output size >= 1, got {widths}")
    g = torch.Generator(device="cpu").manual_seed(int(seed))
    Ws, bs = [], []
    for m_in, m_out in zip(widths[:-1], widths[1:]):
        Ws.append((torch.randn(m_out, m_in, generator=g, dtype=torch.float64)
                   * math.sqrt(sigma_w2 / m_in)).to(device=device, dtype=dtype))
        bs.append((torch.randn(m_out, generator=g, dtype=torch.float64)
                   * math.sqrt(sigma_b2)).to(device=device, dtype=dtype))
    return FunctionalMLP(Ws, bs if bias else None, activation)


def mlp_forward(net: FunctionalMLP, x: Tensor) -> tuple[list[Tensor], list[Tensor]]:
    """Forward pass of ``x`` (T, M_0). Returns pre-activations ``us[l]`` (T, M_{l+1}) for
    l = 0..L-1 (``us[-1]`` = outputs) and layer inputs ``hs[l]`` (T, M_l) (``hs[0] = x``)."""
    phi, _ = ACTIVATIONS_WITH_DERIVATIVES[net.activation]
    if x.ndim != 2 or x.shape[1] != net.widths[0]:
        raise ValueError(f"x must have shape (T, {net.widths[0]}), got {tuple(x.shape)}")
    us, hs = [], [x]
    h = x
    L = len(net.weights)
    for l, W in enumerate(net.weights):
        u = h @ W.T
        if net.biases is not None:
            u = u + net.biases[l]
        us.append(u)
        if l < L - 1:
            h = phi(u)
            hs.append(h)
    return us, hs


def mlp_backward(net: FunctionalMLP, us: list[Tensor]) -> list[Tensor]:
    """Backward vectors ``D[l][t, k, i] = d f_k(x_t) / d u^{l+1}_i``, shape (T, C, M_{l+1})."""
    _, dphi = ACTIVATIONS_WITH_DERIVATIVES[net.activation]
    T, C = us[-1].shape
    L = len(net.weights)
    D = [None] * L
    D[L - 1] = torch.eye(C, dtype=us[-1].dtype, device=us[-1].device).expand(T, C, C)
    for l in range(L - 2, -1, -1):
        D[l] = (D[l + 1] @ net.weights[l + 1]) * dphi(us[l]).unsqueeze(1)
    return D


def output_factor(logits: Tensor, kind: str = "label_free", targets: Tensor | None = None) -> Tensor:
    """Factor ``A`` (T, C, R) with ``B_t = A_t A_t^T`` the output-space metric of ``kind``.

    label_free: I (R = C); softmax: diag(sqrt p) - p sqrt(p)^T (R = C; A A^T = diag p - p p^T
    since sum p = 1); empirical: p - onehot(y) (R = 1), which needs ``targets`` (T,) int64.
    """
    _check_kind(kind)
    T, C = logits.shape
    if kind == "label_free":
        return torch.eye(C, dtype=logits.dtype, device=logits.device).expand(T, C, C)
    p = torch.softmax(logits, dim=1)
    if kind == "softmax":
        sp = p.sqrt()
        return torch.diag_embed(sp) - p.unsqueeze(2) * sp.unsqueeze(1)
    if targets is None:
        raise ValueError("kind='empirical' needs the true labels: pass targets")
    if targets.shape != (T,):
        raise ValueError(f"targets must have shape ({T},), got {tuple(targets.shape)}")
    r = p - torch.nn.functional.one_hot(targets.long(), C).to(p.dtype)
    return r.unsqueeze(2)


def mlp_dual_gram(net: FunctionalMLP, x: Tensor, kind: str = "label_free", targets: Tensor | None = None) -> Tensor:
    """Dual Gram matrix ``(1/T) A^T J J^T A`` ((T R) x (T R), rows ordered t-major), whose
    eigenvalues are the nonzero eigenvalues of the Fisher ``(1/T) J^T B J`` of ``kind``.

    Assembled layer by layer: ``sum_l (E_l E_l^T) * (H_{l-1} H_{l-1}^T + 1)`` with
    ``E_l = A^T D_l`` the weighted backward vectors (the "+1" is the bias; dropped without biases).
    """
    return mlp_dual_grams(net, x, (kind,), targets)[kind]


def mlp_dual_grams(net: FunctionalMLP, x: Tensor, kinds: Sequence[str] = FISHER_KINDS,
                   targets: Tensor | None = None) -> dict[str, Tensor]:
    """:func:`mlp_dual_gram` for several Fisher kinds, sharing one forward and backward pass."""
    for kind in kinds:
        _check_kind(kind)
    us, hs = mlp_forward(net, x)
    D = mlp_backward(net, us)
    T = x.shape[0]
    grams = [hs[l] @ hs[l].T + (1.0 if net.biases is not None else 0.0) for l in range(len(net.weights))]
    out = {}
    for kind in kinds:
        A = output_factor(us[-1], kind, targets)
        R = A.shape[2]
        K = torch.zeros(T * R, T * R, dtype=x.dtype, device=x.device)
        for l, G in enumerate(grams):
            E = torch.einsum("tcr,tcm->trm", A, D[l]).reshape(T * R, -1)
            K += (E @ E.T) * G.repeat_interleave(R, 0).repeat_interleave(R, 1)
        out[kind] = K / T
    return out


def mlp_fisher_diagonal(net: FunctionalMLP, x: Tensor, kind: str = "label_free",
                        targets: Tensor | None = None) -> list[tuple[Tensor, Tensor | None]]:
    """Exact Fisher diagonal per layer: ``[(diag over W^l (M_l, M_{l-1}), diag over b^l or None)]``.

    ``F_W[i, j] = (1/T) sum_t |A_t^T D_t[:, i]|^2 h_j(t)^2``.
    """
    us, hs = mlp_forward(net, x)
    D = mlp_backward(net, us)
    A = output_factor(us[-1], kind, targets)
    T = x.shape[0]
    out = []
    for l in range(len(net.weights)):
        s = torch.einsum("tcr,tcm->trm", A, D[l]).pow(2).sum(1)  # (T, M_{l+1})
        dW = s.T @ hs[l].pow(2) / T
        db = s.mean(0) if net.biases is not None else None
        out.append((dW, db))
    return out


def mlp_mean_gradient(net: FunctionalMLP, x: Tensor, targets: Tensor) -> list[Tensor]:
    """Mean cross-entropy gradient over the batch for each weight matrix W^l (M_l, M_{l-1})."""
    us, hs = mlp_forward(net, x)
    D = mlp_backward(net, us)
    r = output_factor(us[-1], "empirical", targets)[:, :, 0]  # dL/df = p - onehot
    T = x.shape[0]
    return [torch.einsum("tc,tcm->tm", r, D[l]).T @ hs[l] / T for l in range(len(net.weights))]


def mlp_to_module(net: FunctionalMLP) -> nn.Sequential:
    """The same MLP as an ``nn.Sequential`` (for cross-checks with autograd)."""
    phi_mod = {"relu": nn.ReLU, "tanh": nn.Tanh, "linear": nn.Identity}[net.activation]
    layers: list[nn.Module] = []
    L = len(net.weights)
    for l, W in enumerate(net.weights):
        lin = nn.Linear(W.shape[1], W.shape[0], bias=net.biases is not None).to(W.dtype)
        with torch.no_grad():
            lin.weight.copy_(W)
            if net.biases is not None:
                lin.bias.copy_(net.biases[l])
        layers.append(lin)
        if l < L - 1:
            layers.append(phi_mod())
    return nn.Sequential(*layers)


# ----------------------------------------------------------------------------- statistics
def dual_eigenvalues(K: Tensor) -> np.ndarray:
    """Eigenvalues of a symmetric dual matrix, descending, as float64 numpy (tiny negatives
    from round-off clipped to 0)."""
    ev = torch.linalg.eigvalsh(0.5 * (K + K.T)).flip(0)
    return ev.clamp_min(0).double().cpu().numpy()


def spectrum_stats(eigenvalues: np.ndarray | Sequence[float], num_params: int, top: int) -> dict[str, float]:
    """Statistics over all ``P = num_params`` eigenvalues given the nonzero ones (the rest are 0).

    ``mean = sum(l)/P``, ``second = sum(l^2)/P``, ``top = mean of the largest `top``,
    ``max``, ``bulk`` (median of the nonzero eigenvalues below the top ones), ``separation``
    (``top / bulk``) and ``top_share`` (share of ``sum l^2`` carried by the top ones).
    """
    ev = np.sort(np.asarray(eigenvalues, dtype=np.float64))[::-1]
    if top < 1 or top > ev.size:
        raise ValueError(f"top must be in 1..{ev.size}, got {top}")
    if num_params < ev.size:
        raise ValueError(f"num_params ({num_params}) < number of eigenvalues given ({ev.size})")
    rest = ev[top:]
    bulk = float(np.median(rest)) if rest.size else float("nan")
    tops = float(ev[:top].mean())
    return {
        "mean": float(ev.sum() / num_params),
        "second": float((ev**2).sum() / num_params),
        "top": tops,
        "max": float(ev[0]),
        "bulk": bulk,
        "separation": tops / bulk if rest.size else float("nan"),
        "top_share": float((ev[:top] ** 2).sum() / (ev**2).sum()),
    }


def fit_loglog(x: Sequence[float], y: Sequence[float]) -> dict[str, float]:
    """Least-squares fit ``log y = slope log x + intercept``; returns slope, intercept, stderr."""
    lx, ly = np.log(np.asarray(x, dtype=float)), np.log(np.asarray(y, dtype=float))
    if lx.size < 2 or np.unique(lx).size < 2:
        raise ValueError(f"need at least two distinct x values, got {list(x)}")
    A = np.stack([lx, np.ones_like(lx)], 1)
    coef, *_ = np.linalg.lstsq(A, ly, rcond=None)
    resid = ly - A @ coef
    dof = max(lx.size - 2, 1)
    se = math.sqrt(float(resid @ resid) / dof / float(((lx - lx.mean()) ** 2).sum()))
    return {"slope": float(coef[0]), "intercept": float(coef[1]), "stderr": se}


def global_kept_fraction(scores: Sequence[Tensor], sparsity: float) -> list[float]:
    """Kept fraction per tensor of ``make_masks`` over all tensors at ``sparsity`` (one global
    ranking, the masks' rounding and tie-break)."""
    check_sparsity(sparsity, below_one=True)
    masks = make_masks({str(i): s for i, s in enumerate(scores)}, sparsity)
    return [float(m.double().mean()) for m in masks.values()]


def collapse_sparsity(scores: Sequence[Tensor]) -> list[float]:
    """Per tensor, the lowest global sparsity at which a global top-k ranking keeps none of its
    entries: ``1 - #(scores > max of the tensor) / N`` (exact, no sweep)."""
    flat = torch.cat([s.reshape(-1).double() for s in scores])
    N = flat.numel()
    return [1.0 - float((flat > s_.max().double()).sum()) / N for s_ in scores]


# ----------------------------------------------------------------------------- conv nets, matrix-free
def small_convnet(channels: int, *, depth: int = 3, in_channels: int = 3, image_size: int = 8,
                  num_classes: int = 10, head: str = "pool", sigma_w2: float = 2.0, sigma_b2: float = 0.1,
                  seed: int = 0, dtype: torch.dtype = torch.float64) -> nn.Sequential:
    """``depth`` 3x3 convs (padding 1, ``channels`` wide, ReLU), then ``head``: "pool" (global
    average pool, Linear(channels, C): P ~ 9 depth channels^2) or "flatten" (Linear(channels *
    image_size^2, C), whose O(channels) head dominates P at small widths).

    Mean-field init: weights N(0, sigma_w2 / fan_in), biases N(0, sigma_b2).
    """
    if channels < 1 or depth < 1:
        raise ValueError(f"channels and depth must be >= 1, got channels={channels}, depth={depth}")
    if head not in ("pool", "flatten"):
        raise ValueError(f"unknown head {head!r}; allowed: ['pool', 'flatten']")
    g = make_generator(int(seed))
    layers: list[nn.Module] = []
    c_in = in_channels
    for _ in range(depth):
        layers += [nn.Conv2d(c_in, channels, 3, padding=1), nn.ReLU()]
        c_in = channels
    if head == "pool":
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes)]
    else:
        layers += [nn.Flatten(), nn.Linear(channels * image_size * image_size, num_classes)]
    net = nn.Sequential(*layers).to(dtype)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=g, dtype=torch.float64)
                               * math.sqrt(sigma_w2 / fan_in))
                m.bias.copy_(torch.randn(m.bias.shape, generator=g, dtype=torch.float64) * math.sqrt(sigma_b2))
    return net


class FisherOperator:
    """Matrix-free Fisher ``F = (1/T) sum_t J_t^T B_t J_t`` of ``model`` on inputs ``x`` (T, ...).

    ``matvec(v)`` costs one ``jvp`` and one ``vjp`` over the batch (the linearization is built once).
    All trainable parameters are included (``P = num_params``). Vectors are flat float64 numpy
    arrays (for scipy) or tensors, in ``model.named_parameters()`` order.
    """

    def __init__(self, model: nn.Module, x: Tensor, kind: str = "label_free", targets: Tensor | None = None):

        _check_kind(kind)
        self.model, self.x, self.kind = model, x, kind
        self.names = [n for n, p in model.named_parameters() if p.requires_grad]
        self.params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
        self.shapes = [self.params[n].shape for n in self.names]
        self.sizes = [self.params[n].numel() for n in self.names]
        self.num_params = int(sum(self.sizes))
        self.dtype, self.device = x.dtype, x.device
        self._call = functional_call
        self._jvp = jvp

        def f(params):
            return functional_call(model, params, (x,))

        self._f = f
        logits, self._vjp_fn = vjp(f, self.params)
        self.logits = logits.detach()
        self.T, self.C = self.logits.shape
        self.A = output_factor(self.logits, kind, targets)  # (T, C, R)
        self.matvecs = 0

    # flat <-> dict
    def _unflat(self, v: Tensor) -> dict[str, Tensor]:
        return {n: c.view(s) for n, c, s in zip(self.names, torch.split(v, self.sizes), self.shapes)}

    def _flat(self, d: dict[str, Tensor]) -> Tensor:
        return torch.cat([d[n].reshape(-1) for n in self.names])

    def matvec_tensor(self, v: Tensor) -> Tensor:
        """F v for a flat tensor v (P,)."""
        self.matvecs += 1
        with warnings.catch_warnings():  # torch's first forward-AD use scripts decompositions
            warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)
            _, Jv = self._jvp(self._f, (self.params,), (self._unflat(v.to(self.dtype)),))
        BJv = torch.einsum("tcr,tr->tc", self.A, torch.einsum("tcr,tc->tr", self.A, Jv))
        (g,) = self._vjp_fn(BJv)
        return self._flat(g) / self.T

    def matvec(self, v: np.ndarray) -> np.ndarray:
        v = torch.as_tensor(np.asarray(v).reshape(-1), dtype=self.dtype, device=self.device)
        return self.matvec_tensor(v).double().cpu().numpy()

    def linear_operator(self):
        """scipy ``LinearOperator`` (P x P, float64)."""
        return LinearOperator((self.num_params, self.num_params), matvec=self.matvec, rmatvec=self.matvec,
                              dtype=np.float64)

    def top_eigenvalues(self, k: int, *, method: str = "lanczos", seed: int = 0, tol: float = 1e-8,
                        maxiter: int = 1000) -> np.ndarray:
        """Largest ``k`` eigenvalues (descending). ``method``: "lanczos" (scipy ``eigsh``, implicitly
        restarted Lanczos, deterministic start vector from ``seed``) or "power" (k = 1 only)."""
        rng = np.random.default_rng(seed)
        v0 = rng.standard_normal(self.num_params)
        if method == "lanczos":
            if not 1 <= k < self.num_params:
                raise ValueError(f"k must be in 1..{self.num_params - 1}, got {k}")
            vals = eigsh(self.linear_operator(), k=k, which="LA", v0=v0, tol=tol, maxiter=maxiter,
                         return_eigenvectors=False)
            return np.sort(vals)[::-1]
        if method == "power":
            if k != 1:
                raise ValueError(f"power iteration gives one eigenvalue; got k={k}")
            v = torch.as_tensor(v0 / np.linalg.norm(v0), dtype=self.dtype, device=self.device)
            lam = torch.zeros((), dtype=self.dtype, device=self.device)
            for _ in range(maxiter):
                w = self.matvec_tensor(v)
                new = v @ w
                v = w / w.norm()
                if torch.abs(new - lam) <= tol * torch.abs(new):
                    lam = new
                    break
                lam = new
            return np.array([float(lam)])
        raise ValueError(f"unknown method {method!r}; allowed: ['lanczos', 'power']")

    def _per_sample_vjp_sqnorms(self, cot: Tensor, chunk: int | None = None) -> Tensor:
        """``|J_t^T c_t|^2`` for every sample t, cotangents ``cot`` (T, C)."""

        model, params, call = self.model, self.params, self._call

        def one(xt, ct):
            _, fn = vjp(lambda p: call(model, p, (xt.unsqueeze(0),))[0], params)
            (g,) = fn(ct)
            return sum(gi.pow(2).sum() for gi in g.values())

        return vmap(one, chunk_size=chunk)(self.x, cot)

    def trace(self, chunk: int | None = None) -> float:
        """Exact ``Tr F = (1/T) sum_t sum_r |J_t^T A_t[:, r]|^2`` (R per-sample vjps per sample)."""
        total = torch.zeros((), dtype=self.dtype, device=self.device)
        for r in range(self.A.shape[2]):
            total = total + self._per_sample_vjp_sqnorms(self.A[:, :, r], chunk).sum()
        return float(total) / self.T


def jacobian_dual_gram(model: nn.Module, x: Tensor, kind: str = "label_free",
                       targets: Tensor | None = None) -> Tensor:
    """Exact dual Gram ``(1/T) A^T J J^T A`` of any module from the full Jacobian (T C x P in
    memory: small models only; used to cross-check :class:`FisherOperator` and the MLP route)."""

    params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    jac = jacrev(lambda p: functional_call(model, p, (x,)))(params)
    T = x.shape[0]
    J = torch.cat([j.reshape(j.shape[0], j.shape[1], -1) for j in jac.values()], dim=2)  # (T, C, P)
    logits = functional_call(model, params, (x,)).detach()
    A = output_factor(logits, kind, targets)
    E = torch.einsum("tcr,tcp->trp", A, J).reshape(T * A.shape[2], -1)
    return E @ E.T / T
