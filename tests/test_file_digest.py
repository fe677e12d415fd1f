"""The data records a run keeps: one digest format for GLUE folders and users' files, equal to the
records already committed (a change of format would make every cached run look like other data)."""

import hashlib
import json

from benchmarks.paths import REPO
from nlpcompress.file_digest import labelled_files_digest
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
