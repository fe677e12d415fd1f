"""Vocabulary pruning (as in TextPruner, Yang et al. 2022): keep the token ids a task's training data uses
(plus the special tokens and a chosen list), shrink the word embeddings and the tokenizer alike.

Words made only of kept tokens tokenize as before (WordPiece's greedy longest match finds the same
pieces, all kept) and map to the same embedding rows; anything else becomes ``[UNK]``. Or the tokenizer
stays whole and the model maps each dropped token to the row of its nearest kept token
(``map_to_nearest_kept``): a word the training rows never used still reads close to what it means.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from datasets import Dataset
from torch import nn
from transformers import AutoTokenizer, PreTrainedTokenizerBase


def _backend(tokenizer: PreTrainedTokenizerBase) -> dict:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    state = json.loads(backend.to_str()) if backend is not None else {}
    if state.get("model", {}).get("type") != "WordPiece":
        kind = state.get("model", {}).get("type", type(tokenizer).__name__)
        raise ValueError(
            f"vocabulary pruning needs a WordPiece tokenizer (BERT, DistilBERT, ELECTRA, MiniLM); this one is {kind}"
        )
    return state


def kept_token_ids(
    tokenizer: PreTrainedTokenizerBase, datasets: Iterable[Dataset], keep_tokens: Sequence[str] = ()
) -> list[int]:
    """Sorted ids: those in the datasets' ``input_ids``, the special tokens, and ``keep_tokens``."""
    vocab = tokenizer.get_vocab()
    unknown = [token for token in keep_tokens if token not in vocab]
    if unknown:
        raise ValueError(
            f"keep_tokens {unknown[:5]} are not in the tokenizer's vocabulary; give tokens it has"
        )
    kept = set(tokenizer.all_special_ids) | {vocab[token] for token in keep_tokens}
    for dataset in datasets:
        for ids in dataset["input_ids"]:
            kept.update(ids)
    return sorted(kept)


def coverage(dataset: Dataset, kept: Iterable[int], tokenizer: PreTrainedTokenizerBase) -> float:
    """The share of a dataset's (original) token ids, special tokens aside, that the pruned vocabulary keeps."""
    kept, special = set(kept), set(tokenizer.all_special_ids)
    tokens = [i for ids in dataset["input_ids"] for i in ids if i not in special]
    return sum(i in kept for i in tokens) / len(tokens) if tokens else 1.0


def prune_tokenizer(tokenizer: PreTrainedTokenizerBase, kept: Sequence[int]) -> PreTrainedTokenizerBase:
    """A tokenizer of the same class whose vocabulary is ``kept`` (old ids, in order): token ``kept[i]`` gets id i."""
    state = _backend(tokenizer)
    new_id = {old: new for new, old in enumerate(kept)}
    state["model"]["vocab"] = {
        token: new_id[i] for token, i in state["model"]["vocab"].items() if i in new_id
    }
    if state["model"]["unk_token"] not in state["model"]["vocab"]:
        raise ValueError(f"the unknown token {state['model']['unk_token']!r} must stay in the vocabulary")
    state["added_tokens"] = [
        token | {"id": new_id[token["id"]]}
        for token in state.get("added_tokens", [])
        if token["id"] in new_id
    ]
    processor = state.get("post_processor") or {}
    for special in processor.get("special_tokens", {}).values():
        special["ids"] = [new_id[i] for i in special["ids"]]
    for name in ("cls", "sep"):  # BertProcessing keeps [token, id] pairs
        if isinstance(processor.get(name), list):
            processor[name][1] = new_id[processor[name][1]]
    with tempfile.TemporaryDirectory() as folder:
        tokenizer.save_pretrained(folder)
        (Path(folder) / "tokenizer.json").write_text(json.dumps(state, ensure_ascii=False))
        vocab_file = Path(folder) / "vocab.txt"
        if vocab_file.is_file():
            tokens = sorted(state["model"]["vocab"], key=state["model"]["vocab"].get)
            vocab_file.write_text("".join(f"{token}\n" for token in tokens))
        return AutoTokenizer.from_pretrained(folder)


def token_ids_read(config) -> int:
    """How many token ids a model reads: its word table's rows, or more through a compact model's token map
    (any transformers config)."""
    return getattr(config, "token_map_size", None) or config.vocab_size


@torch.no_grad()
def nearest_kept_tokens(
    table: torch.Tensor, kept: Sequence[int], continuation: torch.Tensor, never: Iterable[int] = ()
) -> torch.Tensor:
    """For every token id of ``table`` (vocab × width input embeddings), the kept id it reads as once the
    vocabulary is pruned: itself where kept, else the kept token of the same kind (``continuation[i]``:
    a ``##`` piece inside a word, or not) nearest by cosine similarity, ``never`` (the special tokens)
    excepted. TinyBERT's augmentation takes word neighbours from the same space (Jiao et al. 2020, §3.1)."""
    normed = nn.functional.normalize(table.float(), dim=1)
    is_kept = torch.zeros(len(table), dtype=torch.bool)
    is_kept[list(kept)] = True
    candidates_allowed = is_kept.clone()
    candidates_allowed[list(never)] = False
    mapping = torch.arange(len(table))
    for kind in (True, False):
        candidates = (candidates_allowed & (continuation == kind)).nonzero().flatten()
        dropped = (~is_kept & (continuation == kind)).nonzero().flatten()
        if not len(dropped):
            continue
        if not len(candidates):
            raise ValueError(f"no kept {'##' if kind else 'word-start'} token to map dropped ones to")
        for chunk in dropped.split(4096):
            mapping[chunk] = candidates[(normed[chunk] @ normed[candidates].T).argmax(dim=1)]
    return mapping


def continuation_pieces(tokenizer: PreTrainedTokenizerBase, rows: int) -> torch.Tensor:
    """Per id of a ``rows``-row embedding table, whether its token is a WordPiece continuation (it starts
    with the tokenizer's continuing-subword prefix, ``##``)."""
    prefix = _backend(tokenizer)["model"].get("continuing_subword_prefix", "##")
    flags = torch.zeros(rows, dtype=torch.bool)
    for token, index in tokenizer.get_vocab().items():
        flags[index] = token.startswith(prefix)
    return flags


@torch.no_grad()
def prune_embeddings(model: nn.Module, kept: Sequence[int]) -> None:
    """Keep the word-embedding rows ``kept`` (in order); the config's vocabulary size and pad id follow."""
    embeddings = model.base_model.embeddings
    table = embeddings.word_embeddings
    index = torch.tensor(list(kept), dtype=torch.long, device=table.weight.device)
    pad = model.config.pad_token_id
    new_pad = list(kept).index(pad) if pad is not None and pad in kept else None
    pruned = nn.Embedding(len(kept), table.embedding_dim, padding_idx=new_pad, device=table.weight.device)
    pruned.weight.copy_(table.weight.index_select(0, index))
    pruned.weight.requires_grad_(table.weight.requires_grad)
    embeddings.word_embeddings = pruned
    embeddings.pad_token_id = new_pad
    model.config.vocab_size = len(kept)
    model.config.pad_token_id = new_pad


def input_embeddings(model: nn.Module) -> torch.Tensor:
    """The word table's rows as the encoder sees them (through the projection of factorized embeddings)."""
    embeddings = model.base_model.embeddings
    table = embeddings.word_embeddings.weight.detach()
    projection = getattr(embeddings, "word_projection", None)
    return projection(table).detach() if projection is not None else table


@torch.no_grad()
def map_to_nearest_kept(model: nn.Module, kept: Sequence[int], nearest: torch.Tensor) -> None:
    """Keep the word-embedding rows ``kept`` and read every token id through a map to the row of
    ``nearest[id]`` (a kept id): the model still takes the whole tokenizer's ids, pad id included."""
    if getattr(model.base_model.embeddings, "token_map", None) is not None:
        raise ValueError("the vocabulary is already mapped onto a pruned word table; prune it once")
    pad = model.config.pad_token_id
    prune_embeddings(model, kept)
    row = torch.full((len(nearest),), -1, dtype=torch.long)
    row[torch.tensor(list(kept))] = torch.arange(len(kept))
    embeddings = model.base_model.embeddings
    embeddings.token_map = row[nearest].to(torch.int32).to(embeddings.word_embeddings.weight.device)
    embeddings.pad_token_id = pad
    model.config.pad_token_id = pad
    model.config.token_map_size = len(nearest)


def map_dropped_to_nearest(model: nn.Module, tokenizer: PreTrainedTokenizerBase, kept: Sequence[int]) -> None:
    """``map_to_nearest_kept`` with each dropped token's nearest kept token of its kind, by the model's own
    input embeddings; a special token never stands in for another."""
    table = input_embeddings(model)
    continuation = continuation_pieces(tokenizer, len(table))
    map_to_nearest_kept(
        model, kept, nearest_kept_tokens(table, kept, continuation, tokenizer.all_special_ids)
    )
