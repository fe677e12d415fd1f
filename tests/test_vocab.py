"""Vocabulary pruning (nlpcompress.vocab, the `prune_vocab` stage): the pruned tokenizer and embeddings read
kept-only text exactly as before, anything else becomes [UNK]; end to end, resumed, and bad input."""

import json

import pytest
import torch
from _require import require_module
from _tiny import logits_without_nlpcompress, tiny_model
from datasets import Dataset
from transformers import AutoModelForSequenceClassification, BertTokenizer, PreTrainedTokenizerFast

from nlpcompress.errors import UserError
from nlpcompress.models import load_tokenizer
from nlpcompress.recipe import recipe_from_dict
from nlpcompress.runner import run_recipe
from nlpcompress.stages import prune_vocab
from nlpcompress.vocab import (
    continuation_pieces,
    coverage,
    input_embeddings,
    kept_token_ids,
    map_to_nearest_kept,
    nearest_kept_tokens,
    prune_embeddings,
    prune_tokenizer,
)

TRAIN = ["the film was wonderful and moving", "a playing field", "it was not good"]


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("minilm-l6")


def test_kept_only_text_tokenizes_as_before_and_other_words_become_unk(tokenizer):
    original = tokenizer(TRAIN)["input_ids"]
    kept = kept_token_ids(tokenizer, [Dataset.from_dict({"input_ids": original})], ["movie"])
    assert set(tokenizer.all_special_ids) <= set(kept) and tokenizer.convert_tokens_to_ids("movie") in kept
    pruned = prune_tokenizer(tokenizer, kept)
    assert len(pruned) == len(kept) and type(pruned) is type(tokenizer)
    assert [[kept[i] for i in ids] for ids in pruned(TRAIN)["input_ids"]] == original
    pair = pruned("the movie", "was wonderful")
    assert [kept[i] for i in pair["input_ids"]] == tokenizer("the movie", "was wonderful")["input_ids"]
    assert pair["token_type_ids"] == tokenizer("the movie", "was wonderful")["token_type_ids"]
    assert pruned.convert_ids_to_tokens(pruned("the movie was terrible")["input_ids"]) == [
        "[CLS]", "the", "movie", "was", "[UNK]", "[SEP]"
    ]  # fmt: skip
    dev = Dataset.from_dict({"input_ids": tokenizer(["the film was terrible"])["input_ids"]})
    assert coverage(dev, kept, tokenizer) == 0.75


def test_a_dropped_token_reads_as_the_nearest_kept_token_of_its_kind():
    # ids: 0 [SEP], 1 "good", 2 "##ly", 3 "fine", 4 "##s" kept; 5 "great", 6 "##ish", 7 "okay" dropped
    table = torch.tensor(
        [[1.0, 1.0], [1.0, 0.0], [0.0, 1.0], [4.0, 2.0], [0.1, 1.0], [4.5, 0.3], [1.0, 0.9], [1.0, 1.05]]
    )
    continuation = torch.tensor([False, False, True, False, True, False, True, False])
    mapping = nearest_kept_tokens(table, kept=[0, 1, 2, 3, 4], continuation=continuation, never=[0])
    assert mapping[:5].tolist() == [0, 1, 2, 3, 4]  # kept tokens read as themselves
    assert mapping[5] == 1  # by angle: "great" is nearer "fine" in distance, but points where "good" does
    assert mapping[6] == 4  # a ## piece maps to a ## piece, not to the nearer word-start "fine"
    assert mapping[7] == 3  # never to [SEP], however near
    assert nearest_kept_tokens(table, kept=[0, 1, 2, 3, 4], continuation=continuation)[7] == 0
    with pytest.raises(ValueError, match="no kept ## token"):
        nearest_kept_tokens(table, kept=[0, 1, 3], continuation=continuation)


def test_continuation_pieces_follow_the_tokenizers_prefix(tokenizer):
    flags = continuation_pieces(tokenizer, len(tokenizer.get_vocab()))
    vocab = tokenizer.get_vocab()
    assert flags[vocab["##ly"]] and not flags[vocab["good"]] and not flags[vocab["[CLS]"]]
    assert int(flags.sum()) == sum(token.startswith("##") for token in vocab)


def test_pruned_embeddings_give_the_same_logits_on_mapped_ids():
    model = tiny_model()
    ids = torch.tensor([[0, 7, 3, 9, 3], [0, 9, 12, 7, 1]])
    kept = [0, 1, 3, 7, 9, 12, 40]
    with torch.no_grad():
        before = model(input_ids=ids).logits
        prune_embeddings(model, kept)
        mapped = torch.tensor([[kept.index(int(i)) for i in row] for row in ids])
        after = model(input_ids=mapped).logits
    assert torch.allclose(after, before, atol=1e-6)
    assert model.config.vocab_size == 7 and model.base_model.embeddings.word_embeddings.weight.shape[0] == 7


def test_a_mapped_model_reads_each_dropped_token_as_its_nearest_kept_one_saved_and_exported(tmp_path):
    model = tiny_model()
    kept = list(range(20))
    nearest = nearest_kept_tokens(input_embeddings(model), kept, torch.zeros(50, dtype=torch.bool), never=[0])
    assert (nearest[20:] < 20).all() and (nearest[20:] > 0).all()
    ids = torch.randint(0, 50, (3, 11), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        reading_nearest = model(input_ids=nearest[ids]).logits
        map_to_nearest_kept(model, kept, nearest)
        after = model(input_ids=ids).logits
    torch.testing.assert_close(after, reading_nearest, rtol=0, atol=1e-6)
    assert (model.config.vocab_size, model.config.token_map_size, model.config.pad_token_id) == (20, 50, 0)
    assert model.base_model.embeddings.word_embeddings.weight.shape[0] == 20
    with pytest.raises(ValueError, match="already mapped"):
        map_to_nearest_kept(model, kept[:10], nearest)

    folder, plain = tmp_path / "mapped", tmp_path / "plain"
    model.save_pretrained(folder)
    tiny_model().save_pretrained(plain)  # a model without a map saves the config it saved before the field
    assert json.loads((folder / "config.json").read_text())["token_map_size"] == 50
    assert "token_map_size" not in json.loads((plain / "config.json").read_text())
    loaded = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids).logits, after, rtol=0, atol=1e-6)
    torch.testing.assert_close(
        logits_without_nlpcompress(folder, {"input_ids": ids}), after, rtol=0, atol=1e-5
    )

    from nlpcompress.runtime import export_model, load_predictor

    mask = torch.ones_like(ids)
    for runtime, backend in (("onnxruntime", "onnxruntime"), ("openvino", "openvino")):
        require_module(runtime)
        export_model(folder, backend.replace("onnxruntime", "onnx"), max_length=32)
        torch.testing.assert_close(load_predictor(folder, backend)(ids, mask), after, rtol=0, atol=1e-5)


def test_unknown_keep_tokens_and_other_tokenizer_kinds_are_refused(tokenizer):
    with pytest.raises(
        ValueError, match=r"keep_tokens \['qwertyzzz'\] are not in the tokenizer's vocabulary"
    ):
        kept_token_ids(tokenizer, [], ["qwertyzzz"])
    from tokenizers import Tokenizer
    from tokenizers.models import BPE

    bpe = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(BPE(vocab={"a": 0, "[UNK]": 1}, merges=[])))
    with pytest.raises(
        ValueError, match=r"vocabulary pruning needs a WordPiece tokenizer .* this one is BPE"
    ):
        prune_tokenizer(bpe, [0, 1])


def recipe(tmp_path, tiny_bert_dir, glue_root, stages, out="out"):
    return recipe_from_dict(
        {
            "model": str(tiny_bert_dir), "task": "sst2", "data_dir": str(glue_root), "max_train_samples": 48,
            "max_eval_samples": 32, "max_length": 32, "seed": 3, "output_dir": str(tmp_path / out),
            "training": {"max_steps": 2, "per_device_train_batch_size": 16, "learning_rate": 1e-3},
            "stages": stages,
        }
    )  # fmt: skip


def test_a_pruned_run_classifies_kept_only_sentences_like_the_unpruned_one(
    tmp_path, tiny_bert_dir, glue_root
):
    full = run_recipe(
        recipe(tmp_path, tiny_bert_dir, glue_root, [{"type": "finetune"}], "full"), progress=False
    )
    stages = [{"type": "finetune"}, {"type": "prune_vocab", "keep_tokens": ["movie"]}]
    pruned = run_recipe(recipe(tmp_path, tiny_bert_dir, glue_root, stages, "pruned"), progress=False)
    info = pruned.results["stages"][-1]
    assert info["vocab_size_before"] == 30522 and 100 < info["vocab_size_after"] < 2000
    assert 0.5 < info["eval_token_coverage"]["validation"] < 1.0
    assert pruned.results["size_bytes"] < full.results["size_bytes"] * 0.8
    vocab = BertTokenizer.from_pretrained(pruned.output_dir).get_vocab()
    sentences = [
        " ".join(w for w in ["it", "'s", "a", "movie", "that", "is", "not", "the", "film"] if w in vocab),
        "the movie",
    ]
    outputs = []
    for folder in (full.output_dir, pruned.output_dir):
        tok = BertTokenizer.from_pretrained(folder)
        model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
        with torch.no_grad():
            outputs.append(model(**tok(sentences, return_tensors="pt", padding=True)).logits)
    assert torch.allclose(outputs[0], outputs[1], atol=1e-6)
    config = json.loads((pruned.output_dir / "config.json").read_text())
    assert config["vocab_size"] == len(vocab) == info["vocab_size_after"]


def test_a_run_that_maps_dropped_tokens_keeps_the_whole_tokenizer_and_a_small_table(
    tmp_path, tiny_bert_dir, glue_root
):
    stages = [
        {"type": "finetune"},
        {"type": "prune_vocab", "dropped_tokens": "nearest"},
        {"type": "distill", "method": "kd", "student": {"layers": [1]}},
    ]
    run = run_recipe(recipe(tmp_path, tiny_bert_dir, glue_root, stages), progress=False)
    info, structure = run.results["stages"][1], run.results["structure"]
    assert info["dropped_tokens"] == "nearest" and info["vocab_size_after"] == structure["vocab_size"] < 2000
    assert (
        structure["token_ids_read"] == 30522 == len(BertTokenizer.from_pretrained(run.output_dir).get_vocab())
    )
    tok = BertTokenizer.from_pretrained(run.output_dir)
    model = AutoModelForSequenceClassification.from_pretrained(run.output_dir).eval()
    words = "the movie was a"  # kept: every word of 48 SST-2 rows; "xylophone"'s pieces are not
    with torch.no_grad():
        mapped = model(**tok([f"{words} xylophone"], return_tensors="pt")).logits
        unknown = model(**tok([f"{words} [UNK]"], return_tensors="pt")).logits
    assert not torch.allclose(mapped, unknown)  # the dropped word is not read as [UNK]


@pytest.mark.parametrize("dropped_tokens", ["unk", "nearest"])
def test_an_interrupted_run_resumes_with_the_pruned_vocabulary(
    tmp_path, tiny_bert_dir, glue_root, monkeypatch, dropped_tokens
):
    stages = [
        {"type": "finetune"},
        {"type": "prune_vocab", "dropped_tokens": dropped_tokens},
        {"type": "distill", "method": "kd", "student": {"layers": [1]}},
    ]
    expected = run_recipe(recipe(tmp_path, tiny_bert_dir, glue_root, stages, "whole"), progress=False).results
    from nlpcompress.stages import distill

    def stop(self, model, ctx):
        raise KeyboardInterrupt

    monkeypatch.setattr(distill.DistillStage, "run", stop)
    with pytest.raises(KeyboardInterrupt):
        run_recipe(recipe(tmp_path, tiny_bert_dir, glue_root, stages), progress=False)
    assert (tmp_path / ".out.partial" / "resume-2" / "tokenizer" / "tokenizer.json").is_file()
    monkeypatch.undo()
    monkeypatch.setattr(prune_vocab.PruneVocabStage, "run", lambda *a: pytest.fail("prune_vocab ran again"))
    results = run_recipe(recipe(tmp_path, tiny_bert_dir, glue_root, stages), progress=False).results
    assert [s["metrics"] for s in results["stages"]] == [s["metrics"] for s in expected["stages"]]
    assert results["structure"]["vocab_size"] == expected["structure"]["vocab_size"] < 30522


def test_a_mapped_vocabulary_is_not_pruned_twice(tmp_path, tiny_bert_dir, glue_root):
    stages = [{"type": "prune_vocab", "dropped_tokens": "nearest"}, {"type": "prune_vocab"}]
    with pytest.raises(
        UserError, match=r"the vocabulary is already pruned \(dropped_tokens: nearest\); prune it once"
    ):
        run_recipe(recipe(tmp_path, tiny_bert_dir, glue_root, stages), progress=False)
