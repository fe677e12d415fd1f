"""benchmarks.vocab_mapping: the counts and scores it records are those of the model and data it names."""

import json
import shutil

from nlpcompress.evaluation import predict_logits
from nlpcompress.glue import get_task, load_task_data
from nlpcompress.glue.metrics import compute_metrics, task_score
from nlpcompress.models import load_model_dir, load_tokenizer


def test_the_record_counts_dev_rows_with_dropped_tokens_and_scores_the_whole_vocabulary(
    tiny_bert_dir, glue_root, tmp_path
):
    from benchmarks import vocab_mapping

    baseline = tmp_path / "work" / "cola" / "seed42" / "baseline"
    shutil.copytree(tiny_bert_dir, baseline)
    (baseline / "recipe.yaml").write_text("max_length: 32\n")
    output = tmp_path / "cola.json"
    vocab_mapping.main(
        [
            "--task",
            "cola",
            "--work-dir",
            str(tmp_path / "work"),
            "--data-dir",
            str(glue_root),
            "--output",
            str(output),
        ]
    )
    record = json.loads(output.read_text())["seeds"]["42"]

    task, tokenizer, model = get_task("cola"), load_tokenizer(str(baseline)), load_model_dir(str(baseline))
    train, evals = load_task_data(task, tokenizer, glue_root, 32)
    kept = {i for ids in train["input_ids"] for i in ids} | set(tokenizer.all_special_ids)
    dev = evals["validation"]["input_ids"]
    assert record["kept_tokens"] == len(kept) and record["dev_rows"] == len(dev) == 1043
    assert record["dev_rows_with_a_dropped_token"] == sum(any(i not in kept for i in ids) for ids in dev)
    logits, labels = predict_logits(model, evals["validation"], tokenizer, progress=False)
    assert record["scores"]["whole_vocabulary"] == task_score(task, compute_metrics(task, logits, labels))
    assert set(record["scores"]) == {"whole_vocabulary", "pruned_tokenizer", "nearest_kept"}
    # WordPiece rebuilds some dropped words from kept pieces; a row with no dropped token gets no [UNK]
    assert 0 < record["dev_rows_with_unk_after_pruning"] <= record["dev_rows_with_a_dropped_token"]
