"""act_name, Site and Positions: names agree with the model's hook names, specs round-trip, errors are clear."""
from __future__ import annotations

import json

import pytest
import torch

from uncover.core.names import SITES, Positions, Site, act_name, check_layer, check_layers
from uncover.errors import UncoverError


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gpt_neox", "toy"])
def test_act_name_gives_hook_names_the_model_has(tiny_model, arch):
    model = tiny_model(arch)
    names = set(model.hook_names())
    for short, pattern in SITES.items():
        full = act_name(short, 1) if "{}" in pattern else act_name(short)
        assert full == pattern.format(1)
    for name in names:  # and every name the model has is reachable through act_name
        if name.startswith("blocks."):
            layer = int(name.split(".")[1])
            assert act_name(name.split(".")[-1], layer) == name
        else:
            assert act_name(name) == name


def test_act_name_forms_and_errors():
    assert act_name("z", 2) == "blocks.2.attn.hook_z" == act_name("attn.hook_z", 2) == act_name("hook_z", 2)
    assert act_name("attn", 0) == "blocks.0.attn.hook_pattern"  # TransformerLens alias
    assert act_name("mlp_pre", 1) == "blocks.1.mlp.hook_pre"
    assert act_name("result", 1) == "blocks.1.attn.hook_result"
    assert act_name("q_input", 1) == "blocks.1.hook_q_input"
    assert act_name("mlp_in", 4) == "blocks.4.hook_mlp_in"
    assert act_name("blocks.3.hook_resid_post") == "blocks.3.hook_resid_post"
    assert act_name("embed") == "hook_embed" and act_name("ln_final") == "ln_final.hook_normalized"
    with pytest.raises(UncoverError, match="closest site names: .*'resid_pre'"):
        act_name("resid_pr", 1)
    with pytest.raises(UncoverError, match="needs a layer"):
        act_name("z")
    with pytest.raises(UncoverError, match="another layer"):
        act_name("blocks.3.hook_z", 2)


def test_site_spec_round_trips_and_checks():
    site = Site("attn.hook_z", layers=[2, 0], heads=torch.tensor([1, 3]))
    assert site == Site("z", (2, 0), (1, 3))
    again = Site.from_dict(json.loads(json.dumps(site.to_dict())))
    assert again == site and again.hook_names(3) == ["blocks.2.attn.hook_z", "blocks.0.attn.hook_z"]
    assert Site.coerce("blocks.1.hook_mlp_out") == Site("mlp_out", (1,))
    assert Site.coerce(site.to_dict()) == site
    assert Site("resid_pre").hook_names(2) == ["blocks.0.hook_resid_pre", "blocks.1.hook_resid_pre"]
    assert (Site("pattern").head_axis, Site("pattern").pos_axis) == (1, 2)
    assert (Site("z").head_axis, Site("resid_pre").head_axis) == (2, None)
    with pytest.raises(UncoverError, match="no head axis"):
        Site("resid_pre", heads=[0])
    with pytest.raises(UncoverError, match=r"layers \[5\] out of range: the model has layers 0\.\.2"):
        Site("z", layers=[5]).hook_names(3)


def test_positions_spec_round_trips_and_resolves():
    cases = {
        None: [[0, 1, 2, 3]] * 2, "all": [[0, 1, 2, 3]] * 2, "last": [[3]] * 2, -1: [[3]] * 2,
        (0, -2): [[0, 2]] * 2, ((1,), (0, 3)): [[1], [0, 3]],
    }
    for given, want in cases.items():
        pos = Positions.coerce(given)
        assert pos.resolve(4, 2) == want
        assert Positions.from_dict(json.loads(json.dumps(pos.to_dict()))) == pos
    with pytest.raises(UncoverError, match=r"positions \[7\] out of range for 4 tokens"):
        Positions.at(7).resolve(4)
    with pytest.raises(UncoverError, match="2 lists for 3 prompts"):
        Positions.per_prompt([[0], [1]]).resolve(4, 3)
    with pytest.raises(UncoverError, match="must be 'all', 'last'"):
        Positions.coerce("first")


def test_one_layer_check():
    assert check_layer(2, 3) == 2 and check_layer(3, 3, allow_end=True) == 3
    assert check_layers([0, torch.tensor(2)], 3) == [0, 2]
    for bad in (3, -1, 1.0, True, "1"):
        with pytest.raises(UncoverError, match=r"layer .* out of range: the model has layers 0\.\.2; pass an int"):
            check_layer(bad, 3)
    with pytest.raises(UncoverError, match=r"layers \[4, -1\] out of range"):
        check_layers([0, 4, -1], 3)
