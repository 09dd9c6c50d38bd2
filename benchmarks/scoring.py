"""Benchmark: FTS scoring (per-sample ĝ and F̂) against its peers, side by side in one run.

    python benchmarks/scoring.py            # CIFAR ResNet18 and VGG19, full width, N=128 (minutes)
    python benchmarks/scoring.py --quick    # width 0.25, N=32: a smoke test

Methods (each in a fresh subprocess, so the peak resident memory ``ru_maxrss`` is its own;
on CUDA ``torch.cuda.max_memory_allocated`` instead), all in eval mode on the same synthetic
CIFAR-shaped batch:

* ``floor``    one batched forward+backward over the N samples (no per-sample statistics);
* ``loop``     the plain batch-size-1 loop of the authors: ``zero_grad``, ``backward``,
               accumulate ``p.grad`` and ``p.grad**2`` for every parameter;
* ``vmap32``   ``torch.func.vmap(grad)`` over chunks of 32, sum and sum of squares;
* ``backpack`` BackPACK ``SumGradSquared`` (skipped when not installed);
* ``opacus``   Opacus ``GradSampleModule`` per-sample gradients (skipped when not installed
               or when it refuses BatchNorm);
* ``ours``     ``fts_core.score("fts", ...)`` with the default (auto) strategy.

Targets (exit status 1 when one is missed): ``ours`` faster than every peer on every model;
``ours`` peak memory ≤ 1.5x the floor's. Stretch (reported only): ``ours`` ≤ 2x the floor.
Seconds are the median of ``--repeats`` runs after one warm-up run on 2 samples.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

PEERS = ("loop", "vmap32", "backpack", "opacus")
METHODS = ("floor", *PEERS, "ours")


# --------------------------------------------------------------------------- worker side
def _method(name: str, model, x, y):
    import torch
    import torch.nn.functional as F

    if name == "floor":
        def run(xs, ys):
            model.zero_grad(set_to_none=True)
            F.cross_entropy(model(xs), ys, reduction="sum").backward()
            model.zero_grad(set_to_none=True)
        return run
    if name == "loop":
        def run(xs, ys):
            params = list(model.parameters())
            g = [torch.zeros_like(p) for p in params]
            f = [torch.zeros_like(p) for p in params]
            for i in range(xs.shape[0]):
                model.zero_grad(set_to_none=True)
                F.cross_entropy(model(xs[i:i + 1]), ys[i:i + 1]).backward()
                for a, b, p in zip(g, f, params):
                    a += p.grad
                    b += p.grad * p.grad
            model.zero_grad(set_to_none=True)
        return run
    if name == "vmap32":
        from torch.func import functional_call, grad, vmap

        params = {k: v.detach() for k, v in model.named_parameters()}
        buffers = {k: v.detach() for k, v in model.named_buffers()}

        def loss(p, xi, yi):
            return F.cross_entropy(functional_call(model, (p, buffers), (xi.unsqueeze(0),)), yi.unsqueeze(0))

        per = vmap(grad(loss), in_dims=(None, 0, 0))

        def run(xs, ys):
            g = {k: torch.zeros_like(v) for k, v in params.items()}
            f = {k: torch.zeros_like(v) for k, v in params.items()}
            for s in range(0, xs.shape[0], 32):
                gs = per(params, xs[s:s + 32], ys[s:s + 32])
                for k in g:
                    g[k] += gs[k].sum(0)
                    f[k] += gs[k].square().sum(0)
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
        return run
    if name == "opacus":
        from opacus import GradSampleModule

        gsm = GradSampleModule(model)

        def run(xs, ys):
            gsm.zero_grad(set_to_none=True)
            F.cross_entropy(gsm(xs), ys, reduction="sum").backward()
            for p in gsm.parameters():
                if getattr(p, "grad_sample", None) is not None:
                    p.grad_sample.square().sum(0)
                    p.grad_sample = None
        return run
    if name == "ours":
        from fts_core.criteria import score

        def run(xs, ys):
            score("fts", model, [(xs, ys)])
        return run
    raise ValueError(f"unknown method {name!r}; allowed: {METHODS}")


def worker(args: argparse.Namespace) -> None:
    import torch

    from fts_core.models import build_model

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = build_model(args.model, width=args.width).to(device).eval()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.n, 3, 32, 32, generator=g).to(device)
    y = torch.randint(0, 10, (args.n,), generator=g).to(device)
    try:
        run = _method(args.worker, model, x, y)
        run(x[:2], y[:2])  # warm-up
    except ImportError as err:
        print(json.dumps({"skipped": f"not installed ({err.name})"}))
        return
    except Exception as err:  # a peer that cannot handle the model (e.g. Opacus and BatchNorm)
        print(json.dumps({"skipped": f"{type(err).__name__}: {str(err)[:80]}"}))
        return
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        run(x, y)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    if device.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps({"seconds": statistics.median(times), "peak_mb": peak_mb}))


# --------------------------------------------------------------------------- driver side
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="width 0.25, N=32, 1 repeat (smoke test)")
    ap.add_argument("--models", default="resnet18,vgg19")
    ap.add_argument("--width", type=float, default=None)
    ap.add_argument("--n", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=None)
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
        worker(args)
        return 0
    methods = [m for m in args.methods.split(",") if m]
    bad = [m for m in methods if m not in METHODS]
    if bad or "ours" not in methods or "floor" not in methods:
        ap.error(f"--methods must include floor and ours, from {METHODS}; got {methods}")
    print(f"device {args.device}, width {args.width}, N={args.n}, threads {args.threads}, "
          f"median of {args.repeats}", flush=True)
    failures = []
    for model in args.models.split(","):
        res = {}
        for m in methods:
            cmd = [sys.executable, os.path.abspath(__file__), "--worker", m, "--model", model,
                   "--width", str(args.width), "--n", str(args.n), "--repeats", str(args.repeats),
                   "--threads", str(args.threads), "--device", args.device]
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode != 0:
                print(out.stderr[-2000:], file=sys.stderr)
                failures.append(f"{model}/{m}: worker failed")
                continue
            res[m] = json.loads(out.stdout.strip().splitlines()[-1])
        if "floor" not in res or "ours" not in res or "seconds" not in res["ours"]:
            continue
        floor = res["floor"]
        print(f"\n{model}  {'method':<9} {'seconds':>8} {'x floor':>8} {'ours/it':>8} {'peak MB':>8} {'x floor':>8}")
        for m, r in res.items():
            if "skipped" in r:
                print(f"{'':<{len(model)}}  {m:<9} skipped: {r['skipped']}")
                continue
            print(f"{'':<{len(model)}}  {m:<9} {r['seconds']:8.3f} {r['seconds'] / floor['seconds']:8.2f} "
                  f"{res['ours']['seconds'] / r['seconds']:8.2f} {r['peak_mb']:8.0f} {r['peak_mb'] / floor['peak_mb']:8.2f}")
        ours = res["ours"]
        for m in PEERS:
            if m in res and "seconds" in res[m] and ours["seconds"] >= res[m]["seconds"]:
                failures.append(f"{model}: ours {ours['seconds']:.3f}s not faster than {m} {res[m]['seconds']:.3f}s")
        if ours["peak_mb"] > 1.5 * floor["peak_mb"]:
            failures.append(f"{model}: ours peak {ours['peak_mb']:.0f} MB > 1.5x floor {floor['peak_mb']:.0f} MB")
        ratio = ours["seconds"] / floor["seconds"]
        print(f"{'':<{len(model)}}  stretch (ours <= 2x floor): {'met' if ratio <= 2 else 'missed'} ({ratio:.2f}x)")
    print()
    for f in failures:
        print("TARGET MISSED:", f)
    print("all targets met" if not failures else f"{len(failures)} target(s) missed")
    return 1 if failures else 0


def _cuda() -> bool:
    try:
        import torch
        return torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        return False


if __name__ == "__main__":
    sys.exit(main())
