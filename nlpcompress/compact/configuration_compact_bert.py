"""Configuration of the compact BERT encoder: one description for every compressed shape.

Self-contained (imports only transformers) so it can be copied into a saved model folder and
loaded with ``trust_remote_code=True`` where nlpcompress is not installed.
"""

from transformers import PreTrainedConfig

POSITION_STYLES = ("absolute", "padding_aware")
FAMILIES = ("bert", "roberta", "electra", "distilbert", "albert")
# How folders saved before ``stored_linears`` named their stored linears: old field -> (kind, its one
# field, or None where the old value was the whole spec).
LEGACY_STORAGE_FIELDS = {
    "sparse_weights": ("sparse", "nonzeros"),
    "low_rank": ("low_rank", "rank"),
    "quantized_weights": ("quantized", None),
}


class CompactBertConfig(PreTrainedConfig):
    """A post-LayerNorm BERT encoder whose shape may differ per layer.

    ``heads_per_layer`` and ``intermediate_sizes`` describe the *unique* layers; ``layer_map[i]``
    names the unique layer used at depth ``i`` (ALBERT-style sharing when entries repeat).
    ``embedding_size`` smaller than ``hidden_size`` factorizes the embeddings (vocab x E, then a
    projection E x H after the embedding LayerNorm, as in ALBERT and ELECTRA).
    ``position_style="padding_aware"`` numbers positions from ``pad_token_id + 1`` (RoBERTa).
    ``type_vocab_size=0`` drops token types (DistilBERT). ``stored_linears`` names the encoder linears
    stored in another form than one float matrix (``layers.<i>.<attention|ffn>.<linear>`` →
    ``{"kind": ..., **fields}``, a kind of ``storage.STORAGE_KINDS``: sparse, low-rank, packed-quantized, ...);
    the fields of folders saved before it (``sparse_weights``, ``low_rank``, ``quantized_weights``) are
    read into it. ``word_embedding_rank`` stores the word embeddings as vocab x r plus an r x H projection (no bias)
    applied before the position and token-type embeddings are added: the layout that factorizing a
    trained model's matrix gives (truncated SVD), leaving its position and token-type embeddings and
    LayerNorm as trained. ``attention_owner[j]`` / ``ffn_owner[j]`` name the unique layer whose attention / FFN block unique
    layer ``j`` runs (ALBERT's attention-only or FFN-only sharing): a layer that borrows stores no
    block of its own, and its head count or FFN width is its owner's. ``quantized_embeddings``
    (``{"bits": b}`` for the word embeddings, ``{"position_bits": p}`` for the position and token-type
    tables, or both) stores those tables bit-packed with one scale per row. ``token_map_size`` set: the model
    reads the ids of a ``token_map_size``-token vocabulary and a stored map sends each to a row of its
    ``vocab_size``-row word table (a pruned vocabulary whose dropped tokens read as their nearest kept ones).
    """

    model_type = "compact-bert"

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    attention_head_size: int | None = None
    intermediate_size: int = 3072
    heads_per_layer: list[int] | None = None
    intermediate_sizes: list[int] | None = None
    layer_map: list[int] | None = None
    embedding_size: int | None = None
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    position_style: str = "absolute"
    hidden_act: str = "gelu"
    classifier_activation: str = "tanh"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    classifier_dropout: float | None = None
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    pad_token_id: int | None = 0
    source_family: str = "bert"
    stored_linears: dict[str, dict[str, int | str]] | None = None
    word_embedding_rank: int | None = None
    attention_owner: list[int] | None = None
    ffn_owner: list[int] | None = None
    quantized_embeddings: dict[str, int] | None = None
    token_map_size: int | None = None

    def __post_init__(self, **kwargs):
        if self.attention_head_size is None:
            self.attention_head_size = self.hidden_size // self.num_attention_heads
        if self.layer_map is None:
            self.layer_map = list(range(self.num_hidden_layers))
        self.layer_map = [int(i) for i in self.layer_map]
        num_unique = max(self.layer_map) + 1 if self.layer_map else 0
        if self.heads_per_layer is None:
            self.heads_per_layer = [self.num_attention_heads] * num_unique
        if self.intermediate_sizes is None:
            self.intermediate_sizes = [self.intermediate_size] * num_unique
        self.stored_linears = _stored_linears(self.stored_linears or {}, kwargs)
        self.quantized_embeddings = {str(k): int(v) for k, v in (self.quantized_embeddings or {}).items()}
        self.attention_owner = [int(i) for i in (self.attention_owner or range(num_unique))]
        self.ffn_owner = [int(i) for i in (self.ffn_owner or range(num_unique))]
        self.heads_per_layer = [int(h) for h in self.heads_per_layer]
        self.intermediate_sizes = [int(s) for s in self.intermediate_sizes]
        self.num_hidden_layers = len(self.layer_map)
        self._check_shape(num_unique)
        super().__post_init__(**kwargs)

    def _check_shape(self, num_unique: int) -> None:
        if sorted(set(self.layer_map)) != list(range(num_unique)):
            raise ValueError(f"layer_map {self.layer_map} must use every unique layer 0..{num_unique - 1}")
        for name in ("heads_per_layer", "intermediate_sizes"):
            values = getattr(self, name)
            if len(values) != num_unique:
                raise ValueError(f"{name} has {len(values)} entries; the layer_map uses {num_unique} layers")
            if any(v < 0 for v in values):
                raise ValueError(f"{name} {values} must not be negative")
        for name, sizes in (("attention_owner", "heads_per_layer"), ("ffn_owner", "intermediate_sizes")):
            owners, widths = getattr(self, name), getattr(self, sizes)
            if len(owners) != num_unique or any(
                not 0 <= o <= j or owners[o] != o for j, o in enumerate(owners)
            ):
                raise ValueError(
                    f"{name} {owners}: each of the {num_unique} layers names itself or an earlier owner"
                )
            if any(widths[j] != widths[o] for j, o in enumerate(owners)):
                raise ValueError(
                    f"{sizes} {widths}: a layer that borrows a block has its owner's size ({name} {owners})"
                )
        if self.word_embedding_rank is not None and self.embedding_size is not None:
            raise ValueError("word_embedding_rank and embedding_size are two embedding layouts; use one")
        embeddings = self.quantized_embeddings
        if embeddings and (
            not set(embeddings) <= {"bits", "position_bits"}
            or not all(1 <= b <= 8 for b in embeddings.values())
        ):
            raise ValueError(f"quantized_embeddings {embeddings}: takes bits and position_bits, each 1..8")
        if self.token_map_size is not None and self.token_map_size < self.vocab_size:
            raise ValueError(
                f"token_map_size {self.token_map_size} maps token ids onto the word table's {self.vocab_size} "
                "rows; it must be at least vocab_size"
            )
        if self.position_style not in POSITION_STYLES:
            raise ValueError(f"position_style {self.position_style!r}; allowed: {', '.join(POSITION_STYLES)}")
        if self.source_family not in FAMILIES:
            raise ValueError(f"source_family {self.source_family!r}; allowed: {', '.join(FAMILIES)}")

    def stored_as(self, kind: str) -> dict[str, dict[str, int]]:
        """``{name: fields}`` of the linears stored as ``kind``."""
        return {
            name: {k: v for k, v in entry.items() if k != "kind"}
            for name, entry in self.stored_linears.items()
            if entry["kind"] == kind
        }

    def to_dict(self) -> dict:
        """The config's fields, ``token_map_size`` only when set: a model without a map saves the same
        ``config.json`` as before the field existed (the GLUE harness knows a baseline by those bytes)."""
        fields = super().to_dict()
        if fields.get("token_map_size") is None:
            fields.pop("token_map_size", None)
        return fields

    @property
    def num_unique_layers(self) -> int:
        return len(self.heads_per_layer)

    @property
    def is_uniform(self) -> bool:
        """True when every layer has the full head count and FFN width and no layer is shared."""
        full_heads = self.num_attention_heads * self.attention_head_size == self.hidden_size
        return (
            full_heads
            and self.layer_map == list(range(self.num_hidden_layers))
            and self.attention_owner == self.ffn_owner == list(range(self.num_unique_layers))
            and all(h == self.num_attention_heads for h in self.heads_per_layer)
            and all(s == self.intermediate_size for s in self.intermediate_sizes)
        )


def _stored_linears(given: dict, legacy: dict) -> dict[str, dict[str, int | str]]:
    """``stored_linears`` normalised (``kind`` a string, every other field an int), with the entries of the
    legacy fields in ``legacy`` (popped from it) added; a linear named twice is refused."""
    entries: dict[str, dict[str, int | str]] = {}
    named = [(name, dict(entry)) for name, entry in given.items()]
    for field, (kind, key) in LEGACY_STORAGE_FIELDS.items():
        for name, value in (legacy.pop(field, None) or {}).items():
            named.append((name, {"kind": kind, **(value if key is None else {key: value})}))
    for name, entry in named:
        if not isinstance(entry.get("kind"), str):
            raise ValueError(f"stored_linears[{name!r}] {entry}: needs a kind")
        if str(name) in entries:
            raise ValueError(f"linear {name!r} is stored two ways: {entries[str(name)]} and {entry}")
        entries[str(name)] = {k: (v if k == "kind" else int(v)) for k, v in entry.items()}
    return entries
