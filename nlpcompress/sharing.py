"""Cross-layer parameter sharing applied to a trained model (ALBERT, Lan et al. 2020 §3.1): groups of
consecutive depths come to use one layer, initialised from its members (their mean, or one of them).

The compact model runs one unique layer at several depths (``config.layer_map``) and lets a layer run
another's attention or FFN block (``attention_owner`` / ``ffn_owner``); this builds those shapes from an
unshared model. Each shared block is stored once, and its gradient is the sum over the depths that use
it (autograd does that for a module called repeatedly).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from nlpcompress.compact import CompactBertConfig, CompactBertForSequenceClassification
from nlpcompress.errors import ConfigError
from nlpcompress.parametrize import transforms

INITS = ("mean", "member")
PARTS = ("layer", "attention", "ffn")


def consecutive_groups(depth: int, num_groups: int) -> list[list[int]]:
    """``depth`` layers in ``num_groups`` runs of consecutive depths, the earlier runs one longer when uneven."""
    if not 1 <= num_groups <= depth:
        raise ValueError(f"num_groups {num_groups}: give 1 to {depth} (the model has {depth} layers)")
    size, extra = divmod(depth, num_groups)
    groups, start = [], 0
    for index in range(num_groups):
        end = start + size + (index < extra)
        groups.append(list(range(start, end)))
        start = end
    return groups


def check_groups(groups: Sequence[Sequence[int]], depth: int | None = None) -> None:
    """Groups must be non-empty runs of consecutive depths that, in order, cover 0 .. depth−1 once."""
    flat = [d for group in groups for d in group]
    runs = all(list(group) == list(range(group[0], group[0] + len(group))) for group in groups if group)
    if not groups or not all(groups) or flat != list(range(len(flat))) or not runs:
        raise ConfigError(
            "groups",
            [list(g) for g in groups],
            "need runs of consecutive depths covering 0, 1, 2, ... in order",
        )
    if depth is not None and len(flat) != depth:
        raise ValueError(
            f"groups {[list(g) for g in groups]} cover {len(flat)} depths; the model has {depth} layers"
        )


@torch.no_grad()
def share_layers(
    model: CompactBertForSequenceClassification,
    groups: Sequence[Sequence[int]],
    init: str = "mean",
    member: int = 0,
    part: str = "layer",
) -> CompactBertForSequenceClassification:
    """A new model whose depths in each group share ``part`` (``layer``: the whole layer, ``attention`` or
    ``ffn``: that block only, ALBERT Table 4): initialised as the mean of the members' weights, or as
    the weights of the group's ``member``-th depth (−1: the last). The input must be unshared."""
    config = model.config
    depth = config.num_hidden_layers
    check_groups(groups, depth)
    if init not in INITS:
        raise ConfigError("init", init, f"allowed: {', '.join(INITS)}")
    if part not in PARTS:
        raise ConfigError("share", part, f"allowed: {', '.join(PARTS)}")
    if transforms(model):
        raise ValueError("bake the weight transforms before sharing layers")
    if config.stored_linears:
        raise ValueError(
            "share layers before factorizing or sparse storage: the members must be dense layers"
        )
    identity = list(range(depth))
    if config.layer_map != identity or config.attention_owner != identity or config.ffn_owner != identity:
        raise ValueError("the model already shares layers; share once, from the unshared model")
    if not all(-len(group) <= member < len(group) for group in groups):
        raise ValueError(
            f"member {member}: every group has at least {min(map(len, groups))} depths; give a position in it"
        )
    sizes = {"attention": ("heads_per_layer",), "ffn": ("intermediate_sizes",)}.get(
        part, ("heads_per_layer", "intermediate_sizes")
    )
    for group in groups:
        shapes = {tuple(getattr(config, field)[d] for field in sizes) for d in group}
        if len(shapes) > 1:
            raise ValueError(
                f"depths {list(group)} have different shapes ({', '.join(sizes)}: {sorted(shapes)}); "
                f"only {part}s of one shape can share"
            )
    owner = [group[0] for group in groups for _ in group]
    if part == "layer":
        changes = {
            "layer_map": [index for index, group in enumerate(groups) for _ in group],
            "heads_per_layer": [config.heads_per_layer[group[0]] for group in groups],
            "intermediate_sizes": [config.intermediate_sizes[group[0]] for group in groups],
        }
        sources = {index: list(group) for index, group in enumerate(groups)}
    else:
        field = sizes[0]
        changes = {f"{part}_owner": owner, field: [getattr(config, field)[o] for o in owner]}
        sources = {group[0]: list(group) for group in groups}
    shared_config = CompactBertConfig(
        **{**config.to_dict(), "attention_owner": None, "ffn_owner": None, **changes}
    )
    prefix = f"{model.base_model_prefix}.encoder.layers."
    old = model.state_dict()
    block = "" if part == "layer" else f"{part}."
    state = {}
    for key, value in old.items():
        if not key.startswith(prefix) or not key.removeprefix(prefix).split(".", 1)[1].startswith(block):
            state[key] = value  # outside the shared part: as it was
    rests = {key.removeprefix(prefix).split(".", 1)[1] for key in old if key.startswith(prefix)}
    for target, members in sources.items():
        for rest in (r for r in rests if r.startswith(block)):
            tensors = [old[f"{prefix}{d}.{rest}"] for d in members]
            value = torch.stack(tensors).mean(0) if init == "mean" else tensors[member]
            state[f"{prefix}{target}.{rest}"] = value.clone()
    parameter = next(model.parameters())
    shared = CompactBertForSequenceClassification(shared_config)
    shared.load_state_dict(state, strict=True)
    return shared.to(device=parameter.device, dtype=parameter.dtype).train(model.training)
