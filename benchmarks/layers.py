"""Benchmark: what the ``"hooks"`` strategy's per-sample work costs layer by layer, for one chunk.

    python benchmarks/layers.py                    # ResNet18 at full width, a chunk of 32 (a minute)
    python benchmarks/layers.py --model vgg19
    python benchmarks/layers.py --quick          # width 0.25, one repeat: a smoke test

For every Conv2d holding prunable weights, on the input and output-gradient shapes of a chunk of
``--chunk`` CIFAR-shaped samples (random values: the cost does not depend on them), two timings of
the same Conv2d method the library picks (``persample.conv_method_for``):

* ``products``: the per-sample weight-gradients alone (the grouped weight-gradient; or one
  weight-gradient or one ``mm`` per sample into a reused buffer), the arithmetic every exact
  per-sample method has to do;
* ``with sums``: the library's whole rule for the layer, which also adds each per-sample gradient
  and its square into the accumulators.

The difference is the memory traffic of the sums, which a kernel fusing them into the product
would save (torch's CPU operators have none). Seconds are medians of ``--repeats`` runs after one
warm-up, the two timings of a layer alternating; totals are scaled to ``--n`` samples. A diagnostic, no targets (exit status 0).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time


def interleaved(fns: dict, rounds: int) -> dict:
    """Median seconds of each of ``fns`` (name -> callable) over ``rounds``, the functions run
    alternately after one warm-up round (a slow spell of the host hits all alike)."""
    times = {k: [] for k in fns}
    for r in range(rounds + 1):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            if r:
                times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="width 0.25, 1 repeat: a smoke test")
    ap.add_argument("--model", default="resnet18", choices=("resnet18", "vgg19"))
    ap.add_argument("--width", type=float, default=None)
    ap.add_argument("--chunk", type=int, default=32)
    ap.add_argument("--n", type=int, default=128, help="samples the totals are scaled to")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    args.width = args.width if args.width is not None else (0.25 if args.quick else 1.0)
    args.repeats = args.repeats if args.repeats is not None else (1 if args.quick else 9)

    import torch
    from torch import nn

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from scoring import build

    from fts_core.masks import prunable_parameters
    from fts_core.scoring import persample
    from fts_core.scoring.layer_rules import padded_input, patches, pointwise_per_sample, samples_as_groups

    torch.set_num_threads(args.threads)
    model = build(args.model, args.width)
    layers = {persample.hooked_owner(model, n)[0] for n in prunable_parameters(model)}
    shapes = {}
    hooks = [m.register_forward_hook(lambda m, a, o: shapes.__setitem__(m, (a[0].shape, o.shape)))
             for m in layers if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        model(torch.randn(args.chunk, 3, 32, 32))
    for h in hooks:
        h.remove()

    def products(m: nn.Conv2d, x, gout, method: str):
        """The per-sample weight-gradients of the layer's method, without the sums."""
        b = x.shape[0]
        if method == "per_sample" and gout.shape[2] * gout.shape[3] <= persample.CPU_MM_MAX_POSITIONS:
            go = gout.reshape(b, gout.shape[1], -1)
            w = torch.empty(gout.shape[1], m.weight[0].numel())

            def run():
                cols = patches(x, m.kernel_size, m.stride, m.dilation)
                for n in range(b):
                    torch.mm(go[n], cols[n].t(), out=w)
            return run
        if method == "per_sample":
            return lambda: [torch.nn.grad.conv2d_weight(x[n:n + 1], m.weight.shape, gout[n:n + 1], stride=m.stride,
                                                        padding=0, dilation=m.dilation) for n in range(b)]
        if m.groups == 1 and all(k == 1 for k in m.kernel_size):
            return lambda: pointwise_per_sample(x, gout, m.stride)
        return lambda: samples_as_groups(x, gout, m.weight.shape, m.stride, m.dilation, m.groups)

    scale = args.n / args.chunk
    total_p = total_s = 0.0
    print(f"{args.model}, width {args.width}, a chunk of {args.chunk}, {args.threads} threads; "
          f"ms per chunk; totals for {args.n} samples")
    print(f"  {'weight':<18} {'outputs':<8} {'method':<10} {'products':>9} {'with sums':>10}")
    for m, (in_shape, out_shape) in shapes.items():
        inp, gout = torch.randn(in_shape), torch.randn(out_shape)
        method = persample.conv_method_for(m, inp.device)
        x = padded_input(m, inp)
        g, f = torch.zeros_like(m.weight), torch.zeros_like(m.weight)
        t = interleaved({"products": products(m, x, gout, method),
                         "with sums": lambda: persample._accumulate(m, inp, gout, {"weight": 0}, [g], [f], "auto")},
                        args.repeats)
        tp, ts = t["products"], t["with sums"]
        total_p, total_s = total_p + tp, total_s + ts
        print(f"  {str(tuple(m.weight.shape)):<18} {str(tuple(out_shape[2:])):<8} {method:<10} "
              f"{tp * 1e3:9.1f} {ts * 1e3:10.1f}")
    print(f"total for {args.n} samples: products {total_p * scale:.3f} s, with sums {total_s * scale:.3f} s "
          f"(the sums {(total_s - total_p) * scale:.3f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
