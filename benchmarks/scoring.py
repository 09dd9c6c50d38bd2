"""Benchmark: FTS scoring (per-sample ĝ and F̂) against its peers, side by side in one run.

    python benchmarks/scoring.py            # the paper's networks at full width and the zoo, N=128 (minutes)
    python benchmarks/scoring.py --quick    # width 0.25, N=32: a smoke test (checks that it runs, not its targets)

Models (``--models``): ``resnet18`` and ``vgg19`` (the paper's CIFAR networks, ``--width``), and
three of the models users bring, at 32x32 inputs and 10 classes: ``mobilenet_v3_small``
(torchvision; depthwise convolutions, squeeze-excitation, Hardswish), ``shufflenet_v2``
(torchvision ``shufflenet_v2_x1_0``; grouped and depthwise convolutions, channel shuffle) and
``vit`` (torchvision ``VisionTransformer``, patch 4, 6 layers, 6 heads, width 192: a small ViT with
``nn.MultiheadAttention``, LayerNorm and token-wise Linear layers).

Every method runs in a fresh subprocess, in eval mode, on the same synthetic CIFAR-shaped
batch, and computes gradients w.r.t. the **same parameter set**: the prunable weights of
``fts_core.masks.prunable_parameters(model)`` (conv/linear weights except the classifier),
the set ``ours`` scores (for the ViT this includes each attention block's ``out_proj``); the
other parameters are held fixed.

* ``floor``    one batched forward+backward over the N samples (gradient of the prunable set);
* ``activations`` the part of ``ours`` that is not per-sample: in ours' chunks (32), the forward and the
               backward to the outputs of the layers holding prunable weights, no weight gradient.
               Not a peer: with the loop it gives the speed target's budget, ``loop/2 - activations``,
               the time left for every per-sample product and square if ours is to be 2x faster than
               the loop (printed beside what ours spends there, ``ours - activations``);
* ``loop``     the plain batch-size-1 loop of the authors: per sample, the gradient of the
               prunable set, accumulate ``g`` and ``g**2``;
* ``vmap32``   ``torch.func.vmap(grad)`` over chunks of 32 w.r.t. the prunable set, sum and
               sum of squares;
* ``backpack`` BackPACK ``SumGradSquared`` (non-prunable parameters frozen, activations not in place);
* ``opacus``   Opacus ``GradSampleModule`` per-sample gradients (non-prunable parameters frozen, activations
               not in place;
               Conv2d/Linear switched to train mode, where Opacus records activations, while
               BatchNorm stays in eval mode);
* ``ours``     ``fts_core.score("fts", ...)`` with the default (auto) strategy.

Peak memory is the **increase over the process's baseline** taken after imports, model and
data creation (and the method's setup), so the interpreter, torch and the model itself do not
dilute the ratios: on CPU the resident-set high-water mark ``VmHWM`` is reset to the current
RSS at the baseline (``/proc/self/clear_refs``) and read at the end (fallback where that is
unavailable: the ``ru_maxrss`` delta); on CUDA ``torch.cuda.max_memory_allocated`` minus the
allocated bytes at the baseline.

Failures (exit status 1, not with ``--quick``): a crash of ``floor``, ``activations``, ``loop``,
``vmap32`` or ``ours`` (the optional peers BackPACK/Opacus are reported as skipped when not installed and as
"does not run" when they fail on a model, and as "partial" when they return statistics for only
part of the prunable weights, e.g. not for ``nn.MultiheadAttention``'s projections, which no module
hook of theirs sees; a partial peer is not compared), ``ours`` not faster than every peer that ran,
``ours`` less than 2x faster than the loop, ``ours`` peak memory increase > 1.5x the floor's.
Reported only: ``ours`` ≤ 2x the floor. Seconds are the median of ``--repeats`` runs after one
warm-up run on 2 samples; with ``--rounds R`` every method's subprocess runs R times, the methods
interleaved (floor, loop, ..., ours, floor, loop, ...), and the medians over the rounds are reported:
on a machine whose speed drifts (a shared host), a ratio of methods measured minutes apart is
otherwise off by more than the differences it is meant to show.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import time

PEERS = ("loop", "vmap32", "backpack", "opacus")
OPTIONAL = ("backpack", "opacus")  # an ImportError of these is a skip, never a failure
METHODS = ("floor", "activations", *PEERS, "ours")
PAPER_MODELS = ("resnet18", "vgg19")
ZOO_MODELS = ("mobilenet_v3_small", "shufflenet_v2", "vit")
MIN_SPEEDUP_OVER_LOOP = 2.0


def build(name: str, width: float):
    """The benchmark's model ``name`` (3x32x32 inputs, 10 classes), seeded, in eval mode."""
    import torch
    import torchvision

    from fts_core.setup.models import build_model

    torch.manual_seed(0)
    if name in PAPER_MODELS:
        return build_model(name, width=width).eval()
    if name == "mobilenet_v3_small":
        return torchvision.models.mobilenet_v3_small(num_classes=10).eval()
    if name == "shufflenet_v2":
        return torchvision.models.shufflenet_v2_x1_0(num_classes=10).eval()
    if name == "vit":
        net = torchvision.models.VisionTransformer(image_size=32, patch_size=4, num_layers=6, num_heads=6,
                                                   hidden_dim=192, mlp_dim=384, num_classes=10)
        net.heads.head.reset_parameters()  # torchvision starts the classifier at zero: no gradient below it
        return net.eval()
    raise ValueError(f"unknown model {name!r}; allowed: {PAPER_MODELS + ZOO_MODELS}")


# --------------------------------------------------------------------------- worker side
def _method(name: str, model, prunable: dict):
    """A function ``run(xs, ys)`` computing ``name``'s statistics w.r.t. ``prunable``."""
    import torch
    import torch.nn.functional as F

    names = list(prunable)
    plist = [prunable[n] for n in names]
    if name in ("backpack", "opacus"):  # these libraries follow requires_grad: freeze the rest
        keep = {id(p) for p in plist}
        for p in model.parameters():
            p.requires_grad_(id(p) in keep)
        for m in model.modules():
            if getattr(m, "inplace", False) is True:
                m.inplace = False  # their module hooks refuse in-place ops on their outputs (same values)
            if name == "opacus" and isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                m.train()  # Opacus records activations only in train mode; these layers act the same (BN stays eval)
    if name == "floor":
        def run(xs, ys):
            torch.autograd.grad(F.cross_entropy(model(xs), ys, reduction="sum"), plist)
        return run
    if name == "activations":
        from fts_core.scoring.persample import DEFAULT_CHUNK, hooked_owner

        outputs = []
        layers = {hooked_owner(model, n)[0] for n in names}  # nn.MultiheadAttention for its out_proj
        for layer in layers:
            layer.register_forward_hook(lambda mod, args, out: outputs.append(out[0] if isinstance(out, tuple) else out))

        def run(xs, ys):
            for s in range(0, xs.shape[0], DEFAULT_CHUNK):
                outputs.clear()
                loss = F.cross_entropy(model(xs[s:s + DEFAULT_CHUNK]), ys[s:s + DEFAULT_CHUNK], reduction="sum")
                torch.autograd.grad(loss, [o for o in outputs if o.requires_grad])
            outputs.clear()
        return run
    if name == "loop":
        def run(xs, ys):
            g = [torch.zeros_like(p) for p in plist]
            f = [torch.zeros_like(p) for p in plist]
            for i in range(xs.shape[0]):
                grads = torch.autograd.grad(F.cross_entropy(model(xs[i:i + 1]), ys[i:i + 1]), plist)
                for a, b, gi in zip(g, f, grads):
                    a += gi
                    b += gi * gi
        return run
    if name == "vmap32":
        from torch.func import functional_call, grad, vmap

        fixed = {k: v.detach() for k, v in model.named_parameters() if k not in prunable}
        fixed.update({k: v.detach() for k, v in model.named_buffers()})
        params = {k: prunable[k].detach() for k in names}

        def loss(p, xi, yi):
            return F.cross_entropy(functional_call(model, {**fixed, **p}, (xi.unsqueeze(0),)), yi.unsqueeze(0))

        per = vmap(grad(loss), in_dims=(None, 0, 0))

        def run(xs, ys):
            g = {k: torch.zeros_like(v) for k, v in params.items()}
            f = {k: torch.zeros_like(v) for k, v in params.items()}
            for s in range(0, xs.shape[0], 32):
                gs = per(params, xs[s:s + 32], ys[s:s + 32])
                for k in g:
                    g[k] += gs[k].sum(0)
                    f[k] += gs[k].square().sum(0)
                del gs
        return run
    if name == "backpack":
        from backpack import backpack, extend
        from backpack.extensions import SumGradSquared

        ext = extend(model)
        lossf = extend(torch.nn.CrossEntropyLoss(reduction="sum"))

        def run(xs, ys):
            ext.zero_grad(set_to_none=True)
            with backpack(SumGradSquared()):
                lossf(ext(xs), ys).backward()
            ext.zero_grad(set_to_none=True)
            covered = 0
            for p in plist:  # BackPACK skips parameters its module hooks never see (e.g. MHA's)
                if getattr(p, "sum_grad_squared", None) is not None:
                    covered += p.numel()
                    del p.sum_grad_squared
            return covered
        return run
    if name == "opacus":
        from opacus import GradSampleModule

        gsm = GradSampleModule(model)

        def run(xs, ys):
            gsm.zero_grad(set_to_none=True)
            F.cross_entropy(gsm(xs), ys, reduction="sum").backward()
            covered = 0
            for p in plist:  # Opacus records only the modules it has a grad-sampler for
                if getattr(p, "grad_sample", None) is not None:
                    p.grad_sample.square().sum(0)
                    p.grad_sample = None
                    covered += p.numel()
            return covered
        return run
    if name == "ours":
        from fts_core.scoring import score

        def run(xs, ys):
            score("fts", model, [(xs, ys)], prunable=prunable)
        return run
    raise ValueError(f"unknown method {name!r}; allowed: {METHODS}")


def _status_kib(key: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


class _PeakMemory:
    """Peak memory increase (MiB) over the baseline taken at construction (see module docstring)."""

    def __init__(self, device) -> None:
        import torch

        gc.collect()
        self.cuda = device.type == "cuda"
        if self.cuda:
            torch.cuda.synchronize()
            self.base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            return
        self.hwm = False
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")  # reset VmHWM to the current RSS
            self.hwm = _status_kib("VmHWM") is not None
        except OSError:
            pass
        self.base = _status_kib("VmRSS") if self.hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    def increase_mb(self) -> float:
        import torch

        if self.cuda:
            torch.cuda.synchronize()
            return (torch.cuda.max_memory_allocated() - self.base) / 2**20
        peak = _status_kib("VmHWM") if self.hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return max(peak - self.base, 0) / 1024  # KiB on Linux


def worker(args: argparse.Namespace) -> int:
    import torch

    from fts_core.masks import prunable_parameters

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model = build(args.model, args.width).to(device)
    prunable = prunable_parameters(model)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.n, 3, 32, 32, generator=g).to(device)
    y = torch.randint(0, 10, (args.n,), generator=g).to(device)
    try:
        run = _method(args.worker, model, prunable)
    except ImportError as err:
        if args.worker not in OPTIONAL:
            raise
        print(json.dumps({"skipped": f"not installed ({err.name})"}))
        return 0
    memory = _PeakMemory(device)  # baseline: after imports, model, data and the method's setup
    try:
        covered = run(x[:2], y[:2])  # warm-up; a peer returns how many prunable weights it covered
    except Exception as err:  # noqa: BLE001 - an optional peer that cannot run this model is reported
        if args.worker not in OPTIONAL:
            raise
        print(json.dumps({"skipped": f"does not run ({type(err).__name__}: {str(err)[:80]})"}))
        return 0
    times = []
    for _ in range(args.repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        run(x, y)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    total = sum(p.numel() for p in prunable.values())
    print(json.dumps({"seconds": statistics.median(times), "peak_mb": memory.increase_mb(),
                      "params": total, "covered": total if covered is None else covered}))
    return 0


# --------------------------------------------------------------------------- driver side
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="width 0.25, N=32, 1 repeat: a smoke test (exit 1 only when a method crashes)")
    ap.add_argument("--models", default=",".join(PAPER_MODELS + ZOO_MODELS))
    ap.add_argument("--width", type=float, default=None)
    ap.add_argument("--n", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=1,
                    help="run every method this many times, interleaved, and take the medians (a noisy machine)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cuda" if _cuda() else "cpu")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--model", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.width = args.width if args.width is not None else (0.25 if args.quick else 1.0)
    args.n = args.n if args.n is not None else (32 if args.quick else 128)
    args.repeats = args.repeats if args.repeats is not None else (1 if args.quick else 3)
    if args.worker:
        return worker(args)
    methods = [m for m in args.methods.split(",") if m]
    bad = [m for m in methods if m not in METHODS]
    if bad or "ours" not in methods or "floor" not in methods:
        ap.error(f"--methods must include floor and ours, from {METHODS}; got {methods}")
    print(f"device {args.device}, width {args.width}, N={args.n}, threads {args.threads}, "
          f"median of {args.repeats} in each of {args.rounds} interleaved round(s); every method: gradients w.r.t. the same prunable weights "
          "(conv/linear except the classifier), eval mode; peak MB = increase over the process's "
          "baseline after imports and model/data creation", flush=True)
    failures, missed = [], []
    bad = [m for m in args.models.split(",") if m not in PAPER_MODELS + ZOO_MODELS]
    if bad:
        ap.error(f"unknown model(s) {bad}; allowed: {PAPER_MODELS + ZOO_MODELS}")
    for model in args.models.split(","):
        runs: dict[str, list[dict]] = {m: [] for m in methods}
        for _ in range(args.rounds):  # methods interleaved, so a drift of the machine's speed hits all alike
            for m in list(runs):
                cmd = [sys.executable, os.path.abspath(__file__), "--worker", m, "--model", model,
                       "--width", str(args.width), "--n", str(args.n), "--repeats", str(args.repeats),
                       "--threads", str(args.threads), "--device", args.device]
                out = subprocess.run(cmd, capture_output=True, text=True)
                try:
                    if out.returncode != 0:
                        raise RuntimeError(f"exit status {out.returncode}")
                    runs[m].append(json.loads(out.stdout.strip().splitlines()[-1]))
                except (RuntimeError, ValueError, IndexError) as err:
                    print(f"--- {model}/{m} crashed ({err}):\n{out.stderr[-2000:]}", file=sys.stderr)
                    failures.append(f"{model}/{m}: crashed ({err})")
                    del runs[m]
        res = {m: _median_run(r) for m, r in runs.items()}
        if "floor" not in res or "ours" not in res:
            continue
        floor, ours = res["floor"], res["ours"]
        print(f"\n{model} ({ours['params']:,} prunable weights)")
        print(f"  {'method':<11} {'seconds':>8} {'x floor':>8} {'ours/it':>8} {'peak MB':>8} {'x floor':>8}")
        for m, r in res.items():
            if "skipped" in r:
                print(f"  {m:<11} skipped: {r['skipped']}")
                continue
            mem_ratio = r["peak_mb"] / floor["peak_mb"] if floor["peak_mb"] > 0 else float("inf")
            partial = r["covered"] < r["params"]
            note = f"  partial: covers {r['covered'] / r['params']:.0%} of the weights, not compared" if partial else ""
            print(f"  {m:<11} {r['seconds']:8.3f} {r['seconds'] / floor['seconds']:8.2f} "
                  f"{ours['seconds'] / r['seconds']:8.2f} {r['peak_mb']:8.0f} {mem_ratio:8.2f}{note}")
        for m in PEERS:
            if m in res and "seconds" in res[m] and res[m]["covered"] == res[m]["params"] \
                    and ours["seconds"] >= res[m]["seconds"]:
                missed.append(f"{model}: ours {ours['seconds']:.3f}s not faster than {m} {res[m]['seconds']:.3f}s")
        if "seconds" in res.get("loop", {}):
            speedup = res["loop"]["seconds"] / ours["seconds"]
            print(f"  ours vs the loop: {speedup:.2f}x faster")
            if "seconds" in res.get("activations", {}):
                act = res["activations"]["seconds"]
                print(f"  {MIN_SPEEDUP_OVER_LOOP:g}x over the loop leaves "
                      f"{res['loop']['seconds'] / MIN_SPEEDUP_OVER_LOOP - act:.3f} s beyond the activations "
                      f"pass ({act:.3f} s) for every per-sample product and square; ours spends "
                      f"{ours['seconds'] - act:.3f} s there")
            if speedup < MIN_SPEEDUP_OVER_LOOP:
                missed.append(f"{model}: ours only {speedup:.2f}x faster than the loop (< {MIN_SPEEDUP_OVER_LOOP}x)")
        if ours["peak_mb"] > 1.5 * floor["peak_mb"]:
            missed.append(f"{model}: ours peak increase {ours['peak_mb']:.0f} MB > 1.5x floor's "
                          f"{floor['peak_mb']:.0f} MB")
        ratio = ours["seconds"] / floor["seconds"]
        print(f"  ours <= 2x floor: {'met' if ratio <= 2 else 'missed'} ({ratio:.2f}x)")
    print()
    for f in failures:
        print("CRASHED:", f)
    for f in missed:
        print("TARGET MISSED:" if not args.quick else "target missed (not checked by --quick):", f)
    if args.quick:
        print("smoke run: every method ran" if not failures else f"{len(failures)} method(s) crashed")
        return 1 if failures else 0
    print("all targets met" if not failures + missed else f"{len(failures + missed)} target(s) missed")
    return 1 if failures + missed else 0


def _median_run(runs: list[dict]) -> dict:
    """One method's rounds as one row: the median seconds and peak MB (a skip as it came)."""
    if "skipped" in runs[0]:
        return runs[0]
    return {**runs[0], "seconds": statistics.median(r["seconds"] for r in runs),
            "peak_mb": statistics.median(r["peak_mb"] for r in runs)}


def _cuda() -> bool:
    try:
        import torch
        return torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        return False


if __name__ == "__main__":
    sys.exit(main())
