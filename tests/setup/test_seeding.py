"""Seeding: the global seed of model initialisation and the private streams agree with the
spellings they replace (torch.manual_seed, torch.Generator().manual_seed, the loader's epoch seed)."""
import numpy as np
import pytest
import torch

from fts_core.setup import build_model, make_generator, seed_torch, stream_seed


def test_seed_torch_is_torch_manual_seed_and_fixes_a_model():
    assert seed_torch(7) is torch.default_generator
    after_mine = torch.get_rng_state()
    torch.manual_seed(7)
    assert torch.equal(after_mine, torch.get_rng_state())
    models = []
    for _ in range(2):
        seed_torch(3)
        models.append(build_model("vgg19", num_classes=4, in_channels=1, width=0.0625))
    a, b = (m.state_dict() for m in models)
    assert all(torch.equal(a[k], b[k]) for k in a)
    seed_torch(4)
    c = build_model("vgg19", num_classes=4, in_channels=1, width=0.0625).state_dict()
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_streams_match_the_spellings_they_replace():
    assert stream_seed(5) == 5
    assert torch.equal(torch.rand(6, generator=make_generator(5)),
                       torch.rand(6, generator=torch.Generator().manual_seed(5)))
    for seed, epoch in [(0, 0), (0, 1), (42, 3)]:  # the loader's former epoch seed, written out
        former = int(np.random.SeedSequence([seed, epoch]).generate_state(1, np.uint64)[0] >> np.uint64(1))
        assert stream_seed(seed, epoch) == former and make_generator(seed, epoch).initial_seed() == former
    assert len({stream_seed(0, k) for k in range(50)}) == 50  # distinct streams per key
    assert stream_seed(1, 2, 3) != stream_seed(1, 2)
    assert make_generator(1, device="cpu").device == torch.device("cpu")


def test_streams_leave_the_global_rng_alone():
    seed_torch(11)
    before = torch.get_rng_state()
    torch.rand(10, generator=make_generator(11, 2))
    assert torch.equal(before, torch.get_rng_state())


@pytest.mark.parametrize("call, bad", [
    (lambda: seed_torch(-1), "-1"),
    (lambda: seed_torch(1.5), "1.5"),
    (lambda: seed_torch(True), "True"),
    (lambda: stream_seed("3"), "'3'"),
    (lambda: stream_seed(3, -2), "-2"),
    (lambda: make_generator(3, 0.5), "0.5"),
])
def test_bad_seeds_are_named(call, bad):
    with pytest.raises(ValueError, match=f"got {bad}"):
        call()
