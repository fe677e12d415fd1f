"""Student initialisation: a subset of the teacher's layers (DistilBERT), or a fresh smaller config."""

from collections.abc import Sequence

import torch

from nlpcompress.compact import CompactBertConfig, CompactBertForSequenceClassification
from nlpcompress.errors import ConfigError

_LAYER_PREFIX = "compact_bert.encoder.layers."


def every_other_layer(num_layers: int) -> list[int]:
    """Every other teacher layer, ending with the last (6 -> [1, 3, 5]); DistilBERT §3 halves BERT this way."""
    return list(range(num_layers % 2 == 0, num_layers, 2)) if num_layers > 1 else [0]


def student_from_teacher(
    teacher: CompactBertForSequenceClassification, layers: Sequence[int]
) -> CompactBertForSequenceClassification:
    """A copy of ``teacher`` keeping the layers at depths ``layers`` (0-based, increasing), plus its
    embeddings and classifier (Sanh et al. 2019, §3: "taking one layer out of two").

    Each kept depth becomes its own layer, so a shared (ALBERT) teacher gives an unshared student.
    """
    config = teacher.config
    depth = config.num_hidden_layers
    layers = list(layers)
    if not layers or any(not 0 <= i < depth for i in layers) or layers != sorted(set(layers)):
        raise ConfigError("layers", layers, f"need increasing, distinct teacher depths in 0..{depth - 1}")
    unique = [config.layer_map[i] for i in layers]
    student_config = CompactBertConfig(
        **{
            **config.to_dict(),
            "num_hidden_layers": len(layers),
            "layer_map": list(range(len(layers))),
            "heads_per_layer": [config.heads_per_layer[u] for u in unique],
            "intermediate_sizes": [config.intermediate_sizes[u] for u in unique],
            "attention_owner": None,
            "ffn_owner": None,
        }
    )
    owners = {"attention": config.attention_owner, "ffn": config.ffn_owner}
    state = {}
    for key, value in teacher.state_dict().items():
        if not key.startswith(_LAYER_PREFIX):
            state[key] = value
            continue
        index, rest = key.removeprefix(_LAYER_PREFIX).split(".", 1)
        block = rest.split(".", 1)[0]
        for new_index, source in enumerate(unique):
            if int(index) == owners[block][source]:  # a borrowed block comes from its owner
                state[f"{_LAYER_PREFIX}{new_index}.{rest}"] = value
    return _build(student_config, teacher, state)


def fresh_student(
    teacher: CompactBertForSequenceClassification,
    num_layers: int,
    hidden_size: int | None = None,
    num_attention_heads: int | None = None,
    intermediate_size: int | None = None,
) -> CompactBertForSequenceClassification:
    """A randomly initialised compact student with the teacher's vocabulary, labels and family details.

    Unset width and heads default to the teacher's, the FFN width to 4 x hidden; TinyBERT §4.1 uses fewer layers, a narrower hidden size and
    the same number of heads, so the attention term compares head by head.
    """
    config = teacher.config
    hidden_size = hidden_size or config.hidden_size
    heads = num_attention_heads or config.num_attention_heads
    if num_layers < 1 or hidden_size % heads:
        raise ConfigError(
            "num_layers",
            (num_layers, hidden_size, heads),
            "a fresh student needs num_layers >= 1 and hidden_size divisible by num_attention_heads "
            "(values: layers, hidden size, heads)",
        )
    shared = {
        k: v
        for k, v in config.to_dict().items()
        if k
        in (
            "vocab_size", "max_position_embeddings", "type_vocab_size", "position_style", "hidden_act",
            "classifier_activation", "layer_norm_eps", "initializer_range", "pad_token_id", "source_family",
            "hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout",
            "num_labels", "id2label", "label2id", "problem_type", "token_map_size",
        )
    }  # fmt: skip
    student_config = CompactBertConfig(
        **shared,
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=heads,
        intermediate_size=intermediate_size or hidden_size * 4,
    )
    student = _build(student_config, teacher, None)
    if config.token_map_size:  # the teacher's pruned vocabulary: same rows, same map
        student.compact_bert.embeddings.token_map.copy_(teacher.compact_bert.embeddings.token_map)
    return student


def _build(
    config: CompactBertConfig,
    teacher: CompactBertForSequenceClassification,
    state: dict[str, torch.Tensor] | None,
) -> CompactBertForSequenceClassification:
    parameter = next(teacher.parameters())
    student = CompactBertForSequenceClassification(config)
    if state is not None:
        student.load_state_dict(state, strict=True)
    return student.to(device=parameter.device, dtype=parameter.dtype)
