"""The compact model describes itself: per-depth heads, FFN widths, sharing, embedding factorization,
sparsity, weight bits, parameters and multiply-accumulates. The runner's ``results.json``, the model
card and ``nlpcompress inspect`` print this description, so none of them names config fields; and its
state (``model_state``), which the stage contracts read.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from torch import nn

from nlpcompress.compact.storage import StoredLinear, weight_bits
from nlpcompress.measure import count_parameters, encoder_macs, zero_counts
from nlpcompress.parametrize import transforms

MACS_LENGTH = 128  # sequence length of the reported multiply-accumulates


def describe(model: nn.Module) -> dict[str, Any]:
    """A JSON-ready description of a compact classifier's structure."""
    config = model.config
    zeros: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    bits: dict[int, int] = {}
    for name, (zero, size) in zero_counts(model).items():
        layer = int(name.split(".layers.")[1].split(".")[0])
        zeros[layer][0] += zero
        zeros[layer][1] += size
    unique_layers = model.base_model.encoder.layers
    for index in range(len(unique_layers)):
        bits[index] = weight_bits(unique_layers[config.attention_owner[index]].attention.query)
    uses = defaultdict(list)
    for depth, unique in enumerate(config.layer_map):
        uses[unique].append(depth)
    layers = [
        {
            "depth": depth,
            "unique_layer": unique,
            "shared_with": [d for d in uses[unique] if d != depth],
            "attention_from": config.layer_map.index(config.attention_owner[unique]),
            "ffn_from": config.layer_map.index(config.ffn_owner[unique]),
            "heads": config.heads_per_layer[unique],
            "ffn_width": config.intermediate_sizes[unique],
            "sparsity": round(zeros[unique][0] / zeros[unique][1], 4) if zeros[unique][1] else 0.0,
            "weight_bits": bits[unique],
        }
        for depth, unique in enumerate(config.layer_map)
    ]
    zero_total = sum(z for z, _ in zeros.values())
    size_total = sum(s for _, s in zeros.values())
    return {
        "family": config.source_family,
        "hidden_size": config.hidden_size,
        "vocab_size": config.vocab_size,
        **({"token_ids_read": config.token_map_size} if config.token_map_size else {}),  # through the map
        "embedding_size": config.embedding_size or config.hidden_size,
        "factorized_embeddings": bool(config.embedding_size),
        "word_embedding_rank": config.word_embedding_rank,
        "low_rank_linears": {name: spec["rank"] for name, spec in config.stored_as("low_rank").items()},
        "quantized_embeddings_bits": config.quantized_embeddings.get("bits"),
        "quantized_position_embeddings_bits": config.quantized_embeddings.get("position_bits"),
        "depth": config.num_hidden_layers,
        "unique_layers": config.num_unique_layers,
        "heads_per_depth": [layer["heads"] for layer in layers],
        "ffn_width_per_depth": [layer["ffn_width"] for layer in layers],
        "layers": layers,
        "params": count_parameters(model),
        "encoder_sparsity": round(zero_total / size_total, 4) if size_total else 0.0,
        f"macs_seq{MACS_LENGTH}": encoder_macs(config, MACS_LENGTH),
    }


def summary_line(structure: dict[str, Any]) -> str:
    """One line: depth, sharing, embeddings, heads and FFN widths."""
    shared = (
        f", {structure['unique_layers']} unique (shared)"
        if structure["unique_layers"] < structure["depth"]
        else ""
    )
    embeddings = (
        f"factorized embeddings E={structure['embedding_size']}"
        if structure["factorized_embeddings"]
        else f"embeddings {structure['embedding_size']}"
    )
    return (
        f"{structure['family']}, {structure['depth']} layers{shared}, hidden {structure['hidden_size']}, "
        f"{embeddings}; heads {structure['heads_per_depth']}, FFN {structure['ffn_width_per_depth']}, "
        f"encoder sparsity {structure['encoder_sparsity']:.3f}"
    )


_COLUMNS = ("depth", "unique_layer", "heads", "ffn_width", "sparsity", "weight_bits")


def layer_table(structure: dict[str, Any], markdown: bool = False) -> list[str]:
    """The per-depth table as text lines (aligned columns, or a Markdown table)."""
    rows = [[str(layer[column]) for column in _COLUMNS] for layer in structure["layers"]]
    if markdown:
        header = ["| " + " | ".join(_COLUMNS) + " |", "|" + "---|" * len(_COLUMNS)]
        return header + ["| " + " | ".join(row) + " |" for row in rows]
    widths = [max([len(column), *(len(row[i]) for row in rows)]) for i, column in enumerate(_COLUMNS)]
    lines = ["  ".join(column.rjust(widths[i]) for i, column in enumerate(_COLUMNS))]
    return lines + ["  ".join(value.rjust(widths[i]) for i, value in enumerate(row)) for row in rows]


# What a model may be, beyond a plain dense unshared encoder (the stage contracts: stages.contracts).
STATES = {
    "transforms": "masks, gates or fake quantizers are attached to its linears",
    "sparse-stored": "linears are stored by their non-zero pattern",
    "factorized": "encoder linears are stored as two low-rank factors",
    "shared": "depths share layers or attention / FFN blocks",
    "quantized": "weights are stored as packed integer codes",
}


def model_state(model: nn.Module) -> frozenset[str]:
    """The ``STATES`` that describe ``model``: its transforms, its linears' storage kinds, sharing, packed embeddings."""
    config = model.config
    state = {"transforms"} if transforms(model) else set()
    state |= {linear.state for linear in model.modules() if isinstance(linear, StoredLinear)}
    identity = list(range(config.num_unique_layers))
    if config.layer_map != list(range(config.num_hidden_layers)) or not (
        config.attention_owner == config.ffn_owner == identity
    ):
        state.add("shared")
    if config.quantized_embeddings:
        state.add("quantized")
    return frozenset(state)
