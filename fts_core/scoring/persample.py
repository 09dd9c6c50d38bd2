"""Per-sample gradient statistics in one pass: mean gradient ĝ and empirical Fisher diagonal F̂.

:func:`per_sample_stats` returns a :class:`GradStats` (name -> tensor shaped like the parameter)::

    ĝ = (1/N) Σ_n g_n,      F̂ = (1/N) Σ_n g_n ⊙ g_n,      g_n = ∇_θP ℓ(f(x_n)/T, y_n)

(ℓ: cross-entropy with the true labels, T: logit temperature, 1 by default). The model must be in
eval mode (samples must not interact). ``strategy`` (:data:`STRATEGIES`, all exact): ``"hooks"``
(per-layer rules of :mod:`fts_core.scoring.layer_rules`, where :func:`hooks_supported` and checks on
the first chunk say they are exact), ``"vmap"``, ``"loop"``, or ``"auto"`` (hooks, else vmap, else the
loop, on the CPU only). ``conv_method``, how hooks get a Conv2d's weight gradients: ``"grouped"``
(samples as groups), ``"per_sample"`` (one per sample; ``unfold`` and ``mm`` for few output positions)
or ``"auto"`` (grouped on accelerators and, on the CPU, up to :data:`CPU_GROUPED_MAX_WEIGHTS` weights).
Which layers take which path: ``book/guide.md``; what each costs: ``benchmarks/README.md``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap
from tqdm.auto import tqdm

from fts_core.masks.prunable import owner
from fts_core.scoring.layer_rules import RULES, NotExact, accumulate_tap, add_squares, padded_input, patches
from fts_core.scoring.gradients import Batches, cross_entropy_sum, requires_grad, zeros_for_none

__all__ = ["STRATEGIES", "CONV_METHODS", "GradStats", "per_sample_stats", "check_strategy", "choose_strategy", "conv_method_for",
           "hooks_supported", "hooked_owner", "register_equivalent", "HooksMismatch"]

STRATEGIES = ("auto", "loop", "hooks", "vmap")
CONV_METHODS = ("auto", "grouped", "per_sample")
DEFAULT_CHUNK = 32
#: samples in the first chunk of the ``"hooks"`` strategy, the one checked against autograd
CHECK_SAMPLES = 4
#: CPU: grouped per-sample convolutions only up to this many weights per layer (slower above)
CPU_GROUPED_MAX_WEIGHTS = 50_000
#: CPU per_sample: layers with at most this many output positions use unfold + mm (see below)
CPU_MM_MAX_POSITIONS = 64


@dataclass
class GradStats:
    """``mean_grad`` ĝ and ``fisher`` F̂ (name -> tensor shaped like the parameter), N samples."""

    mean_grad: dict[str, Tensor]
    fisher: dict[str, Tensor]
    num_samples: int
    strategy: str


# --------------------------------------------------------------------------- strategy choice


#: methods a subclass may override without changing what the layer computes
_HARMLESS = frozenset({"__init__", "__repr__", "extra_repr", "reset_parameters", "_load_from_state_dict",
                       "__setstate__", "_save_to_state_dict"})
#: subclass -> the stock layer it computes exactly (see :func:`register_equivalent`)
_EQUIVALENT: dict[type, type] = {}


def register_equivalent(cls: type, stock: type) -> type:
    """Declare that layer class ``cls`` (a subclass of ``stock``, a layer type of
    :data:`fts_core.scoring.layer_rules.RULES`) computes exactly what ``stock`` computes, although it overrides some of its
    methods, so the ``"hooks"`` strategy may use ``stock``'s per-sample rule for it. Returns ``cls``."""
    if stock not in RULES or not (isinstance(cls, type) and issubclass(cls, stock)):
        raise TypeError(f"register_equivalent({cls!r}, {stock!r}): cls must subclass one of "
                        f"{[t.__name__ for t in RULES]}")
    _EQUIVALENT[cls] = stock
    return cls


def _stock_layer(module: nn.Module) -> type | None:
    """The stock layer class whose per-sample rule is exact for ``module``, or None."""
    cls = type(module)
    if cls in RULES or cls in _EQUIVALENT:
        return _EQUIVALENT.get(cls, cls)
    stock = next((t for t in cls.__mro__ if t in RULES), None)
    if stock is None:
        return None
    for klass in cls.__mro__[:cls.__mro__.index(stock)]:  # the subclasses between cls and the stock layer
        changed = [k for k, v in vars(klass).items() if callable(v) and hasattr(stock, k) and k not in _HARMLESS]
        if changed:
            return None
    return stock


def hooked_owner(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    """``(module, attribute path)`` whose hook computes parameter ``name``: its owner, or the
    outermost ancestor whose rule takes the whole call (``("attn", "out_proj.weight")``)."""
    parts = name.split(".")
    for i in range(len(parts) - 1):
        module = model.get_submodule(".".join(parts[:i]))
        stock = _stock_layer(module)
        if stock is not None and RULES[stock].whole_call:
            return module, ".".join(parts[i:])
    return owner(model, name)


def hooks_supported(model: nn.Module, params: dict[str, Tensor]) -> str | None:
    """None when the ``"hooks"`` strategy is exact for every prunable parameter, else the reason
    (naming the parameter). What is only known while running is checked on the first chunk."""
    counts: dict[int, int] = {}
    for _, p in model.named_parameters(remove_duplicate=False):
        counts[id(p)] = counts.get(id(p), 0) + 1
    for name, p in params.items():
        module, attr = hooked_owner(model, name)
        stock = _stock_layer(module)
        if attr not in ("weight", "bias") and not (stock is not None and RULES[stock].whole_call):
            return f"{name}: not a weight/bias"
        if stock is None:
            kind = type(module).__name__
            if any(isinstance(module, t) for t in RULES):
                return (f"{name}: {kind} overrides a method of its layer (register it with "
                        "fts_core.scoring.persample.register_equivalent if it computes the same)")
            return f"{name}: owner {kind} not supported"
        if counts.get(id(p), 0) > 1:
            return f"{name}: the parameter is shared with another module"
        if module._forward_hooks or module._forward_pre_hooks:
            return f"{name}: {type(module).__name__} has forward hooks of its own"
        if (why := RULES[stock].check(module)) is not None:
            return f"{name}: {why}"
    return None


def check_strategy(strategy: Any, name: str = "strategy") -> str:
    """``strategy`` if it is one of :data:`STRATEGIES`, else ``ValueError`` naming ``name``."""
    if strategy not in STRATEGIES:
        raise ValueError(f"{name}={strategy!r}: allowed: {', '.join(STRATEGIES)}")
    return strategy


def choose_strategy(model: nn.Module, params: dict[str, Tensor], strategy: str = "auto",
                    name: str = "strategy") -> str:
    """Resolve ``strategy`` (one of :data:`STRATEGIES`) for this model before running: ``"hooks"``
    where :func:`hooks_supported`, else ``"vmap"`` (which falls back to the loop on the CPU when
    vmap cannot run the model). ``name``: the argument's name in error messages."""
    check_strategy(strategy, name)
    if strategy != "auto":
        if strategy == "hooks" and (why := hooks_supported(model, params)) is not None:
            raise ValueError(f"{name}='hooks' cannot handle {why}; use 'auto', 'vmap' or 'loop'")
        return strategy
    return "hooks" if hooks_supported(model, params) is None else "vmap"


class HooksMismatch(NotExact):
    """The ``"hooks"`` strategy found on the first chunk that it would not be exact for a layer."""


# --------------------------------------------------------------------------- public entry
def per_sample_stats(model: nn.Module, params: dict[str, Tensor], batches: Batches, *,
                     strategy: str = "auto", chunk_size: int | None = None, temperature: float = 1.0,
                     conv_method: str = "auto", quiet: bool = True) -> GradStats:
    """ĝ and F̂ of ``params`` (name -> Parameter of ``model``) over ``batches`` [(x, y)].

    The model must already be in the mode to score in (eval for BatchNorm); it is not
    modified. ``chunk_size`` bounds the samples per vectorised step (default 32);
    ``conv_method`` forces one Conv2d method of the ``"hooks"`` strategy (see the module doc).
    """
    if conv_method not in CONV_METHODS:
        raise ValueError(f"unknown conv_method {conv_method!r}; allowed: {CONV_METHODS}")
    chosen = choose_strategy(model, params, strategy)
    chunk = int(chunk_size or DEFAULT_CHUNK)
    if chunk < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size!r}")
    names = list(params)
    plist = [params[n] for n in names]
    total = sum(int(x.shape[0]) for x, _ in batches)
    with requires_grad(plist):
        if chosen == "hooks":
            try:
                g_sum, f_sum = _accumulated(plist, total, quiet, "hooks", lambda g, f, bar: _run_hooks(
                    model, names, batches, g, f, temperature, chunk, conv_method, bar))
            except NotExact as err:
                if strategy == "hooks":
                    raise ValueError(f"strategy 'hooks' is not exact here: {err}; use strategy='vmap' or 'loop' "
                                     "(or 'auto', which picks one)") from None
                chosen = "vmap"
        if chosen == "vmap":
            try:
                g_sum, f_sum = _accumulated(plist, total, quiet, "vmap", lambda g, f, bar: _run_vmap(
                    model, names, batches, g, f, temperature, chunk, bar))
            except Exception as err:  # noqa: BLE001 - vmap cannot run every model (in-place ops, .item(), ...)
                if strategy == "vmap" or plist[0].device.type != "cpu":
                    raise RuntimeError(f"strategy 'vmap' cannot run this model ({type(err).__name__}: {err}); "
                                       "use strategy='loop'") from err
                chosen = "loop"
        if chosen == "loop":
            g_sum, f_sum = _accumulated(plist, total, quiet, "loop", lambda g, f, bar: _run_loop(
                model, plist, batches, g, f, temperature, bar))
    if total == 0:
        raise ValueError("scoring data is empty")
    torch._foreach_div_(g_sum, float(total))
    torch._foreach_div_(f_sum, float(total))
    g_sum = [t.contiguous() for t in g_sum]
    f_sum = [t.contiguous() for t in f_sum]
    return GradStats(dict(zip(names, g_sum)), dict(zip(names, f_sum)), total, chosen)


def _accumulated(plist, total, quiet, label, run) -> tuple[list[Tensor], list[Tensor]]:
    """Zeroed accumulators for Σ g_n and Σ g_n², filled by ``run(g_sum, f_sum, bar)``."""
    g_sum = [torch.zeros_like(p, memory_format=torch.contiguous_format) for p in plist]
    f_sum = [torch.zeros_like(p, memory_format=torch.contiguous_format) for p in plist]
    bar = tqdm(total=total, disable=quiet, desc=f"per-sample ({label})", unit="sample")
    try:
        run(g_sum, f_sum, bar)
    finally:
        bar.close()
    return g_sum, f_sum


# --------------------------------------------------------------------------- loop
def _run_loop(model, plist, batches, g_sum, f_sum, temperature, bar) -> None:
    first = True
    for x, y in batches:
        for i in range(x.shape[0]):
            loss = cross_entropy_sum(model(x[i:i + 1]), y[i:i + 1], temperature)
            grads = torch.autograd.grad(loss, plist, allow_unused=True)
            if any(g is None for g in grads):
                grads = zeros_for_none(grads, plist)
            if first:  # accumulate in the gradients' own memory layout (channels_last or not)
                for j, g in enumerate(grads):
                    if g.stride() != g_sum[j].stride():
                        g_sum[j] = torch.zeros_like(g)
                        f_sum[j] = torch.zeros_like(g)
                first = False
            torch._foreach_add_(g_sum, grads)
            torch._foreach_addcmul_(f_sum, grads, grads)
            del grads, loss
        bar.update(int(x.shape[0]))


# --------------------------------------------------------------------------- hooks
def conv_method_for(module: nn.Conv2d, device: torch.device, conv_method: str = "auto") -> str:
    """How the ``"hooks"`` strategy gets a Conv2d's per-sample weight-gradients (see module doc)."""
    if conv_method != "auto":
        return conv_method
    if device.type == "cpu" and module.weight.numel() > CPU_GROUPED_MAX_WEIGHTS:
        return "per_sample"
    return "grouped"


def _accumulate_conv_per_sample(module: nn.Conv2d, inp: Tensor, gout: Tensor, g: Tensor, f: Tensor) -> None:
    """``g += Σ_n ∂ℓ_n/∂W``, ``f += Σ_n (∂ℓ_n/∂W)²`` one sample at a time from the chunk's saved
    input (B, Cin, H, W) and output-gradient (B, Cout, H', W') of a Conv2d with groups 1. Few
    output positions (≤ :data:`CPU_MM_MAX_POSITIONS`): the input's patches once (``patches``), then
    per sample one ``mm`` into a reused buffer (no allocation per sample); else the library's
    weight-gradient per sample."""
    x = padded_input(module, inp)
    cout, positions = gout.shape[1], gout.shape[2] * gout.shape[3]
    if positions <= CPU_MM_MAX_POSITIONS:
        cols = patches(x, module.kernel_size, module.stride, module.dilation)  # (B, Cin*kh*kw, L)
        go = gout.reshape(gout.shape[0], cout, positions)
        g2, f2 = g.view(cout, -1), f.view(cout, -1)
        w = torch.empty_like(g2)
        for n in range(inp.shape[0]):
            torch.mm(go[n], cols[n].t(), out=w)
            g2.add_(w)
            f2.addcmul_(w, w)
        return
    for n in range(inp.shape[0]):  # one sample's weight-gradient at a time, reduced while cached
        w = torch.nn.grad.conv2d_weight(x[n:n + 1], module.weight.shape, gout[n:n + 1], stride=module.stride,
                                        padding=0, dilation=module.dilation)
        g.add_(w)
        f.addcmul_(w, w)


def _accumulate(module: nn.Module, inp: Tensor, gout: Tensor, slots: dict[str, int],
                g_sum: list[Tensor], f_sum: list[Tensor], conv_method: str) -> None:
    """Add one chunk's Σ_n g_n and Σ_n g_n² of ``module``'s prunable parameters (``slots``:
    attribute -> accumulator index) to ``g_sum``/``f_sum``, by the layer's rule."""
    rest = dict(slots)
    if (isinstance(module, nn.Conv2d) and module.groups == 1 and "weight" in slots
            and conv_method_for(module, inp.device, conv_method) == "per_sample"):
        i = rest.pop("weight")
        _accumulate_conv_per_sample(module, inp, gout, g_sum[i], f_sum[i])
    if rest:
        RULES[_stock_layer(module)].accumulate(module, inp, gout, {a: g_sum[i] for a, i in rest.items()},
                                               {a: f_sum[i] for a, i in rest.items()})


def _run_hooks(model, names, batches, g_sum, f_sum, temperature, chunk, conv_method, bar) -> None:
    index = {n: i for i, n in enumerate(names)}
    by_module: dict[nn.Module, dict[str, int]] = {}
    for n in names:
        module, attr = hooked_owner(model, n)
        by_module.setdefault(module, {})[attr] = index[n]
    module_names = {m: n for n, m in model.named_modules()}
    state: dict[str, Any] = {"in_rule": False}

    def make_fwd(module: nn.Module, slots: dict[str, int]):
        rule = RULES[_stock_layer(module)]

        def tap_hook(tap):
            def on_grad(gout: Tensor) -> None:
                accumulate_tap(tap, gout.detach(), {a: g_sum[i] for a, i in slots.items()},
                               {a: f_sum[i] for a, i in slots.items()})
            return on_grad

        def fwd(mod, args, kwargs, output):
            if not torch.is_grad_enabled() or state["in_rule"]:  # a rule may call the layer itself
                return None
            if module in state["seen"]:
                raise HooksMismatch(f"layer {module_names[module]!r} ({type(mod).__name__}) is called twice in one "
                                    "forward")
            state["seen"].add(module)
            if (taps := state["taps"].pop(module, None)) is not None:  # the call was re-expressed
                for out, tap in taps:  # (the hook must not hold ``out``: a cycle would keep its graph alive)
                    state["outputs"].append(out)
                    out.register_hook(tap_hook(tap))
                return None
            if rule.whole_call:
                saved = (_detached(args), _detached(kwargs))
                output = output[0] if isinstance(output, tuple) else output
            else:
                saved = args[0].detach()
                if saved.dim() == 0 or saved.shape[0] != state["samples"]:  # the rules take dim 0 as the samples
                    raise HooksMismatch(f"layer {module_names[module]!r} ({type(mod).__name__}) gets an input of shape "
                                        f"{tuple(saved.shape)} for {state['samples']} samples: its rule takes the "
                                        "first dimension as the samples")
            state["outputs"].append(output)

            def on_grad(gout: Tensor) -> None:
                state["in_rule"] = True
                try:
                    _accumulate(module, saved, gout.detach(), slots, g_sum, f_sum, conv_method)
                except NotExact as err:
                    raise HooksMismatch(f"layer {module_names[module]!r} ({type(mod).__name__}): {err}") from None
                finally:
                    state["in_rule"] = False

            if output.requires_grad:
                output.register_hook(on_grad)
            return None
        return fwd

    handles = [m.register_forward_hook(make_fwd(m, s), with_kwargs=True) for m, s in by_module.items()]
    every_slot = [(module, attr, i) for module, attrs in by_module.items() for attr, i in attrs.items()]
    state["taps"] = {}
    reexpressed = [m for m in by_module if RULES[_stock_layer(m)].reexpress is not None and "forward" not in vars(m)]
    first = True
    try:
        for m in reexpressed:
            m.forward = _reexpressing_forward(m, state, module_names[m])
        for x, y in batches:
            starts = list(range(0, x.shape[0], chunk))
            if first and x.shape[0] > CHECK_SAMPLES:  # a small first chunk: its check adds a weight-gradient pass
                starts = [0] + list(range(CHECK_SAMPLES, x.shape[0], chunk))
            for start, stop in zip(starts, starts[1:] + [x.shape[0]]):
                xc = x[start:stop]
                state["seen"], state["outputs"], state["samples"] = set(), [], stop - start
                loss = cross_entropy_sum(model(xc), y[start:stop], temperature)
                # backward to the hooked layers' outputs only: activations' gradients, no weight
                # gradients (but on the first chunk, in the same pass, the batch gradient it is
                # checked against), and no gradient of the input (which may be integer token ids)
                outputs = [o for o in state["outputs"] if o.requires_grad]
                checked = [m.get_parameter(a) for m, a, _ in every_slot] if first else []
                grads = torch.autograd.grad(loss, outputs + checked, allow_unused=True) if outputs or checked else ()
                if first:
                    _check_first_chunk(every_slot, module_names, state["seen"], grads[len(outputs):], g_sum)
                    first = False
                bar.update(int(xc.shape[0]))
    finally:
        for h in handles:
            h.remove()
        for m in reexpressed:
            vars(m).pop("forward", None)


def _reexpressing_forward(module: nn.Module, state: dict, name: str):
    """``module``'s forward while the hooks run: its rule's re-expression where that covers the call
    (the taps are left in ``state["taps"]`` for the forward hook), else the module's own forward.
    The first re-expressed call is compared with the module's own output, else
    :class:`HooksMismatch` naming the layer."""
    own = type(module).forward.__get__(module)
    reexpress = RULES[_stock_layer(module)].reexpress
    checked = []

    def forward(*args, **kwargs):
        if not torch.is_grad_enabled() or state["in_rule"] or (same := reexpress(module, args, kwargs)) is None:
            return own(*args, **kwargs)
        output, taps = same
        if not checked:
            with torch.no_grad():
                theirs = own(*args, **kwargs)[0]
            mine = output[0].detach()
            tol = 1e-10 if mine.dtype == torch.float64 else 1e-4
            if mine.shape != theirs.shape or not torch.allclose(mine, theirs, rtol=tol,
                                                                 atol=tol * float(theirs.abs().max())):
                raise HooksMismatch(f"layer {name!r} ({type(module).__name__}): its re-expressed call does not "
                                    "reproduce the module's output")
            checked.append(True)
        state["taps"][module] = taps
        return output
    return forward


def _check_first_chunk(slots, module_names, seen, grads, g_sum) -> None:
    """After the first chunk: Σ_n g_n from the hooks must equal autograd's gradient of the chunk's
    summed loss (``grads``, per ``slots`` entry (module, attribute, accumulator index)) for every
    prunable parameter (a layer that was not called must get none), else :class:`HooksMismatch`
    naming the layer."""
    for (module, attr, i), full in zip(slots, grads):
        where = f"layer {module_names[module]!r} ({type(module).__name__})"
        if full is None:
            if module in seen and bool(g_sum[i].any()):
                raise HooksMismatch(f"{where}: its {attr} gets per-sample gradients but no batch gradient")
            continue
        if module not in seen:
            raise HooksMismatch(f"{where}: its {attr} is used without calling the layer")
        err = float((g_sum[i] - full.reshape(g_sum[i].shape)).norm())
        scale = float(full.norm())
        tol = (1e-9 if full.dtype == torch.float64 else 1e-3) * scale + 1e-30
        if err > tol:
            raise HooksMismatch(f"{where}: its per-sample {attr} gradients do not add up to autograd's batch "
                                f"gradient (relative difference {err / max(scale, 1e-30):.2g}); the layer or a use "
                                "of its parameters outside the layer's call is not what the rule assumes")


def _detached(obj: Any) -> Any:
    """``obj`` (a tuple, list or dict of call arguments) with its tensors detached."""
    if isinstance(obj, Tensor):
        return obj.detach()
    if isinstance(obj, (tuple, list)):
        return type(obj)(_detached(v) for v in obj)
    if isinstance(obj, dict):
        return {k: _detached(v) for k, v in obj.items()}
    return obj


# --------------------------------------------------------------------------- vmap
def _run_vmap(model, names, batches, g_sum, f_sum, temperature, chunk, bar) -> None:
    prunable = set(names)
    fixed = {n: p.detach() for n, p in model.named_parameters() if n not in prunable}
    fixed.update(dict(model.named_buffers()))
    train_params = {n: p.detach() for n, p in model.named_parameters() if n in prunable}

    def sample_loss(tp, x, y):
        out = functional_call(model, {**fixed, **tp}, (x.unsqueeze(0),))
        return cross_entropy_sum(out, y.unsqueeze(0), temperature)

    per_sample = vmap(grad(sample_loss), in_dims=(None, 0, 0))
    for x, y in batches:
        for start in range(0, x.shape[0], chunk):
            gs = per_sample(train_params, x[start:start + chunk], y[start:start + chunk])
            for i, n in enumerate(names):
                g_sum[i].add_(gs[n].sum(0))
                add_squares(f_sum[i], gs[n])
            del gs
            bar.update(min(chunk, int(x.shape[0]) - start))
