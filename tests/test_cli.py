"""End to end through the CLI on a tiny BERT and real SST-2 rows: run, eval, bench, inspect, errors."""

import json
from pathlib import Path

import pytest
import yaml
from _runs import fresh_cli, write_recipe

from nlpcompress import cli
from nlpcompress.stages.finetune import FinetuneStage


def test_run_writes_a_complete_reloadable_folder(finished_run: Path):
    names = {p.name for p in finished_run.iterdir()}
    assert {"model.safetensors", "config.json", "recipe.yaml", "results.json", "README.md"} <= names
    assert "tokenizer.json" in names or "vocab.txt" in names
    assert not any(n.endswith(".bin") for n in names)
    modes = {p.name: p.stat().st_mode & 0o777 for p in finished_run.iterdir() if p.is_file()}
    assert len(set(modes.values())) == 1 and modes["model.safetensors"] & 0o044  # all alike, others may read
    tokenizer_config = json.loads((finished_run / "tokenizer_config.json").read_text())
    assert "local_files_only" not in tokenizer_config and "is_local" not in tokenizer_config
    assert not (finished_run.parent / ".out.partial").exists()
    results = json.loads((finished_run / "results.json").read_text())
    assert results["task"] == "sst2"
    params = results["structure"]["params"]
    assert set(params) >= {"total", "encoder", "embeddings", "nonzero"}
    assert params["total"] == params["encoder"] + params["embeddings"] + params["classifier"]
    assert (
        results["structure"]["heads_per_depth"] == [4, 4] and results["structure"]["encoder_sparsity"] == 0.0
    )
    assert results["finalize"] == {
        "baked_transforms": 0,
        "removed_heads": 0,
        "removed_neurons": 0,
        "sparse_linears": 0,
    }
    assert results["size_bytes"] > 30522 * 32 * 4
    assert set(results["latency_ms"]) == {"bs1_seq128", "bs32_seq128", "threads", "cpu", "omp_wait_policy"}
    assert results["latency_ms"]["cpu"]["model"]
    # Only that both shapes were timed: comparing timings would fail on a busy host (no timed assertions).
    assert results["latency_ms"]["bs1_seq128"] > 0 and results["latency_ms"]["bs32_seq128"] > 0
    assert [s["type"] for s in results["stages"]] == ["finetune"]
    assert results["stages"][0]["wall_s"] >= 0 and results["wall_s"] >= results["stages"][0]["wall_s"]
    assert 0.0 <= results["metrics"]["accuracy"] <= 1.0


def test_saved_recipe_reruns_and_card_names_the_metric(finished_run: Path):
    saved = yaml.safe_load((finished_run / "recipe.yaml").read_text())
    assert saved["stages"][0]["name"] == "finetune" and saved["max_train_samples"] == 64
    for key in ("model", "data_dir", "output_dir"):  # absolute: it reruns from any directory
        assert Path(saved[key]).is_absolute()
    card = (finished_run / "README.md").read_text()
    assert card.startswith("---\n") and "nyu-mll/glue" in card and "accuracy" in card


def test_eval_reproduces_the_run_metrics(finished_run: Path, glue_root: Path):
    done = fresh_cli(
        "eval", str(finished_run), "--task", "sst2", "--data-dir", str(glue_root), "--max-eval-samples", "48",
        "--max-length", "32", "--json", "--no-progress",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    printed = json.loads(done.stdout.strip().splitlines()[-1])
    results = json.loads((finished_run / "results.json").read_text())
    assert printed["metrics"] == pytest.approx(results["metrics"], abs=1e-9)


def test_bench_against_a_baseline_reports_ratios(finished_run: Path, tiny_bert_dir: Path):
    done = fresh_cli("bench", str(finished_run), "--baseline", str(tiny_bert_dir), "--json", "--repeats", "3")
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    for key in ("speedup_bs1_seq128", "speedup_bs32_seq128", "size_ratio", "params_ratio"):
        assert report[key] > 0
    # Same architecture: identical parameter count.
    assert report["params_ratio"] == 1.0
    assert report["model"]["latency_ms"]["bs1_seq128"] > 0


def test_inspect_lists_heads_and_widths(finished_run: Path):
    done = fresh_cli("inspect", str(finished_run), "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    info = json.loads(done.stdout.strip().splitlines()[-1])
    assert [layer["heads"] for layer in info["layers"]] == [4, 4]
    assert [layer["ffn_width"] for layer in info["layers"]] == [37, 37]
    assert [layer["weight_bits"] for layer in info["layers"]] == [32, 32] and info["encoder_sparsity"] == 0.0
    text = fresh_cli("inspect", str(finished_run))
    assert text.returncode == 0 and "depth  unique_layer  heads  ffn_width" in text.stdout


def test_bad_input_in_a_fresh_process_is_one_line_and_exit_2(tmp_path: Path):
    done = fresh_cli("inspect", str(tmp_path / "nothing"))
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0
    assert done.stderr.startswith("nlpcompress: error: ") and "nothing" in done.stderr


def test_interrupted_run_leaves_nothing_behind(tmp_path, tiny_bert_dir, glue_root, monkeypatch, capsys):
    def explode(stage, model, ctx):
        ctx.work_dir.mkdir(parents=True)
        (ctx.work_dir / "half-written").write_text("x")
        raise KeyboardInterrupt

    monkeypatch.setattr(FinetuneStage, "run", explode)
    recipe = write_recipe(tmp_path, model=str(tiny_bert_dir), data_dir=str(glue_root))
    assert cli.main(["run", str(recipe), "--no-progress"]) == 130
    assert "interrupted; run the same command again to resume" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "recipe.yaml"
    ]  # nothing to resume from: nothing kept


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("nlpcompress: error: ")
    return err[0]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"task": "sst3"}, "unknown task 'sst3'"),
        ({"data_dir": "/no/such/glue"}, "/no/such/glue"),
        ({"stages": [{"type": "prune_everything"}]}, "prune_everything"),
        ({"max_length": 2}, "max_length"),
        ({"max_train_samples": -5}, "max_train_samples"),
        ({"training": {"warmup_ratio": 0.1}}, "warmup_ratio"),
    ],
)
def test_bad_recipe_values_exit_2_with_one_line(tmp_path, tiny_bert_dir, glue_root, capsys, change, expected):
    fields = {"model": str(tiny_bert_dir), "data_dir": str(glue_root), **change}
    recipe = write_recipe(tmp_path, **fields)
    assert cli.main(["run", str(recipe), "--no-progress"]) == 2
    assert expected in error_line(capsys)
    assert not (tmp_path / "out").exists() and not (tmp_path / ".out.partial").exists()


def test_malformed_yaml_names_the_line(tmp_path, capsys):
    path = tmp_path / "broken.yaml"
    path.write_text("model: minilm-l6\ntask: [sst2\n")
    assert cli.main(["run", str(path)]) == 2
    assert "line" in error_line(capsys)


def test_non_bert_model_is_rejected(tmp_path, glue_root, capsys):
    from transformers import GPT2Config

    gpt2 = tmp_path / "gpt2"
    GPT2Config(n_layer=1, n_embd=16, n_head=2).save_pretrained(gpt2)
    recipe = write_recipe(tmp_path, model=str(gpt2), data_dir=str(glue_root))
    assert cli.main(["run", str(recipe)]) == 2
    line = error_line(capsys)
    assert "'gpt2'" in line and "bert" in line


def test_missing_model_folder_and_bad_bench_numbers(tmp_path, capsys):
    assert cli.main(["inspect", str(tmp_path / "nothing")]) == 2
    assert "nothing" in error_line(capsys)
    assert cli.main(["bench", str(tmp_path), "--threads", "0"]) == 2
    assert "--threads" in error_line(capsys)


def test_existing_foreign_folder_is_not_replaced(tmp_path, tiny_bert_dir, glue_root, capsys):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "precious.txt").write_text("keep me")
    recipe = write_recipe(tmp_path, model=str(tiny_bert_dir), data_dir=str(glue_root))
    assert cli.main(["run", str(recipe)]) == 2
    assert "not an nlpcompress run folder" in error_line(capsys)
    assert (tmp_path / "out" / "precious.txt").read_text() == "keep me"


# ---------------------------------------------------------------- bad input classes (one line, exit 2, nothing written)


def _sst2_folder(root: Path, train_text: bytes) -> Path:
    (root / "sst2").mkdir(parents=True)
    (root / "sst2" / "train.tsv").write_bytes(b"sentence\tlabel\tidx\n" + train_text)
    (root / "sst2" / "validation.tsv").write_bytes(
        b"sentence\tlabel\tidx\na fine film \t1\t0\na dull one \t0\t1\n"
    )
    return root


@pytest.mark.parametrize(
    ("train_text", "expected"),
    [
        (b"good \t1\t0\nbad \xff byte \t0\t1\n", "train.tsv:3: byte b'\\xff' at column 5 is not UTF-8"),
        (b"", "train.tsv: no rows after the header"),
    ],
    ids=["undecodable-byte", "header-only"],
)
def test_bad_data_files(tmp_path, tiny_bert_dir, capsys, train_text, expected):
    glue = _sst2_folder(tmp_path / "glue", train_text)
    recipe = write_recipe(tmp_path, model=str(tiny_bert_dir), data_dir=str(glue))
    assert cli.main(["run", str(recipe), "--no-progress"]) == 2
    assert expected in error_line(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["glue", "recipe.yaml"]  # nothing half-written


def test_a_training_value_of_the_wrong_type_fails_before_any_work(tmp_path, tiny_bert_dir, glue_root, capsys):
    recipe = write_recipe(tmp_path, model=str(tiny_bert_dir), data_dir=str(glue_root))
    arguments = ["run", str(recipe), "--set", "training.learning_rate=abc", "--set", "training.fp16=1"]
    assert cli.main(arguments) == 2
    line = error_line(capsys)
    assert "training.learning_rate: must be a number (got 'abc')" in line
    assert "training.fp16: must be true or false (got 1)" in line


@pytest.mark.parametrize("where", ["file", "under-a-file"])
def test_an_output_path_that_is_or_sits_under_a_file(tmp_path, tiny_bert_dir, glue_root, capsys, where):
    (tmp_path / "taken").write_text("keep")
    output = tmp_path / "taken" if where == "file" else tmp_path / "taken" / "out"
    recipe = write_recipe(tmp_path, model=str(tiny_bert_dir), data_dir=str(glue_root))
    assert cli.main(["run", str(recipe), "--output-dir", str(output), "--no-progress"]) == 2
    assert ("is a file" if where == "file" else "cannot write beside it") in error_line(capsys)
    assert (tmp_path / "taken").read_text() == "keep"


def test_truncated_weights_are_named_in_run_and_inspect(tmp_path, finished_run, glue_root, capsys):
    broken = tmp_path / "broken"
    broken.mkdir()
    for file in finished_run.iterdir():
        if file.is_file():
            (broken / file.name).write_bytes(file.read_bytes())
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:4096])
    assert cli.main(["inspect", str(broken)]) == 2
    assert "cannot load the weights of model" in error_line(capsys)
    recipe = write_recipe(tmp_path, model=str(broken), data_dir=str(glue_root))
    assert cli.main(["run", str(recipe), "--no-progress"]) == 2
    assert "may be truncated or corrupted" in error_line(capsys)


@pytest.mark.parametrize(
    ("task", "expected"),
    [
        ("stsb", "task 'stsb' needs a regression score"),
        ("rte", "predicts negative, positive; task 'rte' has labels"),
    ],
)
def test_eval_on_a_task_the_model_was_not_trained_for(finished_run, glue_root, capsys, task, expected):
    assert (
        cli.main(["eval", str(finished_run), "--task", task, "--data-dir", str(glue_root), "--no-progress"])
        == 2
    )
    assert expected in error_line(capsys)


def test_bench_times_a_baseline_with_another_vocabulary(tmp_path, finished_run, capsys):
    """A vocabulary-pruned model is timed against its own baseline: the same token ids (below the smaller
    vocabulary) feed both, and an embedding lookup costs the same whichever ids it reads."""
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(
        vocab_size=500, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=37,
        max_position_embeddings=128,
    )  # fmt: skip
    BertForSequenceClassification(config).save_pretrained(tmp_path / "small-vocab")
    argv = [
        "bench",
        str(finished_run),
        "--baseline",
        str(tmp_path / "small-vocab"),
        "--repeats",
        "2",
        "--json",
    ]
    assert cli.main(argv) == 0
    report = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert report["speedup_bs1_seq128"] > 0 and report["baseline"]["params"]["embeddings"] > 0


def test_loading_a_run_folder_unpickles_nothing(finished_run, tmp_path, monkeypatch):
    """Weights are safetensors, configs and results JSON, the recipe safe YAML: pickle is never asked."""
    import pickle

    import torch

    from nlpcompress.models import load_compact, load_model_dir, load_tokenizer
    from nlpcompress.recipe import load_recipe
    from nlpcompress.snapshot import load_snapshot, save_snapshot

    def refuse(*args, **kwargs):
        raise AssertionError("something was unpickled")

    snapshot = tmp_path / "snapshot"
    save_snapshot(load_model_dir(str(finished_run)), snapshot)
    for module, name in ((pickle, "load"), (pickle, "loads"), (pickle, "Unpickler"), (torch, "load")):
        monkeypatch.setattr(module, name, refuse)
    from nlpcompress.glue import get_task

    load_model_dir(str(finished_run))
    load_compact(str(finished_run), get_task("sst2"))
    load_tokenizer(str(finished_run))
    load_recipe(finished_run / "recipe.yaml")
    load_snapshot(snapshot)


def test_a_compact_model_of_another_task_is_refused_before_any_data_loads(
    tmp_path, finished_run, capsys, monkeypatch
):
    import nlpcompress.context

    monkeypatch.setattr(nlpcompress.context, "load_task_data", lambda *a, **k: pytest.fail("data was loaded"))
    recipe = write_recipe(tmp_path, model=str(finished_run), data_dir="/nowhere", task="rte")
    assert cli.main(["run", str(recipe), "--no-progress"]) == 2
    assert "predicts negative, positive; task 'rte' has labels" in error_line(capsys)


def test_a_full_disk_while_saving_keeps_the_previous_result_and_the_run_resumable(
    tmp_path, tiny_bert_dir, glue_root, capsys, monkeypatch
):
    import errno

    from transformers import PreTrainedModel

    recipe = write_recipe(tmp_path, model=str(tiny_bert_dir), data_dir=str(glue_root))
    assert cli.main(["run", str(recipe), "--no-progress"]) == 0
    previous = (tmp_path / "out" / "results.json").read_text()
    save = PreTrainedModel.save_pretrained

    def full_disk(self, folder, *args, **kwargs):
        if Path(folder).name == ".out.partial":  # the final save; training checkpoints still work
            raise OSError(errno.ENOSPC, "No space left on device")
        return save(self, folder, *args, **kwargs)

    monkeypatch.setattr(PreTrainedModel, "save_pretrained", full_disk)
    assert cli.main(["run", str(recipe), "--no-progress", "--overwrite", "--set", "seed=8"]) == 2
    line = error_line(capsys)
    assert "cannot write into" in line and "(No space left on device)" in line and "is untouched" in line
    assert (tmp_path / "out" / "results.json").read_text() == previous  # the previous result is intact
    monkeypatch.setattr(PreTrainedModel, "save_pretrained", save)
    assert (
        cli.main(["run", str(recipe), "--no-progress", "--overwrite", "--set", "seed=8"]) == 0
    )  # resumes at the save
    assert json.loads((tmp_path / "out" / "results.json").read_text())["stages"][0]["name"] == "finetune"
    assert not (tmp_path / ".out.partial").exists()
