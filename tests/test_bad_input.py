"""Bad input not covered elsewhere: one line naming what is wrong and what is allowed, exit 2, nothing written."""

from __future__ import annotations

import logging
import shutil

import pytest

from nlpcompress import cli
from nlpcompress.glue import get_task, load_task_data
from nlpcompress.models import load_tokenizer


def one_error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_a_config_that_is_not_json_is_named(tmp_path, capsys):
    (tmp_path / "config.json").write_text("{not json")
    assert cli.main(["inspect", str(tmp_path)]) == 2
    line = one_error_line(capsys)
    assert line.startswith(f"nlpcompress: error: cannot load model {str(tmp_path)!r} as a folder:")
    assert "is not a valid JSON file" in line and "allowed: a local model folder" in line


def test_an_unknown_architecture_is_named(tmp_path, capsys):
    (tmp_path / "config.json").write_text('{"model_type": "gpt9"}')
    assert cli.main(["inspect", str(tmp_path)]) == 2
    assert "model type `gpt9` but Transformers does not recognize this architecture" in one_error_line(capsys)


def test_a_local_model_path_that_does_not_exist_says_so(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"model: ./no/such/folder\ntask: sst2\noutput_dir: {tmp_path / 'out'}\nstages: [{{type: finetune}}]\n"
    )
    assert cli.main(["run", str(recipe)]) == 2
    assert one_error_line(capsys) == (
        "nlpcompress: error: model folder './no/such/folder' does not exist; allowed: a local model folder, "
        "a Hub id, or a short name (minilm-l6)"
    )


def test_a_folder_without_its_tokenizer_is_refused_not_read_as_unknown_words(
    tmp_path, tiny_bert_dir, glue_root, capsys
):
    folder = tmp_path / "model"
    folder.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(tiny_bert_dir / name, folder / name)
    assert (
        cli.main(["eval", str(folder), "--task", "sst2", "--data-dir", str(glue_root), "--no-progress"]) == 2
    )
    assert one_error_line(capsys) == (
        f"nlpcompress: error: model folder {str(folder)!r} has no tokenizer files (none of tokenizer.json, "
        "tokenizer_config.json, vocab.txt, vocab.json, spiece.model); save the tokenizer beside the model "
        "(tokenizer.save_pretrained(folder))"
    )
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"model: {folder}\ntask: sst2\noutput_dir: {tmp_path / 'out'}\nstages: [{{type: finetune}}]\n"
    )
    assert (
        cli.main(["run", str(recipe), "--data-dir", str(glue_root), "--no-progress"]) == 2
    )  # nothing written
    assert "has no tokenizer files" in one_error_line(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "r.yaml"]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("trainin.learning_rate=1", "trainin: unknown key; did you mean: training? allowed: model, task, "),
        ("stages.0.nam=x", "stages.0.nam: unknown key; did you mean: name? allowed: type, name, training"),
    ],
)
def test_a_misspelt_set_key_names_the_close_ones(tmp_path, capsys, override, message):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: m\ntask: sst2\noutput_dir: out\nstages: [{type: finetune}]\n")
    assert cli.main(["run", str(recipe), "--set", override]) == 2
    assert message in one_error_line(capsys)


def test_rows_longer_than_max_length_are_said_once_per_split(tiny_bert_dir, glue_root, caplog):
    with caplog.at_level(logging.INFO, logger="nlpcompress"):
        _, evals = load_task_data(
            get_task("mrpc"),
            load_tokenizer(str(tiny_bert_dir)),
            glue_root,
            16,
            max_eval_samples=50,
            need_train=False,
        )
    said = [r.getMessage() for r in caplog.records if "reach max_length" in r.getMessage()]
    full = sum(len(ids) == 16 for ids in evals["validation"]["input_ids"])
    assert full > 0 and said == [
        f"mrpc: {full} of 50 rows reach max_length 16 tokens (longer ones are truncated there)"
    ]


def test_nothing_is_said_when_every_row_fits(tiny_bert_dir, glue_root, caplog):
    with caplog.at_level(logging.INFO, logger="nlpcompress"):
        load_task_data(
            get_task("sst2"),
            load_tokenizer(str(tiny_bert_dir)),
            glue_root,
            512,
            max_eval_samples=20,
            need_train=False,
        )
    assert not [r for r in caplog.records if "reach max_length" in r.getMessage()]


def test_an_unknown_dropped_tokens_mode_is_named_with_the_allowed_ones(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"model: m\ntask: sst2\noutput_dir: {tmp_path / 'out'}\n"
        "stages: [{type: finetune}, {type: prune_vocab, dropped_tokens: closest}]\n"
    )
    assert cli.main(["run", str(recipe)]) == 2
    line = one_error_line(capsys)
    assert "stages.1" in line and "dropped_tokens: allowed: unk, nearest (got 'closest')" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.yaml"]
