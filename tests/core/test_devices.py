"""Models split over devices with accelerate device maps (some layers on CPU, some offloaded to disk).

Checked against the same model on one device: logits with every standard hook cached, the cached
activations themselves, activation patching, and a patched value cached elsewhere. On this CPU-only
machine every execution device is the CPU, so these tests exercise accelerate's dispatch and disk
offload hooks (weights loaded per forward, inputs moved by accelerate); moves between two accelerators
are the same code path and are checked on a GPU machine.
"""
from __future__ import annotations

import pytest
import torch

import uncover as uc
from uncover.components.patching import activation_patching
from uncover.core import interventions as iv
from uncover.errors import UncoverError
from tests.conftest import tiny_hf
from tests.editing.conftest import word_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")

SPLIT = {"model.embed_tokens": "cpu", "model.rotary_emb": "cpu", "model.layers.0": "cpu",
         "model.layers.1": "disk", "model.layers.2": "disk", "model.norm": "cpu", "lm_head": "disk"}


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """(the model on one device, the same weights split over CPU and disk)."""
    hf = tiny_hf("llama", seed=3)
    single = uc.load(hf)
    split = uc.load(hf, device_map=SPLIT, offload_folder=tmp_path_factory.mktemp("offload"))
    return single, split


def test_split_is_really_offloaded(pair):
    single, split = pair
    assert split.hf.hf_device_map == SPLIT
    offloaded = split.hf.model.layers[1].self_attn.q_proj.weight
    assert offloaded.device.type == "meta"               # the weights live on disk, not in the module
    assert single.hf.model.layers[1].self_attn.q_proj.weight.device.type == "cpu"  # the caller's model untouched
    assert split.device == torch.device("cpu")


def test_logits_and_every_hook_equal(pair):
    single, split = pair
    tokens = torch.randint(0, 1000, (2, 9), generator=torch.Generator().manual_seed(0))
    names = single.hook_names()  # every standard name, on-request ones (patterns, edge-level) included
    ref_logits, ref = single.run_with_cache(tokens, names=names)
    logits, cache = split.run_with_cache(tokens, names=names)
    assert (logits - ref_logits).abs().max() <= 1e-5
    assert (logits - single.hf(tokens).logits).abs().max() <= 1e-5
    assert set(cache.keys()) == set(names)
    for n in names:
        assert cache[n].device == split.device
        assert (cache[n] - ref[n]).abs().max() <= 1e-5, n


def test_interventions_equal(pair):
    single, split = pair
    g = torch.Generator().manual_seed(1)
    clean, corrupt = torch.randint(0, 1000, (2, 7), generator=g), torch.randint(0, 1000, (2, 7), generator=g)
    _, clean_cache = single.run_with_cache(clean, names=["blocks.2.hook_resid_pre", "blocks.1.attn.hook_z"])
    hooks = [("blocks.2.hook_resid_pre", iv.patch(clean_cache, positions=[3])),
             ("blocks.1.attn.hook_z", iv.ablate("zero", heads=[1])),
             ("blocks.2.hook_mlp_out", iv.add_vector(torch.ones(64), 0.5))]
    ref = single.run_with_hooks(corrupt, fwd_hooks=hooks)
    got = split.run_with_hooks(corrupt, fwd_hooks=hooks)
    assert (got - ref).abs().max() <= 1e-5
    assert (got - split(corrupt)).abs().max() > 1e-3       # the edits did something


@pytest.mark.parametrize("site,by", [("resid_pre", "layer"), ("z", "head"), ("mlp_out", "pos")])
def test_activation_patching_equal(pair, site, by):
    single, split = pair
    g = torch.Generator().manual_seed(2)
    clean, corrupt = torch.randint(0, 1000, (3, 6), generator=g), torch.randint(0, 1000, (3, 6), generator=g)

    def metric(logits: torch.Tensor) -> torch.Tensor:
        return logits[:, -1, 5].mean() - logits[:, -1, 7].mean()

    ref = activation_patching(single, clean, corrupt, metric, site=site, by=by)
    got = activation_patching(split, clean, corrupt, metric, site=site, by=by)
    assert got.values.shape == ref.values.shape
    assert torch.allclose(got.values, ref.values, atol=1e-5, rtol=1e-4, equal_nan=True)


def test_auto_with_max_memory_offloads(tmp_path):
    hf = tiny_hf("llama", seed=4)
    single = uc.load(hf)
    budget = sum(p.numel() * 4 for p in hf.model.embed_tokens.parameters()) * 2   # room for ~2 modules only
    split = uc.load(hf, device_map="auto", max_memory={"cpu": budget}, offload_folder=tmp_path)
    assert "disk" in split.hf.hf_device_map.values() and "cpu" in split.hf.hf_device_map.values()
    tokens = torch.randint(0, 1000, (1, 8), generator=torch.Generator().manual_seed(5))
    assert (split(tokens) - single(tokens)).abs().max() <= 1e-5


@pytest.mark.parametrize("bad", [{"": "cuda:7"}, {"": 3}, {"": "npu:0"}, {"model": "cpu", "lm_head": "cuda:1"}])
def test_device_map_naming_missing_device(bad):
    with pytest.raises(UncoverError, match="does not have|is not a device"):
        uc.load(tiny_hf("llama"), device_map=bad)


def test_bad_device_map_inputs():
    with pytest.raises(UncoverError, match="max_memory"):
        uc.load(tiny_hf("llama"), device_map="auto", max_memory={"cuda:3": "1GB"})
    with pytest.raises(UncoverError, match="not both"):
        uc.load(tiny_hf("llama"), device="cpu", device_map="auto")
    with pytest.raises(UncoverError, match="device_map must be"):
        uc.load(tiny_hf("llama"), device_map="everywhere")
    with pytest.raises(UncoverError, match="could not place"):
        uc.load(tiny_hf("llama"), device_map={"model.layers.0": "cpu"})   # most modules left unplaced


def test_weights_of_offloaded_layers(pair):
    single, split = pair
    for w in ("W_Q", "W_K", "W_V", "W_O", "W_in", "W_out"):
        assert torch.equal(getattr(split, w)(2), getattr(single, w)(2)), w
    assert split.hf.model.layers[2].mlp.down_proj.weight.device.type == "meta"   # back on disk afterwards


def test_device_map_from_a_saved_folder(tmp_path):
    """A local folder is placed by transformers while it reads the weights (no full copy first)."""
    hf = tiny_hf("llama", seed=6)
    hf.save_pretrained(tmp_path / "m")
    word_tokenizer().save_pretrained(tmp_path / "m")
    single = uc.load(hf)
    split = uc.load(str(tmp_path / "m"), device_map=SPLIT, offload_folder=tmp_path / "off")
    assert split.hf.model.layers[2].self_attn.q_proj.weight.device.type == "meta"
    tokens = torch.randint(0, 1000, (2, 7), generator=torch.Generator().manual_seed(8))
    names = ["blocks.2.hook_resid_post", "blocks.1.attn.hook_pattern", "blocks.2.attn.hook_result"]
    ref_logits, ref = single.run_with_cache(tokens, names=names)
    logits, cache = split.run_with_cache(tokens, names=names)
    assert (logits - ref_logits).abs().max() <= 1e-5
    assert all((cache[n] - ref[n]).abs().max() <= 1e-5 for n in names)


def test_device_map_with_dtype(tmp_path):
    hf = tiny_hf("llama", seed=6)
    hf.save_pretrained(tmp_path / "m")
    word_tokenizer().save_pretrained(tmp_path / "m")
    ref = uc.load(hf, dtype=torch.bfloat16)
    for source in (str(tmp_path / "m"), hf):
        split = uc.load(source, dtype=torch.bfloat16, device_map=SPLIT, offload_folder=tmp_path / "off")
        tokens = torch.randint(0, 1000, (2, 7), generator=torch.Generator().manual_seed(9))
        logits, want = split(tokens), ref(tokens)
        assert logits.dtype == torch.bfloat16
        if isinstance(source, str):  # transformers reads the folder into bf16 itself: rounding, not bitwise
            assert (logits - want).abs().max() <= 2e-2 * want.abs().max()
        else:                        # the object is converted, then placed: bitwise
            assert torch.equal(logits, want)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_split_over_gpu_and_cpu():
    """Layers on cuda:0 and on the CPU: real moves between devices (runs on a GPU machine)."""
    hf = tiny_hf("llama", seed=3)
    single = uc.load(hf)
    gpu_map = {**SPLIT, "model.embed_tokens": 0, "model.layers.0": 0, "model.layers.1": "cpu", "lm_head": 0}
    split = uc.load(hf, device_map=gpu_map)
    assert split.device == torch.device("cuda", 0)
    tokens = torch.randint(0, 1000, (2, 9), generator=torch.Generator().manual_seed(0))
    names = single.hook_names()
    ref_logits, ref = single.run_with_cache(tokens, names=names)
    logits, cache = split.run_with_cache(tokens, names=names)
    assert (logits.cpu() - ref_logits).abs().max() <= 1e-4      # TF32 / GPU kernels: not bitwise
    assert all(cache[n].device == split.device for n in names)
    seen = {}
    split.run_with_hooks(tokens, fwd_hooks=[("blocks.1.hook_resid_pre", lambda t, h: seen.setdefault("d", t.device))])
    assert seen["d"].type == "cpu"                               # a hook sees its module's device
