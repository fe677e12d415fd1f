"""TinyBERT's data augmentation: texts in, augmented copies out, the same copies for the same seed.

Jiao et al. (2020), TinyBERT, §3.1 "Data Augmentation" and Algorithm 1 (appendix): every train row gets
N_a copies (``copies``); in each copy every word is replaced with probability p_t (``p``) by one of its
K candidates (``candidates``), chosen uniformly. A word of one word piece takes its candidates from a
masked language model (the K most probable whole words at its position, the word masked); a word of
several pieces takes its K nearest neighbours by cosine similarity in a word-embedding space (GloVe in
the paper). Offline there is no GloVe, so the space here is the teacher's own input word embeddings: a
word's vector is the mean of its pieces' embeddings, and the candidates are the whole-word entries of the
vocabulary (not ``##`` continuation pieces, not special tokens, letters only). Without a masked LM,
single-piece words take their neighbours from the same space.

Choices where the paper leaves room (each stated so a reader can compare):
- a word is a maximal run of letters; digits, punctuation and spacing are kept as they are;
- a word's MLM candidates come from the source text with that word masked, once per occurrence, and serve
  every copy (the released code does the same; Algorithm 1 re-masks inside each copy);
- the word itself (any casing) is never its own candidate, so a replaced word always changes;
- a word whose pieces include a special token ([UNK]) has no candidates and is never replaced;
- rows with several text columns (a sentence pair) keep them: each side is augmented, rows stay pairs;
- a copy equal to its source or to an earlier copy of the same row is dropped (as in the released code).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

# A word: a maximal run of letters (Unicode), so "isn't" is "isn" and "t", as BERT's basic tokenizer splits it.
WORD = re.compile(r"[^\W\d_]+")
# Prefixes that mark a word start in byte-level BPE and SentencePiece vocabularies.
_WORD_START_MARKERS = ("Ġ", "▁")
CHUNK_ROWS = 256  # rows whose candidates are found together (one progress step each)


@dataclass(frozen=True)
class Augmented:
    """One augmented row: the index of its source row and its texts (one per text column)."""

    source: int
    texts: tuple[str, ...]


def word_spans(text: str) -> list[tuple[int, int]]:
    """The (start, end) character spans of the words of ``text``."""
    return [match.span() for match in WORD.finditer(text)]


def whole_word_vocabulary(tokenizer: PreTrainedTokenizerBase, rows: int) -> tuple[list[int], list[str]]:
    """The ids and texts of the vocabulary's whole-word entries below ``rows`` (the embedding matrix's
    rows): not special, not a ``##`` continuation, letters only; one id per text."""
    special = set(tokenizer.all_special_ids)
    ids, texts, seen = [], [], set()
    for token, index in sorted(tokenizer.get_vocab().items(), key=lambda item: item[1]):
        if index >= rows or index in special or token.startswith("##"):
            continue
        text = token[1:] if token.startswith(_WORD_START_MARKERS) else token
        if WORD.fullmatch(text) and text not in seen:
            seen.add(text)
            ids.append(index)
            texts.append(text)
    return ids, texts


class CandidateFinder:
    """A word's K replacement candidates: nearest neighbours in ``embeddings`` (rows = token ids) for every
    word, or, with ``mlm`` (a masked LM reading the same token ids), its top-K predictions for a
    single-piece word masked in its text."""

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        embeddings: torch.Tensor,
        k: int,
        mlm: nn.Module | None = None,
        batch_size: int = 16,
    ):
        self.tokenizer, self.k, self.mlm, self.batch_size = tokenizer, k, mlm, batch_size
        self.embeddings = embeddings.detach().float().cpu()
        self.special = set(tokenizer.all_special_ids)
        ids, self.vocab_texts = whole_word_vocabulary(tokenizer, self.embeddings.shape[0])
        if not ids:
            raise ValueError("the tokenizer's vocabulary has no whole-word entries to draw candidates from")
        self.vocab_ids = torch.tensor(ids)
        self.unit_vectors = nn.functional.normalize(self.embeddings[self.vocab_ids], dim=1)
        self.folded = [text.casefold() for text in self.vocab_texts]
        self.pieces: dict[str, list[int]] = {}
        self.neighbours: dict[str, list[str]] = {}

    def _pieces(self, words: set[str]) -> None:
        new = sorted(words - self.pieces.keys())
        if new:
            encoded = self.tokenizer(new, add_special_tokens=False)["input_ids"]
            self.pieces.update(zip(new, encoded, strict=True))

    def _usable(self, word: str) -> bool:
        pieces = self.pieces[word]
        return bool(pieces) and all(i not in self.special and i < self.embeddings.shape[0] for i in pieces)

    def _not_self(self, order: torch.Tensor, word: str) -> list[str]:
        """The first K vocabulary texts in ``order`` (indices into the whole-word vocabulary) that are not
        ``word`` in any casing."""
        folded = word.casefold()
        out = []
        for index in order.tolist():
            if self.folded[index] != folded:
                out.append(self.vocab_texts[index])
                if len(out) == self.k:
                    break
        return out

    def _embedding_neighbours(self, words: set[str]) -> None:
        new = sorted(words - self.neighbours.keys())
        usable = [w for w in new if self._usable(w)]
        self.neighbours.update({w: [] for w in new if w not in usable})
        extra = min(self.k + 4, len(self.vocab_texts))  # room for the word itself in a few casings
        for start in range(0, len(usable), 256):
            batch = usable[start : start + 256]
            vectors = torch.stack([self.embeddings[self.pieces[w]].mean(0) for w in batch])
            scores = nn.functional.normalize(vectors, dim=1) @ self.unit_vectors.T
            for word, order in zip(batch, scores.topk(extra, dim=1).indices, strict=True):
                self.neighbours[word] = self._not_self(order, word)

    @torch.inference_mode()
    def _mlm_candidates(
        self, texts: list[str], spans: list[list[tuple[int, int]]]
    ) -> dict[tuple[int, int], list[str]]:
        """Top-K MLM candidates for each single-piece word (text index, word index) found alone in its
        text's tokens; words not found (truncated, split otherwise in context) are left out."""
        assert self.mlm is not None
        limit = min(getattr(self.mlm.config, "max_position_embeddings", 512), 512)
        encoded = self.tokenizer(texts, truncation=True, max_length=limit, return_offsets_mapping=True)
        masked: list[tuple[tuple[int, int], list[int], int, str]] = []
        for t, (text, text_spans) in enumerate(zip(texts, spans, strict=True)):
            ids, offsets = encoded["input_ids"][t], encoded["offset_mapping"][t]
            position = {tuple(o): j for j, o in enumerate(offsets) if o[1] > o[0]}
            for w, (start, end) in enumerate(text_spans):
                word = text[start:end]
                j = position.get((start, end))
                if len(self.pieces[word]) == 1 and j is not None and ids[j] not in self.special:
                    masked.append(((t, w), [*ids[:j], self.tokenizer.mask_token_id, *ids[j + 1 :]], j, word))
        device = next(self.mlm.parameters()).device
        vocab_ids = self.vocab_ids.to(device)
        found = {}
        for start in range(0, len(masked), self.batch_size):
            batch = masked[start : start + self.batch_size]
            padded = self.tokenizer.pad({"input_ids": [ids for _, ids, _, _ in batch]}, return_tensors="pt")
            logits = self.mlm(
                input_ids=padded["input_ids"].to(device), attention_mask=padded["attention_mask"].to(device)
            ).logits
            width = padded["input_ids"].shape[1]
            left = self.tokenizer.padding_side == "left"
            positions = torch.tensor(
                [j + (width - len(ids) if left else 0) for _, ids, j, _ in batch], device=device
            )
            rows = logits[torch.arange(len(batch), device=device), positions]
            order = rows[:, vocab_ids].topk(min(self.k + 4, len(self.vocab_texts)), dim=1).indices.cpu()
            for (key, _, _, word), ranked in zip(batch, order, strict=True):
                found[key] = self._not_self(ranked, word)
        return found

    def for_texts(self, texts: list[str]) -> list[list[list[str]]]:
        """For each text, for each of its words (``word_spans``), the word's candidates ([] for none)."""
        spans = [word_spans(text) for text in texts]
        words = {text[s:e] for text, text_spans in zip(texts, spans, strict=True) for s, e in text_spans}
        self._pieces(words)
        from_mlm = self._mlm_candidates(texts, spans) if self.mlm is not None else {}
        self._embedding_neighbours(words)
        return [
            [from_mlm.get((t, w), self.neighbours[text[s:e]]) for w, (s, e) in enumerate(text_spans)]
            for t, (text, text_spans) in enumerate(zip(texts, spans, strict=True))
        ]


def augment_row(
    texts: Sequence[str],
    candidates: Sequence[Sequence[Sequence[str]]],
    copies: int,
    p: float,
    rng: np.random.Generator,
) -> list[tuple[str, ...]]:
    """``copies`` copies of one row (Algorithm 1's inner loop): each word with candidates is replaced with
    probability ``p`` by one of them, uniformly. ``candidates[i][w]`` belongs to word w of ``texts[i]``.
    Two draws per word and copy (whether, which), for every word, so the stream does not depend on the
    candidates."""
    spans = [word_spans(text) for text in texts]
    count = sum(len(s) for s in spans)
    replace, which = rng.random((copies, count)), rng.random((copies, count))
    out = []
    for c in range(copies):
        column, new_texts = 0, []
        for text, text_spans, text_candidates in zip(texts, spans, candidates, strict=True):
            parts, last = [], 0
            for (start, end), options in zip(text_spans, text_candidates, strict=True):
                if options and replace[c, column] < p:
                    parts += [text[last:start], options[int(which[c, column] * len(options))]]
                    last = end
                column += 1
            new_texts.append("".join(parts) + text[last:])
        out.append(tuple(new_texts))
    return out


def augment_rows(
    rows: Sequence[Sequence[str]],
    finder: CandidateFinder | Callable[[list[str]], list[list[list[str]]]],
    copies: int,
    p: float,
    seed: int,
    drop_duplicates: bool = True,
    progress: bool = False,
) -> list[Augmented]:
    """The augmented copies of ``rows`` (each a tuple of texts: one column, or a pair), in row order.

    ``finder``: a :class:`CandidateFinder` (or any function texts -> per text, per word, candidates).
    Row i draws from its own generator seeded by (``seed``, i), so a row's copies do not depend on the
    other rows. ``drop_duplicates``: leave out a copy equal to its source or to an earlier copy.
    """
    find = finder.for_texts if isinstance(finder, CandidateFinder) else finder
    out: list[Augmented] = []
    with tqdm(total=len(rows), desc="Augmenting", unit="row", disable=not progress) as bar:
        for start in range(0, len(rows), CHUNK_ROWS):
            chunk = [tuple(row) for row in rows[start : start + CHUNK_ROWS]]
            width = len(chunk[0]) if chunk else 0
            flat = find([text for row in chunk for text in row])
            for offset, row in enumerate(chunk):
                index = start + offset
                rng = np.random.default_rng([seed % 2**63, index])
                seen = {row}
                for texts in augment_row(row, flat[offset * width : (offset + 1) * width], copies, p, rng):
                    if drop_duplicates and texts in seen:
                        continue
                    seen.add(texts)
                    out.append(Augmented(index, texts))
            bar.update(len(chunk))
    return out
