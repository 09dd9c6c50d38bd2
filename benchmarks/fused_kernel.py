"""Experiment: would a compiled kernel that fuses the per-sample product with its sums make the
``"hooks"`` strategy 2x faster than the batch-size-1 loop on ResNet18? Not used by the library.

    python benchmarks/fused_kernel.py              # needs g++, ninja and an AVX-512 CPU (minutes)

A Conv2d with few output positions L gets, per sample n, ``W_n = go_n @ cols_nᵀ`` (C x K) from its
output-gradient ``go_n`` (C x L) and input patches ``cols_n`` (K x L), then ``g += W_n`` and
``f += W_n ⊙ W_n`` (the library's ``mm`` path, ``persample._accumulate_conv_per_sample``): W_n is
written to memory and read back twice. The kernel here (AVX-512 intrinsics, compiled at first use
with ``torch.utils.cpp_extension.load_inline``) forms W_n in registers, 8 rows x 32 columns at a time,
and adds it and its square into ``g`` and ``f`` before moving on, blocks of 64 x 256 of ``g``/``f``
staying in cache across the chunk's samples.

Prints, interleaved (median of ``--rounds``): per layer shape of ResNet18 with ≤ 16 or ≤ 64 output
positions, one chunk of 32, the library's path against the kernel; then the whole of ResNet18's
scoring (N=128) with the library as it is, with the kernel on its layers of ≤ ``--positions`` output
positions, and the loop. The kernel's sums are checked against the library's (relative difference).
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile

SOURCE = r"""
#include <torch/extension.h>
#include <immintrin.h>
#include <algorithm>

// g += sum_n W_n, f += sum_n W_n * W_n with W_n = go[n] @ colsT[n]: go (B, C, L), colsT (B, L, K),
// g and f (C, K); all contiguous float32, C % 8 == 0, K % 32 == 0.
void accumulate(torch::Tensor go, torch::Tensor colsT, torch::Tensor g, torch::Tensor f) {
  const int64_t B = go.size(0), C = go.size(1), L = go.size(2), K = colsT.size(2);
  const float* GO = go.data_ptr<float>();
  const float* CT = colsT.data_ptr<float>();
  float* G = g.data_ptr<float>();
  float* F = f.data_ptr<float>();
  const int64_t IB = 64, KB = 256, nib = (C + IB - 1) / IB, nkb = (K + KB - 1) / KB;
  at::parallel_for(0, nib * nkb, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t blk = b0; blk < b1; ++blk) {
      const int64_t i0 = (blk / nkb) * IB, k0 = (blk % nkb) * KB;
      const int64_t iend = std::min(C, i0 + IB), kend = std::min(K, k0 + KB);
      for (int64_t n = 0; n < B; ++n) {
        const float* gon = GO + n * C * L;
        const float* cn = CT + n * L * K;
        for (int64_t i = i0; i < iend; i += 8) {
          const float* a = gon + i * L;
          for (int64_t k = k0; k < kend; k += 32) {
            __m512 w[8][2];
            for (int r = 0; r < 8; ++r) { w[r][0] = _mm512_setzero_ps(); w[r][1] = _mm512_setzero_ps(); }
            for (int64_t l = 0; l < L; ++l) {
              const __m512 c0 = _mm512_loadu_ps(cn + l * K + k);
              const __m512 c1 = _mm512_loadu_ps(cn + l * K + k + 16);
              for (int r = 0; r < 8; ++r) {
                const __m512 ar = _mm512_set1_ps(a[r * L + l]);
                w[r][0] = _mm512_fmadd_ps(ar, c0, w[r][0]);
                w[r][1] = _mm512_fmadd_ps(ar, c1, w[r][1]);
              }
            }
            for (int r = 0; r < 8; ++r) {
              float* gr = G + (i + r) * K + k;
              float* fr = F + (i + r) * K + k;
              for (int h = 0; h < 2; ++h) {
                _mm512_storeu_ps(gr + 16 * h, _mm512_add_ps(_mm512_loadu_ps(gr + 16 * h), w[r][h]));
                _mm512_storeu_ps(fr + 16 * h, _mm512_fmadd_ps(w[r][h], w[r][h], _mm512_loadu_ps(fr + 16 * h)));
              }
            }
          }
        }
      }
    }
  });
}
"""


def _why_not() -> str | None:
    """None when the kernel can be built and run here, else why not."""
    if shutil.which("g++") is None:
        return "no g++"
    if shutil.which("ninja") is None:
        return "no ninja (pip install ninja)"
    try:
        with open("/proc/cpuinfo") as fh:
            if "avx512f" not in fh.read():
                return "the CPU has no AVX-512"
    except OSError:
        return "cannot read /proc/cpuinfo"
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--positions", type=int, default=16,
                    help="the kernel replaces the library's path on layers with at most this many output positions")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    if (why := _why_not()) is not None:
        print(f"skipped: {why}")
        return 0

    import torch
    from torch.utils.cpp_extension import load_inline

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from layers import interleaved
    from scoring import _method, build

    from fts_core.masks import prunable_parameters
    from fts_core.scoring import persample
    from fts_core.scoring.layer_rules import padded_input, patches

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="fts_fused_") as build_dir:  # the module stays loaded
        ext = load_inline("fts_fused_kernel", cpp_sources=SOURCE, functions=["accumulate"],
                          extra_cflags=["-O3", "-march=native"], build_directory=build_dir)

    library = persample._accumulate_conv_per_sample

    def kernel_up_to(max_positions: int):
        """The library's Conv2d per-sample path with the kernel on layers of <= max_positions outputs."""
        def accumulate(module, inp, gout, g, f):
            cout, positions = gout.shape[1], gout.shape[2] * gout.shape[3]
            if positions > max_positions or cout % 8 or g[0].numel() % 32:
                return library(module, inp, gout, g, f)
            cols = patches(padded_input(module, inp), module.kernel_size, module.stride, module.dilation)
            ext.accumulate(gout.reshape(gout.shape[0], cout, positions).contiguous(),
                           cols.transpose(1, 2).contiguous(), g.view(cout, -1), f.view(cout, -1))
        return accumulate

    print(f"one chunk of 32, {args.threads} threads, median of {args.rounds} interleaved rounds (ms)")
    for cin, cout, side in ((512, 512, 4), (256, 512, 4), (256, 256, 8), (128, 256, 8)):
        conv = torch.nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        inp, gout = torch.randn(32, cin, side, side), torch.randn(32, cout, side, side)
        acc = {k: (torch.zeros_like(conv.weight), torch.zeros_like(conv.weight)) for k in ("library", "kernel")}
        kernel = kernel_up_to(side * side)
        fns = {"library": lambda: library(conv, inp, gout, *acc["library"]),
               "kernel": lambda: kernel(conv, inp, gout, *acc["kernel"])}
        for fn in fns.values():
            fn()
        diff = max(float((a - b).abs().max() / a.abs().max()) for a, b in zip(acc["library"], acc["kernel"]))
        t = interleaved(fns, args.rounds)
        print(f"  {cin:>3} -> {cout:<3} at {side}x{side}: library {t['library'] * 1e3:6.1f}, kernel "
              f"{t['kernel'] * 1e3:6.1f} ({t['library'] / t['kernel']:.2f}x), relative difference {diff:.1e}")

    model = build("resnet18", 1.0)
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(128, 3, 32, 32, generator=gen), torch.randint(0, 10, (128,), generator=gen)
    prunable = prunable_parameters(model)
    loop = _method("loop", model, prunable)

    def score(fn):
        def run():
            persample._accumulate_conv_per_sample = fn
            try:
                return persample.per_sample_stats(model, prunable, [(x, y)])
            finally:
                persample._accumulate_conv_per_sample = library
        return run

    with_kernel = kernel_up_to(args.positions)
    a, b = score(library)(), score(with_kernel)()
    diff = max(float((a.fisher[k] - b.fisher[k]).abs().max() / a.fisher[k].abs().max()) for k in a.fisher)
    t = interleaved({"loop": lambda: loop(x, y), "library": score(library), "kernel": score(with_kernel)},
                    args.rounds)
    print(f"ResNet18, N=128 (s): loop {t['loop']:.3f}, ours {t['library']:.3f} ({t['loop'] / t['library']:.2f}x "
          f"faster than the loop), ours with the kernel on layers of <= {args.positions} output positions "
          f"{t['kernel']:.3f} ({t['loop'] / t['kernel']:.2f}x); F̂ relative difference {diff:.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
