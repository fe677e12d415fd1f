"""The compact BERT encoder: per-layer heads and FFN widths, shared layers, factorized embeddings.

Self-contained (imports only torch and transformers) so it can be copied into a saved model folder
and loaded with ``trust_remote_code=True`` where nlpcompress is not installed.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_outputs import SequenceClassifierOutput
from transformers.utils import ModelOutput

from .configuration_compact_bert import CompactBertConfig
from .nm_sparse import NMSparseLinear  # noqa: F401  (registers the storage kind; this import ships its file)
from .quantized import QuantizedEmbedding
from .storage import StoredLinear, build_linear


@dataclass
class CompactEncoderOutput(ModelOutput):
    """Encoder output; ``attention_scores`` are the unnormalised, unmasked Q·K/sqrt(d) per layer."""

    last_hidden_state: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None
    attention_scores: tuple[torch.Tensor, ...] | None = None


@dataclass
class CompactSequenceClassifierOutput(SequenceClassifierOutput):
    attention_scores: tuple[torch.Tensor, ...] | None = None


def _linear(config: CompactBertConfig, name: str, in_features: int, out_features: int) -> nn.Module:
    """The linear ``name`` (``layers.<i>.<block>.<linear>``, or ``classifier.dense``), stored as
    ``config.stored_linears`` says."""
    return build_linear(config.stored_linears.get(name), in_features, out_features)


def _table(rows: int, width: int, bits: int | None, padding_idx: int | None = None) -> nn.Module:
    """An embedding table, bit-packed with one scale per row when it has ``bits``."""
    if bits is None:
        return nn.Embedding(rows, width, padding_idx=padding_idx)
    return QuantizedEmbedding(rows, width, bits, padding_idx=padding_idx)


class CompactEmbeddings(nn.Module):
    """Word embeddings (vocab × r plus a projection when ``config.word_embedding_rank`` is set; read through
    ``token_map`` when ``config.token_map_size`` is set), position and token-type embeddings (each table
    bit-packed where ``config.quantized_embeddings`` gives it bits), their LayerNorm and the optional
    projection to the hidden size."""

    def __init__(self, config: CompactBertConfig):
        super().__init__()
        width = config.embedding_size or config.hidden_size
        rank = config.word_embedding_rank
        bits = config.quantized_embeddings
        self.word_embeddings = _table(config.vocab_size, rank or width, bits.get("bits"), config.pad_token_id)
        self.word_projection = nn.Linear(rank, width, bias=False) if rank else None
        size = config.token_map_size
        self.register_buffer("token_map", torch.zeros(size, dtype=torch.int32) if size else None)
        self.position_embeddings = _table(config.max_position_embeddings, width, bits.get("position_bits"))
        self.token_type_embeddings = (
            _table(config.type_vocab_size, width, bits.get("position_bits"))
            if config.type_vocab_size > 0
            else None
        )
        self.layer_norm = nn.LayerNorm(width, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.projection = nn.Linear(width, config.hidden_size) if config.embedding_size else None
        self.position_style = config.position_style
        self.pad_token_id = config.pad_token_id

    def position_ids_for(self, input_ids: torch.Tensor) -> torch.Tensor:
        if self.position_style == "padding_aware":
            # RoBERTa: non-padding tokens are numbered from pad_token_id + 1, padding keeps pad_token_id.
            not_pad = input_ids.ne(self.pad_token_id).long()
            return torch.cumsum(not_pad, dim=1) * not_pad + self.pad_token_id
        return torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)

    def forward(
        self,
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if position_ids is None:
            position_ids = self.position_ids_for(input_ids)
        words = self.word_embeddings(input_ids if self.token_map is None else self.token_map[input_ids])
        if self.word_projection is not None:
            words = self.word_projection(words)
        embeddings = words + self.position_embeddings(position_ids)
        if self.token_type_embeddings is not None:
            if token_type_ids is None:
                token_type_ids = torch.zeros_like(input_ids)
            embeddings = embeddings + self.token_type_embeddings(token_type_ids)
        embeddings = self.dropout(self.layer_norm(embeddings))
        if self.projection is not None:
            embeddings = self.projection(embeddings)
        return embeddings


class CompactSelfAttention(nn.Module):
    """Multi-head self-attention (``num_heads`` may differ per layer, or be 0) with its output projection
    and post-LayerNorm."""

    def __init__(self, config: CompactBertConfig, num_heads: int, prefix: str):
        super().__init__()
        self.num_heads = num_heads
        self.head_size = config.attention_head_size
        inner = num_heads * self.head_size
        self.query = _linear(config, f"{prefix}.query", config.hidden_size, inner)
        self.key = _linear(config, f"{prefix}.key", config.hidden_size, inner)
        self.value = _linear(config, f"{prefix}.value", config.hidden_size, inner)
        self.output = _linear(config, f"{prefix}.output", inner, config.hidden_size)
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.attention_dropout = config.attention_probs_dropout_prob

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, self.num_heads, self.head_size).transpose(1, 2)

    def forward(
        self, hidden: torch.Tensor, mask_bias: torch.Tensor | None, explicit: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        if self.num_heads == 0:
            # Every head removed: the block adds only the output bias before the LayerNorm.
            return self.layer_norm(hidden + self.dropout(self.output.bias)), None, None
        q = self._split_heads(self.query(hidden))
        k = self._split_heads(self.key(hidden))
        v = self._split_heads(self.value(hidden))
        dropout = self.attention_dropout if self.training else 0.0
        probs = scores = None
        if explicit:
            scores = torch.matmul(q, k.transpose(-1, -2)) * self.head_size**-0.5
            masked = scores if mask_bias is None else scores + mask_bias
            probs = torch.softmax(masked, dim=-1)
            context = torch.matmul(F.dropout(probs, dropout, self.training), v)
        else:
            context = F.scaled_dot_product_attention(q, k, v, attn_mask=mask_bias, dropout_p=dropout)
        batch, _, length, _ = context.shape
        context = context.transpose(1, 2).reshape(batch, length, self.num_heads * self.head_size)
        out = self.layer_norm(hidden + self.dropout(self.output(context)))
        return out, probs, scores


class CompactFeedForward(nn.Module):
    def __init__(self, config: CompactBertConfig, width: int, prefix: str):
        super().__init__()
        self.intermediate = _linear(config, f"{prefix}.intermediate", config.hidden_size, width)
        self.activation = ACT2FN[config.hidden_act]
        self.output = _linear(config, f"{prefix}.output", width, config.hidden_size)
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        inner = self.activation(self.intermediate(hidden))
        return self.layer_norm(hidden + self.dropout(self.output(inner)))


class CompactLayer(nn.Module):
    """One unique layer: its attention and FFN blocks, or None for a block it borrows from its owner."""

    def __init__(self, config: CompactBertConfig, index: int):
        super().__init__()
        self.attention = (
            CompactSelfAttention(config, config.heads_per_layer[index], f"layers.{index}.attention")
            if config.attention_owner[index] == index
            else None
        )
        self.ffn = (
            CompactFeedForward(config, config.intermediate_sizes[index], f"layers.{index}.ffn")
            if config.ffn_owner[index] == index
            else None
        )

    def forward(
        self,
        hidden: torch.Tensor,
        mask_bias: torch.Tensor | None,
        explicit: bool,
        attention: CompactSelfAttention | None = None,
        ffn: CompactFeedForward | None = None,
    ):
        """``attention`` / ``ffn``: the owner's blocks where this layer borrows them (its own otherwise)."""
        attention = attention if attention is not None else self.attention
        ffn = ffn if ffn is not None else self.ffn
        hidden, probs, scores = attention(hidden, mask_bias, explicit)
        return ffn(hidden), probs, scores


class CompactEncoder(nn.Module):
    """The unique layers, applied in the order ``config.layer_map`` gives (repeats = sharing)."""

    def __init__(self, config: CompactBertConfig):
        super().__init__()
        self.layers = nn.ModuleList(CompactLayer(config, index) for index in range(config.num_unique_layers))
        self.layer_map = list(config.layer_map)
        self.attention_owner, self.ffn_owner = list(config.attention_owner), list(config.ffn_owner)

    def forward(
        self,
        hidden: torch.Tensor,
        mask_bias: torch.Tensor | None,
        output_hidden_states: bool,
        output_attentions: bool,
        output_attention_scores: bool,
    ) -> CompactEncoderOutput:
        explicit = output_attentions or output_attention_scores
        all_hidden, all_probs, all_scores = [hidden], [], []
        for index in self.layer_map:
            attention = self.layers[self.attention_owner[index]].attention
            ffn = self.layers[self.ffn_owner[index]].ffn
            hidden, probs, scores = self.layers[index](hidden, mask_bias, explicit, attention, ffn)
            all_hidden.append(hidden)
            all_probs.append(probs)
            all_scores.append(scores)
        return CompactEncoderOutput(
            last_hidden_state=hidden,
            hidden_states=tuple(all_hidden) if output_hidden_states else None,
            attentions=tuple(all_probs) if output_attentions else None,
            attention_scores=tuple(all_scores) if output_attention_scores else None,
        )


class CompactBertPreTrainedModel(PreTrainedModel):
    config_class = CompactBertConfig
    config: CompactBertConfig
    base_model_prefix = "compact_bert"
    _supports_sdpa = True

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, StoredLinear):
            module.init_weights(init, self.config.initializer_range)
            return
        if isinstance(module, nn.Linear) and module.weight.numel() == 0:
            if module.bias is not None:
                init.zeros_(module.bias)
            return
        super()._init_weights(module)


def _mask_bias(attention_mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """(batch, length) 1/0 mask -> additive (batch, 1, 1, length) bias; None when nothing is masked."""
    if attention_mask is None or bool(attention_mask.all()):
        return None
    keep = attention_mask[:, None, None, :].to(dtype)
    return (1.0 - keep) * torch.finfo(dtype).min


class CompactBertModel(CompactBertPreTrainedModel):
    def __init__(self, config: CompactBertConfig):
        super().__init__(config)
        self.embeddings = CompactEmbeddings(config)
        self.encoder = CompactEncoder(config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embeddings.word_embeddings = value

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        output_attention_scores: bool = False,
        return_dict: bool | None = None,
    ) -> CompactEncoderOutput:
        hidden = self.embeddings(input_ids, token_type_ids, position_ids)
        return self.encoder(
            hidden,
            _mask_bias(attention_mask, hidden.dtype),
            output_hidden_states=bool(output_hidden_states),
            output_attentions=bool(output_attentions),
            output_attention_scores=output_attention_scores,
        )


class CompactClassificationHead(nn.Module):
    """First-token pooling, dense + activation, classifier (BERT pooler / RoBERTa / ELECTRA head)."""

    def __init__(self, config: CompactBertConfig):
        super().__init__()
        self.dense = _linear(config, "classifier.dense", config.hidden_size, config.hidden_size)
        self.activation = ACT2FN[config.classifier_activation]
        dropout = config.classifier_dropout
        self.dropout = nn.Dropout(config.hidden_dropout_prob if dropout is None else dropout)
        self.out_proj = nn.Linear(config.hidden_size, config.num_labels)

    def forward(self, sequence: torch.Tensor) -> torch.Tensor:
        pooled = self.activation(self.dense(sequence[:, 0]))
        return self.out_proj(self.dropout(pooled))


class CompactBertForSequenceClassification(CompactBertPreTrainedModel):
    def __init__(self, config: CompactBertConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.compact_bert = CompactBertModel(config)
        self.classifier = CompactClassificationHead(config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.compact_bert.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.compact_bert.set_input_embeddings(value)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        output_attention_scores: bool = False,
        return_dict: bool | None = None,
    ) -> CompactSequenceClassifierOutput:
        encoded = self.compact_bert(
            input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
            output_attention_scores=output_attention_scores,
        )
        logits = self.classifier(encoded.last_hidden_state)
        loss = self._loss(logits, labels) if labels is not None else None
        return CompactSequenceClassifierOutput(
            loss=loss,
            logits=logits,
            hidden_states=encoded.hidden_states,
            attentions=encoded.attentions,
            attention_scores=encoded.attention_scores,
        )

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Regression (MSE) for one output, cross-entropy otherwise, BCE for multi-label (as HF)."""
        if self.num_labels == 1 or self.config.problem_type == "regression":
            return F.mse_loss(logits.squeeze(-1), labels.to(logits.dtype).view(-1))
        if self.config.problem_type == "multi_label_classification":
            return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
        return F.cross_entropy(logits.view(-1, self.num_labels), labels.view(-1))
