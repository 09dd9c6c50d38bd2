"""How many CPU threads for the notebooks' small networks: 1 or 2, on an idle and on a busy machine.

    python benchmarks/threads.py            # a few minutes
    python benchmarks/threads.py --quick

One epoch of the notebooks' training setting (ResNet18 at width 1/8, batch 32, 1,149 digits
images upsampled to 32x32) with 1 and with 2 intra-op threads, first on an otherwise idle
machine, then while one other process keeps one core busy (a Python busy loop, started by this
script). It prints the seconds per epoch and the ratios, and explains the notebooks' choice of
one thread: the gain from a second thread on an idle machine is small next to the loss when
another process holds a core (the threads of one operation wait for each other). Run it on an
otherwise idle machine. Exit status 0 always (a measurement, not a target).
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import time

import torch

import fts_core
from fts_core.experiments.training import make_optimizer, train_epoch


def _spin(stop: "mp.synchronize.Event") -> None:
    while not stop.is_set():
        pass


def epoch_seconds(threads: int, repeats: int, batches: int | None) -> float:
    torch.set_num_threads(threads)
    data = fts_core.load_data("digits", seed=0)
    best = float("inf")
    for r in range(repeats):
        torch.manual_seed(0)
        model = fts_core.build_model("resnet18", num_classes=10, in_channels=1, width=0.125)
        opt = make_optimizer(model, lr=0.05, momentum=0.9, weight_decay=5e-4)
        loader = list(data.loader("train", 32, seed=0, epoch=r))[:batches]
        best = min(best, train_epoch(model, loader, opt)["seconds"])
    return best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    repeats, batches = (1, 8) if args.quick else (3, None)
    print(f"# torch {torch.__version__}, {os.cpu_count()} CPUs; best of {repeats}; seconds per epoch")
    results = {}
    for busy in (False, True):
        stop = mp.Event()
        spinner = mp.Process(target=_spin, args=(stop,)) if busy else None
        if spinner:
            spinner.start()
            time.sleep(0.5)
        try:
            for threads in (1, 2):
                results[(busy, threads)] = epoch_seconds(threads, repeats, batches)
        finally:
            if spinner:
                stop.set()
                spinner.join()
    print("| machine | 1 thread | 2 threads | 2 threads / 1 thread |\n|---|---|---|---|")
    for busy in (False, True):
        one, two = results[(busy, 1)], results[(busy, 2)]
        print(f"| {'one core busy' if busy else 'idle'} | {one:.2f} s | {two:.2f} s | {two / one:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
