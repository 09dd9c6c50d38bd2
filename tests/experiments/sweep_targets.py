"""Stand-in `run:` targets for sweep tests (importable by worker processes: tests/experiments is
put on PYTHONPATH for subprocesses)."""
from __future__ import annotations

import os
import time
from pathlib import Path


def slow_count(config: dict) -> dict:
    """Pretend to train ``config["epochs"]`` epochs of 0.3 s each, appending one line per epoch
    to ``config["log"]`` (so a test counts the epochs trained by all processes together)."""
    for epoch in range(config["epochs"]):
        time.sleep(0.3)
        with open(config["log"], "a") as fh:
            fh.write(f"{config['criterion']} {config['seed']} {epoch} {os.getpid()}\n")
    return {"test_accuracy_final": 0.5, "sparsity": 0.9, "epochs_trained": config["epochs"]}


def quick(config: dict) -> dict:
    """Instant metrics from the config (no training)."""
    return {"test_accuracy_final": 0.9 - config.get("sparsity", 0) / 10, "seed": config.get("seed", 0)}


def count_lines(path: Path) -> int:
    return len(Path(path).read_text().splitlines()) if Path(path).exists() else 0
