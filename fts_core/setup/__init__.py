"""What is trained: data sets and their on-device loader, models, devices, memory layout, seeds.

``datasets`` (the readers and their registry; a new data set goes here), ``data``
(``load_data``: the paper's split), ``loader`` (batches on the device), ``models`` (the model
registry; a new model goes here), ``device``, ``layout`` (NHWC where oneDNN is safe),
``seeding`` (the seeds of model initialisation and of every private random stream).
"""
from fts_core.setup.data import check_available, load_data
from fts_core.setup.datasets import DATASETS, RawData, register_dataset
from fts_core.setup.device import resolve_device, synchronize
from fts_core.setup.loader import DataBundle, Split, TensorLoader
from fts_core.setup.models import MODELS, build_model, register_model
from fts_core.setup.seeding import make_generator, seed_torch, stream_seed

__all__ = ["DATASETS", "RawData", "register_dataset", "load_data", "check_available", "DataBundle", "Split",
           "TensorLoader", "MODELS", "build_model", "register_model", "resolve_device", "synchronize", "seed_torch",
           "stream_seed", "make_generator"]
