"""The data records a run keeps: one digest format for GLUE folders and users' files, equal to the
records already committed (a change of format would make every cached run look like other data)."""

import hashlib
import json

from benchmarks.paths import REPO
from nlpcompress.file_digest import concatenated_files_digest, labelled_files_digest
from nlpcompress.glue import data_record, get_task
from nlpcompress.task import resolve_task


def committed_record(relative: str) -> dict:
    results = json.loads((REPO / "benchmarks" / "results" / relative).read_text())
    return results.get("results", results)["data"]


def test_the_digest_is_one_labelled_line_per_file_in_order(tmp_path):
    first, second = tmp_path / "a.tsv", tmp_path / "b.tsv"
    first.write_bytes(b"sentence\tlabel\nfine\t1\n")
    second.write_bytes(b"")
    lines = "".join(f"{label}:{hashlib.sha256(path.read_bytes()).hexdigest()}\n" for label, path in
                    [("train", first), ("validation", second)])  # fmt: skip
    assert (
        labelled_files_digest([("train", first), ("validation", second)])
        == hashlib.sha256(lines.encode()).hexdigest()
    )
    assert labelled_files_digest([("validation", second), ("train", first)]) != labelled_files_digest(
        [("train", first), ("validation", second)]
    )


def test_the_concatenated_digest_is_the_hash_of_the_bytes_one_after_another(tmp_path):
    """The form the harness identifies a baseline by (its config and weights); a file longer than one read
    chunk is hashed whole."""
    config, weights = tmp_path / "config.json", tmp_path / "model.safetensors"
    config.write_bytes(b'{"hidden_size": 8}')
    weights.write_bytes(bytes(range(256)) * 5000)  # 1.28 MB: two chunks
    assert (
        concatenated_files_digest([config, weights])
        == hashlib.sha256(config.read_bytes() + weights.read_bytes()).hexdigest()
    )


def test_digests_do_not_need_pythons_file_digest(tmp_path, monkeypatch):
    """``hashlib.file_digest`` is Python 3.11+; the package supports 3.10."""
    data = tmp_path / "train.tsv"
    data.write_bytes(b"sentence\tlabel\nfine\t1\n")
    monkeypatch.delattr(hashlib, "file_digest", raising=False)
    line = f"train:{hashlib.sha256(data.read_bytes()).hexdigest()}\n"
    assert labelled_files_digest([("train", data)]) == hashlib.sha256(line.encode()).hexdigest()
    assert concatenated_files_digest([data]) == hashlib.sha256(data.read_bytes()).hexdigest()


def test_a_glue_folders_record_is_the_one_committed_runs_hold(glue_root):
    assert (
        data_record(get_task("sst2"), glue_root)["sha256"]
        == committed_record("full-stack-runs/sst2-full-stack-seed42.json")["sha256"]
    )


def test_a_users_files_record_is_the_one_committed_runs_hold(glue_root):
    task = resolve_task(
        {"name": "reviews", "data": {"train": str(glue_root / "sst2" / "train.tsv"),
         "validation": str(glue_root / "sst2" / "validation.tsv")}, "text": "sentence", "label": "label",
         "metric": "macro_f1"}
    )  # fmt: skip
    record = data_record(task, None)
    assert record["sha256"] == committed_record("own-data/compress.json")["sha256"]
    assert record["validation"] == "the validation split"


def test_one_changed_byte_changes_the_record(tmp_path, glue_root):
    train = tmp_path / "train.tsv"
    lines = (glue_root / "sst2" / "train.tsv").read_bytes().splitlines(keepends=True)
    train.write_bytes(b"".join(lines[:50]))
    block = {"name": "reviews", "data": {"train": str(train)}, "text": "sentence", "label": "label"}
    before = data_record(resolve_task(block), None)["sha256"]
    train.write_bytes(train.read_bytes().replace(b"\t1\n", b"\t0\n", 1))
    assert data_record(resolve_task(block), None)["sha256"] != before
