"""Weight transforms on the compact model's linears: masks and gates attach, share, bake, detach, slice."""

import torch
from _tiny import tiny_model

from nlpcompress.parametrize import (
    GroupGate,
    Mask,
    attach,
    bake,
    detach,
    linears,
    slice_linear,
    stored_weight,
    transforms,
)
from nlpcompress.pruning import HEADS, NEURONS, gate_units, set_gates

ENCODER_LINEARS = r".*encoder\.layers\.\d+\.(attention\.(query|key|value|output)|ffn\.(intermediate|output))"


def inputs(seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 50, (3, 7), generator=generator)
    mask = torch.ones_like(ids)
    mask[2, 5:] = 0
    return {"input_ids": ids * mask, "attention_mask": mask}


def random_mask(linear: torch.nn.Linear, seed: int) -> Mask:
    generator = torch.Generator().manual_seed(seed)
    return Mask((torch.rand(linear.weight.shape, generator=generator) > 0.5).float())


def test_masks_attach_by_name_once_per_shared_layer_and_bake_into_plain_linears():
    model = tiny_model(layer_map=[0, 1, 0], heads_per_layer=[4, 4], intermediate_sizes=[37, 37])
    attached = attach(model, ENCODER_LINEARS, lambda name, linear: random_mask(linear, len(name)))
    assert len(attached) == 12  # 2 unique layers × 6 linears, although 3 depths use them
    assert set(transforms(model, Mask)) == set(attached)
    query = model.compact_bert.encoder.layers[0].attention.query
    torch.testing.assert_close(query.weight, stored_weight(query) * attached[next(iter(attached))].mask)
    with torch.no_grad():
        masked = model(**inputs()).logits
    assert bake(model) == 12 and transforms(model) == {}
    assert type(query).__name__ == "Linear" and float((query.weight == 0).float().mean()) > 0.3
    with torch.no_grad():
        torch.testing.assert_close(model(**inputs()).logits, masked, atol=1e-6, rtol=0)


def test_masked_weights_get_no_gradient_and_detach_restores_the_stored_weights():
    model = tiny_model().train()
    before = {
        name: linear.weight.detach().clone() for name, linear in linears(model, ENCODER_LINEARS).items()
    }
    masks = attach(model, ENCODER_LINEARS, lambda name, linear: random_mask(linear, 1))
    model(**inputs(), labels=torch.tensor([0, 1, 1])).loss.backward()
    for name, linear in linears(model, ENCODER_LINEARS).items():
        grad = stored_weight(linear).grad
        assert grad is not None and bool((grad[masks[name].mask == 0] == 0).all())
    detach(model)
    assert transforms(model) == {}
    for name, linear in linears(model, ENCODER_LINEARS).items():
        torch.testing.assert_close(linear.weight, before[name])


def test_detach_keeps_the_transforms_it_is_told_to_keep():
    model = tiny_model()
    attach(model, ENCODER_LINEARS, lambda name, linear: random_mask(linear, 2))
    gate_units(model, HEADS, [(0, 1)])
    assert len(transforms(model, GroupGate)) == 2
    set_gates(model, HEADS, None)  # drops the gates, keeps the masks
    assert transforms(model, GroupGate) == {} and len(transforms(model, Mask)) == 12


def test_a_neuron_gate_equals_zeroing_that_activation():
    model = tiny_model()
    ffn = model.compact_bert.encoder.layers[1].ffn
    with torch.no_grad():
        handle = ffn.intermediate.register_forward_hook(
            lambda m, a, out: out.index_fill(-1, torch.tensor([3, 9]), -1e4)
        )
        expected = model(**inputs()).logits  # GELU(-1e4) = 0: neurons 3 and 9 of layer 1 off
        handle.remove()
        gate_units(model, NEURONS, [(1, 3), (1, 9)])
        torch.testing.assert_close(model(**inputs()).logits, expected, atol=1e-6, rtol=0)


def test_gates_update_in_place_so_a_gated_state_dict_loads_into_a_gated_model():
    model = tiny_model()
    gate_units(model, HEADS, [(0, 2)])
    keys = set(model.state_dict())
    gate_units(model, HEADS, [(1, 0), (1, 3)])
    assert set(model.state_dict()) == keys
    other = tiny_model()
    gate_units(other, HEADS, [])
    other.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(other(**inputs()).logits, model(**inputs()).logits)


def test_slicing_a_masked_linear_slices_its_mask():
    linear = torch.nn.Linear(6, 4)
    mask = Mask(torch.tensor([[1.0, 0, 1, 1, 0, 1]] * 4))
    torch.nn.utils.parametrize.register_parametrization(linear, "weight", mask)
    rows = slice_linear(linear, torch.tensor([0, 2]), 0)
    columns = slice_linear(linear, torch.tensor([1, 2, 5]), 1)
    torch.testing.assert_close(rows.weight, linear.weight[[0, 2]])
    torch.testing.assert_close(columns.weight, linear.weight[:, [1, 2, 5]])
    assert transforms(columns)[""].mask.shape == (4, 3)
    torch.testing.assert_close(rows.bias, linear.bias[[0, 2]])


def test_clone_keeps_the_original_usable_after_the_copy_is_baked():
    """torch's deepcopy shares the generated parametrized class: baking the copy would break the original."""
    from nlpcompress.parametrize import clone

    model = tiny_model()
    attach(model, ENCODER_LINEARS, lambda name, linear: random_mask(linear, 5))
    with torch.no_grad():
        before = model(**inputs()).logits
    twin = clone(model)
    assert bake(twin) == 12 and transforms(twin) == {}
    with torch.no_grad():
        torch.testing.assert_close(model(**inputs()).logits, before)  # still parametrized, still working
        torch.testing.assert_close(twin(**inputs()).logits, before, atol=1e-6, rtol=0)
    assert bake(model) == 12
