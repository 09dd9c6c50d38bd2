"""Shared test fixtures. The tests mirror the package: tests/<subpackage>/test_<module>.py;
the helpers here in tests/ (small models, fake CIFAR files, the browser) are importable from all."""
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for the module: tiny tensors gain nothing from two, and on a busy
    2-core machine OpenMP threads wait for each other. Restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
