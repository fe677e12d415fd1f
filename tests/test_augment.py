"""TinyBERT data augmentation: the replacement rate, pairs, determinism, the cache, train rows only, bad
settings, the masked-LM source, and a recipe that records what it did."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from transformers import AutoTokenizer, BertConfig, BertForMaskedLM, BertTokenizer

from nlpcompress import cli
from nlpcompress.context import load_run_data, stage_context
from nlpcompress.distill.augment import WORD, CandidateFinder, augment_rows, word_spans
from nlpcompress.errors import UserError
from nlpcompress.glue import get_task, load_split
from nlpcompress.models import load_compact
from nlpcompress.recipe import recipe_from_dict
from nlpcompress.stages import augmentation
from nlpcompress.stages.augmentation import augmented_train


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test writes its augmentation cache under its own folder, never the user's."""
    folder = tmp_path / "cache"
    monkeypatch.setenv(augmentation.CACHE_ENV, str(folder))
    return folder


@pytest.fixture(scope="module")
def tok(tiny_bert_dir: Path):
    return AutoTokenizer.from_pretrained(tiny_bert_dir)


@pytest.fixture(scope="module")
def finder(tok) -> CandidateFinder:
    torch.manual_seed(0)
    return CandidateFinder(tok, torch.randn(tok.vocab_size, 16), k=15)


def rows_of(glue_root: Path, task: str, n: int) -> list[tuple[str, ...]]:
    split = load_split(get_task(task), "train", glue_root, n)
    return list(zip(*(split[f] for f in get_task(task).text_fields), strict=True))


def words(text: str) -> list[str]:
    return [text[s:e] for s, e in word_spans(text)]


def test_words_are_replaced_at_rate_p(glue_root: Path, finder: CandidateFinder):
    rows = rows_of(glue_root, "sst2", 80)
    out = augment_rows(rows, finder, copies=4, p=0.4, seed=1, drop_duplicates=False)
    assert len(out) == 4 * len(rows)
    total = changed = 0
    for row in out:
        before, after = words(rows[row.source][0]), words(row.texts[0])
        assert len(before) == len(after)  # a word is replaced by one word, nothing else moves
        total += len(before)
        changed += sum(a != b for a, b in zip(before, after, strict=True))
    assert total > 500
    assert changed / total == pytest.approx(0.4, abs=0.07)
    # the text between words is kept as it was
    assert all(WORD.split(rows[r.source][0]) == WORD.split(r.texts[0]) for r in out)


def test_candidates_are_whole_words_and_never_the_word_itself(tok, finder: CandidateFinder):
    [[charming, unbelievably]] = finder.for_texts(["Charming unbelievably"])
    assert unbelievably and len(finder.pieces["unbelievably"]) > 1  # a multi-piece word has neighbours too
    for options in (charming, unbelievably):
        assert len(options) == 15
        assert all(
            not o.startswith("##") and o.isalpha() and o not in tok.all_special_tokens for o in options
        )
    assert "charming" not in charming and "unbelievably" not in unbelievably


def test_pairs_stay_pairs_and_the_seed_decides(glue_root: Path, finder: CandidateFinder):
    rows = rows_of(glue_root, "mrpc", 12)
    every = augment_rows(rows, finder, copies=3, p=0.4, seed=5, drop_duplicates=False)
    assert len(every) == len(rows) * 3 and all(len(r.texts) == 2 for r in every)
    assert [r.source for r in every] == [i for i in range(len(rows)) for _ in range(3)]
    for side in (0, 1):  # both sides are augmented
        assert any(r.texts[side] != rows[r.source][side] for r in every)
        assert all(len(words(r.texts[side])) == len(words(rows[r.source][side])) for r in every)
    kept = augment_rows(rows, finder, copies=3, p=0.4, seed=5)
    assert kept == [r for r in every if r.texts != rows[r.source]]  # here no two copies are alike
    assert augment_rows(rows, finder, copies=3, p=0.4, seed=5) == kept
    assert augment_rows(rows, finder, copies=3, p=0.4, seed=6) != kept
    # a row's copies do not depend on the rows beside it
    assert (
        augment_rows(rows[3:4], finder, copies=3, p=0.4, seed=5, drop_duplicates=False)[0].texts
        != every[0].texts
    )
    alone = augment_rows(rows[:1], finder, copies=3, p=0.4, seed=5, drop_duplicates=False)
    assert alone == every[:3]


def run_context(tmp_path: Path, glue_root: Path, tiny_bert_dir: Path, task: str, augment: dict, stage=None):
    stage = stage or {"type": "distill", "student": {"layers": [0]}, "augment": augment}
    recipe = recipe_from_dict(
        {"model": str(tiny_bert_dir), "task": task, "data_dir": str(glue_root), "output_dir": str(tmp_path / "out"),
         "max_train_samples": 24, "max_eval_samples": 16, "max_length": 48, "seed": 3,
         "stages": [{"type": "finetune"}, stage]}
    )  # fmt: skip
    task_ = get_task(task)
    teacher = load_compact(str(tiny_bert_dir), task_).eval()
    data = load_run_data(recipe, task_, AutoTokenizer.from_pretrained(tiny_bert_dir))
    stage = recipe.stages[1]
    return stage, stage_context(recipe, stage, data, tmp_path, teacher, progress=False), teacher


def test_stage_rows_are_train_rows_then_teacher_labelled_copies_cached_once(
    tmp_path: Path, glue_root: Path, tiny_bert_dir: Path, monkeypatch, caplog, _cache: Path
):
    """STS-B: a pair task and a regression, so the copies carry the teacher's predicted value."""
    stage, ctx, teacher = run_context(tmp_path, glue_root, tiny_bert_dir, "stsb", {"copies": 3})
    config = stage.config().augment
    train, facts = augmented_train(ctx, stage, config, teacher)
    n = len(ctx.train_dataset)
    assert facts["source"] == "teacher input embeddings" and facts["reused"] is False
    assert (facts["copies"], facts["p"], facts["candidates"], facts["seed"]) == (3, 0.4, 15, 3)
    assert facts["rows_before"] == n == 24 and n < facts["rows_after"] == len(train) <= n * 4
    assert Path(facts["cache"]).parent == _cache / "augment" and "class_shares" not in facts  # a regression
    assert train[:n] == ctx.train_dataset[:]  # the original rows first, with their gold labels
    assert all(1 in ids for ids in train[n:]["token_type_ids"])  # the copies are pairs
    with torch.no_grad():
        batch = ctx.tokenizer.pad(
            train.select(range(n, len(train))).remove_columns("labels")[:], return_tensors="pt"
        )
        predicted = teacher(**batch).logits[:, 0]
    assert np.allclose(train[n:]["labels"], predicted.numpy(), atol=1e-5)
    # only train rows: no evaluation text is in the copies, every copy comes from a train row
    cached = [json.loads(line) for line in (Path(facts["cache"]) / "rows.jsonl").read_text().splitlines()]
    dev = load_split(get_task("stsb"), "validation", glue_root)
    dev_texts = set(dev["sentence1"]) | set(dev["sentence2"])
    assert len(cached) == len(train) - n and all(0 <= row["source"] < n for row in cached)
    assert not dev_texts & {text for row in cached for text in row["texts"]}

    def no_generation(*args, **kwargs):
        raise AssertionError("generated again")

    monkeypatch.setattr(augmentation, "augment_rows", no_generation)
    with caplog.at_level("INFO", logger="nlpcompress"):
        again, facts_again = augmented_train(ctx, stage, config, teacher)
    assert f"augment reuses {len(cached)} cached rows from {facts['cache']}" in caplog.text
    assert facts_again == facts | {"reused": True} and again[:] == train[:]


def test_a_recovering_stage_distils_on_augmented_rows(tmp_path: Path, glue_root: Path, tiny_bert_dir: Path):
    recovery = {"distillation": {"method": "kd", "augment": {"copies": 2}}}
    stage, ctx, _ = run_context(
        tmp_path,
        glue_root,
        tiny_bert_dir,
        "sst2",
        {},
        {"type": "prune_heads", "target": 0.5, "recovery": recovery},
    )
    trainer = stage.recovery_trainer(load_compact(str(tiny_bert_dir), ctx.task), ctx)
    assert (
        trainer.augment_facts["copies"] == 2 and trainer.augment_facts["source"] == "teacher input embeddings"
    )
    assert len(trainer.train_dataset) == trainer.augment_facts["rows_after"] > len(ctx.train_dataset) == 24
    # the record gives each class's share of the gold labels and of the teacher's labels of the copies
    gold, copies = np.asarray(ctx.train_dataset["labels"]), np.asarray(trainer.train_dataset["labels"][24:])
    shares = trainer.augment_facts["class_shares"]
    assert shares["gold"] == [round(float(np.mean(gold == c)), 4) for c in (0, 1)]
    assert shares["teacher_on_copies"] == [round(float(np.mean(copies == c)), 4) for c in (0, 1)]
    assert sum(shares["teacher_on_copies"]) == pytest.approx(1.0, abs=1e-3)


def test_a_masked_lm_gives_single_piece_candidates(tmp_path: Path, glue_root: Path, tiny_bert_dir: Path):
    torch.manual_seed(0)
    mlm = tmp_path / "mlm"
    BertForMaskedLM(BertConfig(vocab_size=30522, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=16, max_position_embeddings=64)).save_pretrained(mlm)  # fmt: skip
    AutoTokenizer.from_pretrained(tiny_bert_dir).save_pretrained(mlm)
    stage, ctx, teacher = run_context(
        tmp_path, glue_root, tiny_bert_dir, "sst2", {"copies": 2, "mlm": str(mlm)}
    )
    train, facts = augmented_train(ctx, stage, stage.config().augment, teacher)
    assert facts["source"] == f"mlm:{mlm.resolve()}" and len(train) > len(ctx.train_dataset)
    assert facts["multi_piece_words"] == "teacher input embeddings"

    embeddings = teacher.get_input_embeddings().weight
    masked = CandidateFinder(ctx.tokenizer, embeddings, 15, BertForMaskedLM.from_pretrained(mlm).eval())
    plain = CandidateFinder(ctx.tokenizer, embeddings, 15)
    [[film, unbelievably]] = masked.for_texts(["film unbelievably"])
    assert film != plain.for_texts(["film"])[0][0] and "film" not in film and len(film) == 15
    assert (
        unbelievably == plain.for_texts(["unbelievably"])[0][0]
    )  # several pieces: the embeddings' neighbours

    other = tmp_path / "other"  # same files, another vocabulary
    BertForMaskedLM.from_pretrained(mlm).save_pretrained(other)
    BertTokenizer(
        vocab={w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a"])}
    ).save_pretrained(other)
    for path, words_ in ((other, "vocabulary differs"), (tmp_path / "nowhere", "not a folder")):
        stage, ctx, teacher = run_context(tmp_path, glue_root, tiny_bert_dir, "sst2", {"mlm": str(path)})
        with pytest.raises(UserError, match=words_) as err:
            augmented_train(ctx, stage, stage.config().augment, teacher)
        assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("augment", "message"),
    [
        ({"copies": 0}, "augment.copies: must be an integer >= 1 (got 0)"),
        ({"p": 1.5}, "augment.p: must be a number in (0, 1] (got 1.5)"),
        ({"p": 0}, "augment.p: must be a number in (0, 1]"),
        ({"candidates": 0}, "augment.candidates: must be an integer >= 1 (got 0)"),
        ({"copies": "many"}, "augment.copies: must be an integer"),
        ({"mlm": ""}, "augment.mlm: must be the folder of a masked-LM checkpoint, or null"),
        ({"k": 15}, "augment.k: unknown key; allowed: copies, p, candidates, mlm, seed"),
        (20, "augment: must be a mapping"),
    ],
)
def test_bad_settings_are_refused_in_one_line(augment, message: str):
    base = {"model": "m", "task": "sst2", "output_dir": "out"}
    stages = [
        {"type": "distill", "teacher": "t", "augment": augment},
        {
            "type": "prune_heads",
            "target": 0.5,
            "recovery": {"distillation": {"method": "kd", "augment": augment}},
        },
    ]
    for prefix, stage in zip(("stages.0.", "stages.0.recovery.distillation."), stages, strict=True):
        with pytest.raises(UserError) as err:
            recipe_from_dict({**base, "stages": [stage]})
        assert f"{prefix}{message}" in str(err.value) and "\n" not in str(err.value)


def test_a_recipe_distils_on_augmented_rows_and_records_it(
    tmp_path: Path, glue_root: Path, tiny_bert_dir: Path
):
    augment = {"copies": 2, "p": 0.4, "candidates": 5, "seed": 11}
    recipe = {
        "model": str(tiny_bert_dir), "task": "sst2", "data_dir": str(glue_root), "output_dir": str(tmp_path / "out"),
        "max_train_samples": 16, "max_eval_samples": 16, "max_length": 32, "seed": 7,
        "training": {"learning_rate": 1e-3, "per_device_train_batch_size": 16, "max_steps": 2, "logging_steps": 1},
        "stages": [{"type": "finetune"},
                   {"type": "distill", "method": "kd", "student": {"layers": [0]}, "augment": augment}],
    }  # fmt: skip
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert cli.main(["run", str(path), "--no-progress"]) == 0
    record = json.loads((tmp_path / "out" / "results.json").read_text())["stages"][1]
    facts = record["augment"]
    assert facts["source"] == "teacher input embeddings" and facts["reused"] is False
    assert (facts["copies"], facts["p"], facts["candidates"], facts["seed"]) == (2, 0.4, 5, 11)
    assert facts["rows_before"] == 16 < facts["rows_after"] <= 48 and Path(facts["cache"]).is_dir()
    assert record["distillation"]["augment"] == augment | {"mlm": None}
