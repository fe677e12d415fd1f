"""Converters between Hugging Face BERT-family classifiers and the compact model.

Each family is described by a structure table: how its config maps to a ``CompactBertConfig``
and how each of its state-dict keys maps to a compact key. Import is the forward mapping; export
to the plain HF class runs the same mapping over the HF model's own keys, so both directions share
one table and cannot drift apart.
"""

import re
from collections.abc import Callable
from dataclasses import dataclass

import torch
import transformers as hf

from .configuration_compact_bert import CompactBertConfig
from .modeling_compact_bert import CompactBertForSequenceClassification

_BERT_LAYER = [
    (r"attention\.self\.(query|key|value)\.", r"attention.\1."),
    (r"attention\.output\.dense\.", "attention.output."),
    (r"attention\.output\.LayerNorm\.", "attention.layer_norm."),
    (r"intermediate\.dense\.", "ffn.intermediate."),
    (r"output\.dense\.", "ffn.output."),
    (r"output\.LayerNorm\.", "ffn.layer_norm."),
]
_DISTILBERT_LAYER = [
    (r"attention\.q_lin\.", "attention.query."),
    (r"attention\.k_lin\.", "attention.key."),
    (r"attention\.v_lin\.", "attention.value."),
    (r"attention\.out_lin\.", "attention.output."),
    (r"sa_layer_norm\.", "attention.layer_norm."),
    (r"ffn\.lin1\.", "ffn.intermediate."),
    (r"ffn\.lin2\.", "ffn.output."),
    (r"output_layer_norm\.", "ffn.layer_norm."),
]
_ALBERT_LAYER = [
    (r"attention\.(query|key|value)\.", r"attention.\1."),
    (r"attention\.dense\.", "attention.output."),
    (r"attention\.LayerNorm\.", "attention.layer_norm."),
    (r"ffn\.", "ffn.intermediate."),
    (r"ffn_output\.", "ffn.output."),
    (r"full_layer_layer_norm\.", "ffn.layer_norm."),
]


def _embeddings(prefix: str) -> list[tuple[str, str]]:
    base = re.escape(prefix)
    return [
        (
            base + r"embeddings\.(word|position|token_type)_embeddings\.",
            r"compact_bert.embeddings.\1_embeddings.",
        ),
        (base + r"embeddings\.LayerNorm\.", "compact_bert.embeddings.layer_norm."),
    ]


@dataclass(frozen=True)
class Family:
    """Structure table of one HF family: classes, key prefix, key rules and config mapping."""

    name: str
    config_class: type
    model_class: type
    prefix: str
    layer_pattern: str
    layer_rules: list[tuple[str, str]]
    top_rules: list[tuple[str, str]]  # patterns on the full key
    to_compact_config: Callable[[object], dict]
    from_compact_config: Callable[[CompactBertConfig], dict]


def _bert_like_config(config, **extra) -> dict:
    return dict(
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        intermediate_size=config.intermediate_size,
        hidden_act=config.hidden_act,
        max_position_embeddings=config.max_position_embeddings,
        type_vocab_size=config.type_vocab_size,
        layer_norm_eps=config.layer_norm_eps,
        hidden_dropout_prob=config.hidden_dropout_prob,
        attention_probs_dropout_prob=config.attention_probs_dropout_prob,
        classifier_dropout=getattr(config, "classifier_dropout", None),
        initializer_range=config.initializer_range,
        pad_token_id=config.pad_token_id,
        **extra,
    )


def _to_bert_like(compact: CompactBertConfig, **extra) -> dict:
    fields = dict(
        vocab_size=compact.vocab_size,
        hidden_size=compact.hidden_size,
        num_hidden_layers=compact.num_hidden_layers,
        num_attention_heads=compact.num_attention_heads,
        intermediate_size=compact.intermediate_size,
        hidden_act=compact.hidden_act,
        max_position_embeddings=compact.max_position_embeddings,
        type_vocab_size=compact.type_vocab_size,
        layer_norm_eps=compact.layer_norm_eps,
        hidden_dropout_prob=compact.hidden_dropout_prob,
        attention_probs_dropout_prob=compact.attention_probs_dropout_prob,
        classifier_dropout=compact.classifier_dropout,
        initializer_range=compact.initializer_range,
        pad_token_id=compact.pad_token_id,
    )
    return fields | extra


def _distilbert_config(config) -> dict:
    return dict(
        vocab_size=config.vocab_size,
        hidden_size=config.dim,
        num_hidden_layers=config.n_layers,
        num_attention_heads=config.n_heads,
        intermediate_size=config.hidden_dim,
        hidden_act=config.activation,
        max_position_embeddings=config.max_position_embeddings,
        type_vocab_size=0,
        layer_norm_eps=1e-12,
        hidden_dropout_prob=config.dropout,
        attention_probs_dropout_prob=config.attention_dropout,
        classifier_dropout=config.seq_classif_dropout,
        initializer_range=config.initializer_range,
        pad_token_id=config.pad_token_id,
        classifier_activation="relu",
    )


def _to_distilbert(compact: CompactBertConfig) -> dict:
    return dict(
        vocab_size=compact.vocab_size,
        dim=compact.hidden_size,
        n_layers=compact.num_hidden_layers,
        n_heads=compact.num_attention_heads,
        hidden_dim=compact.intermediate_size,
        activation=compact.hidden_act,
        max_position_embeddings=compact.max_position_embeddings,
        dropout=compact.hidden_dropout_prob,
        attention_dropout=compact.attention_probs_dropout_prob,
        seq_classif_dropout=compact.classifier_dropout or 0.2,
        initializer_range=compact.initializer_range,
        pad_token_id=compact.pad_token_id,
    )


def _albert_layer_map(config) -> list[int]:
    """Depth i uses group int(i / (layers / groups)), then its inner layers in order (AlbertTransformer)."""
    per_group = config.num_hidden_layers / config.num_hidden_groups
    inner = config.inner_group_num
    return [int(i / per_group) * inner + j for i in range(config.num_hidden_layers) for j in range(inner)]


def _albert_config(config) -> dict:
    base = _bert_like_config(
        config, embedding_size=config.embedding_size, layer_map=_albert_layer_map(config)
    )
    base["classifier_dropout"] = config.classifier_dropout_prob
    return base


def _to_albert(compact: CompactBertConfig) -> dict:
    """ALBERT fields for a compact layer map: the grouping (groups x inner layers) that reproduces it."""
    unique = compact.num_unique_layers
    for inner in (i for i in range(1, unique + 1) if unique % i == 0 and len(compact.layer_map) % i == 0):
        config = _to_bert_like(
            compact,
            embedding_size=compact.embedding_size,
            num_hidden_layers=len(compact.layer_map) // inner,
            num_hidden_groups=unique // inner,
            inner_group_num=inner,
        )
        config["classifier_dropout_prob"] = config.pop("classifier_dropout") or 0.1
        if _albert_layer_map(hf.AlbertConfig(**config)) == compact.layer_map:
            return config
    raise ValueError(f"layer_map {compact.layer_map} is not an ALBERT grouping of {unique} unique layers")


def _electra_config(config) -> dict:
    factorized = config.embedding_size != config.hidden_size
    return _bert_like_config(
        config, embedding_size=config.embedding_size if factorized else None, classifier_activation="gelu"
    )


FAMILIES: dict[str, Family] = {
    "bert": Family(
        "bert",
        hf.BertConfig,
        hf.BertForSequenceClassification,
        "bert.",
        r"encoder\.layer\.(\d+)\.",
        _BERT_LAYER,
        [
            *_embeddings("bert."),
            (r"bert\.pooler\.dense\.", "classifier.dense."),
            (r"classifier\.", "classifier.out_proj."),
        ],
        _bert_like_config,
        _to_bert_like,
    ),
    "roberta": Family(
        "roberta",
        hf.RobertaConfig,
        hf.RobertaForSequenceClassification,
        "roberta.",
        r"encoder\.layer\.(\d+)\.",
        _BERT_LAYER,
        [*_embeddings("roberta."), (r"classifier\.(dense|out_proj)\.", r"classifier.\1.")],
        lambda c: _bert_like_config(c, position_style="padding_aware"),
        _to_bert_like,
    ),
    "electra": Family(
        "electra",
        hf.ElectraConfig,
        hf.ElectraForSequenceClassification,
        "electra.",
        r"encoder\.layer\.(\d+)\.",
        _BERT_LAYER,
        [
            *_embeddings("electra."),
            (r"electra\.embeddings_project\.", "compact_bert.embeddings.projection."),
            (r"classifier\.(dense|out_proj)\.", r"classifier.\1."),
        ],
        _electra_config,
        lambda c: _to_bert_like(c, embedding_size=c.embedding_size or c.hidden_size),
    ),
    "distilbert": Family(
        "distilbert",
        hf.DistilBertConfig,
        hf.DistilBertForSequenceClassification,
        "distilbert.",
        r"transformer\.layer\.(\d+)\.",
        _DISTILBERT_LAYER,
        [
            *_embeddings("distilbert."),
            (r"pre_classifier\.", "classifier.dense."),
            (r"classifier\.", "classifier.out_proj."),
        ],
        _distilbert_config,
        _to_distilbert,
    ),
    "albert": Family(
        "albert",
        hf.AlbertConfig,
        hf.AlbertForSequenceClassification,
        "albert.",
        r"encoder\.albert_layer_groups\.(\d+)\.albert_layers\.(\d+)\.",
        _ALBERT_LAYER,
        [
            *_embeddings("albert."),
            (r"albert\.encoder\.embedding_hidden_mapping_in\.", "compact_bert.embeddings.projection."),
            (r"albert\.pooler\.", "classifier.dense."),
            (r"classifier\.", "classifier.out_proj."),
        ],
        _albert_config,
        _to_albert,
    ),
}
SUPPORTED_MODEL_TYPES = tuple(FAMILIES)


def _unique_layer(family: Family, match: re.Match, inner_group_num: int) -> int:
    if family.name == "albert":
        return int(match.group(1)) * inner_group_num + int(match.group(2))
    return int(match.group(1))


def compact_key(family: Family, key: str, inner_group_num: int = 1) -> str:
    """The compact state-dict key for one HF key; ValueError for a key the table does not know."""
    body = key.removeprefix(family.prefix)
    layer = re.match(family.layer_pattern, body) if body != key else None
    if layer:
        rules, text = family.layer_rules, body[layer.end() :]
        head = f"compact_bert.encoder.layers.{_unique_layer(family, layer, inner_group_num)}."
    else:
        rules, text, head = family.top_rules, key, ""
    for pattern, target in rules:
        if re.match(pattern, text):
            return head + re.sub(pattern, target, text, count=1)
    raise ValueError(f"no {family.name} structure rule for weight {key!r}")


def family_of(model_type: str) -> Family:
    if model_type not in FAMILIES:
        raise ValueError(
            f"model type {model_type!r} is not BERT-family; supported: {', '.join(SUPPORTED_MODEL_TYPES)}"
        )
    return FAMILIES[model_type]


def compact_config_from_hf(config) -> CompactBertConfig:
    family = family_of(config.model_type)
    fields = family.to_compact_config(config)
    return CompactBertConfig(
        **fields,
        source_family=family.name,
        num_labels=config.num_labels,
        id2label=dict(config.id2label),
        label2id=dict(config.label2id),
        problem_type=config.problem_type,
    )


def from_hf(model: torch.nn.Module) -> CompactBertForSequenceClassification:
    """Convert an HF ``*ForSequenceClassification`` model of a supported family; same logits."""
    family = family_of(model.config.model_type)
    config = compact_config_from_hf(model.config)
    inner = getattr(model.config, "inner_group_num", 1)
    state = {compact_key(family, k, inner): v for k, v in model.state_dict().items()}
    compact = CompactBertForSequenceClassification(config)
    compact.load_state_dict(state, strict=True)
    return compact.to(next(model.parameters()).dtype).train(model.training)


# Everything that decides what the network computes; an export must reproduce all of it.
_STRUCTURE = (
    "vocab_size",
    "hidden_size",
    "attention_head_size",
    "heads_per_layer",
    "intermediate_sizes",
    "layer_map",
    "embedding_size",
    "max_position_embeddings",
    "type_vocab_size",
    "position_style",
    "hidden_act",
    "classifier_activation",
    "layer_norm_eps",
)


def to_hf(model: CompactBertForSequenceClassification) -> torch.nn.Module:
    """Export to the plain HF class of the model's source family; ValueError unless it is exact.

    The family's HF config is built from the compact one and converted back: every structural
    field must survive the round trip (uniform heads and widths, the family's positions, head
    activation, token types, factorization), and every compact weight must find an HF home.
    """
    config = model.config
    family = family_of(config.source_family)
    hf_config = family.config_class(
        **family.from_compact_config(config),
        num_labels=config.num_labels,
        id2label=dict(config.id2label),
        label2id=dict(config.label2id),
        problem_type=config.problem_type,
    )
    back = compact_config_from_hf(hf_config)
    differences = [
        f"{f} is {getattr(config, f)} ({family.name} needs {getattr(back, f)})"
        for f in _STRUCTURE
        if getattr(config, f) != getattr(back, f)
    ]
    if differences:
        raise ValueError(f"no exact {family.model_class.__name__} equivalent: {'; '.join(differences)}")
    hf_model = family.model_class(hf_config)
    inner = getattr(hf_config, "inner_group_num", 1)
    keys = {k: compact_key(family, k, inner) for k in hf_model.state_dict()}
    compact_state = model.state_dict()
    unused = set(compact_state) - set(keys.values())
    missing = set(keys.values()) - set(compact_state)
    if unused or missing:
        raise ValueError(
            f"no exact {family.model_class.__name__} equivalent: compact weights without a home "
            f"{sorted(unused)}, {family.name} weights the compact model lacks {sorted(missing)}"
        )
    hf_model.load_state_dict({k: compact_state[c] for k, c in keys.items()}, strict=True)
    return hf_model.to(next(model.parameters()).dtype).train(model.training)
