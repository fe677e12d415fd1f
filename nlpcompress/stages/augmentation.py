"""The train rows of a distilling stage with ``augment:``: the run's train rows plus TinyBERT's augmented
copies (``nlpcompress.distill.augment``), labelled by the teacher, cached on disk.

Only the train split is augmented (``StageContext.train_rows``); evaluation rows are never read here.
An original row keeps its gold label; an augmented copy is labelled by the teacher: its argmax class, or
its predicted value for a regression task. The soft-target and layer terms read the teacher's outputs on
the fly anyway; the label serves the task term (``alpha_task``), which would otherwise train on the label
of a sentence whose words were changed. The stage's record gives, for a classification task, each class's
share of the gold labels and of the teacher's labels of the copies (``class_shares``).

The generated texts are cached in ``$NLPCOMPRESS_CACHE/augment/<key>`` (default
``~/.cache/nlpcompress/augment/<key>``) as JSON Lines, the key a SHA-256 of every input of the generator:
the rows, the tokenizer's vocabulary, the candidate source (the teacher's input embeddings, the masked
LM's files), copies, p, K and seed. A second run with the same inputs reads them back (and logs so); the
teacher's labels are computed each time (they depend on the whole teacher).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import Dataset, concatenate_datasets
from transformers import AutoModelForMaskedLM, AutoTokenizer, PreTrainedTokenizerBase

from nlpcompress.distill.augment import Augmented, CandidateFinder, augment_rows
from nlpcompress.distill.config import AugmentConfig
from nlpcompress.errors import UserError
from nlpcompress.evaluation import predict_logits
from nlpcompress.glue import tokenize
from nlpcompress.stages.registry import Stage, StageContext

logger = logging.getLogger("nlpcompress")

CACHE_ENV = "NLPCOMPRESS_CACHE"
FORMAT = 1  # bump when the generator's output for the same inputs changes
EMBEDDINGS = "teacher input embeddings"
ROWS_FILE, META_FILE = "rows.jsonl", "meta.json"


def cache_root() -> Path:
    """``$NLPCOMPRESS_CACHE/augment``, else ``~/.cache/nlpcompress/augment``."""
    base = os.environ.get(CACHE_ENV)
    return (Path(base).expanduser() if base else Path.home() / ".cache" / "nlpcompress") / "augment"


def cache_key(
    rows: list[tuple[str, ...]],
    tokenizer: PreTrainedTokenizerBase,
    embeddings: torch.Tensor,
    mlm: Path | None,
    config: AugmentConfig,
    seed: int,
) -> str:
    """SHA-256 of the generator's inputs; the masked LM by its files' names, sizes and modification times."""
    digest = hashlib.sha256(f"nlpcompress-augment-{FORMAT}\n".encode())
    for row in rows:
        digest.update(json.dumps(row).encode() + b"\n")
    digest.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    digest.update(embeddings.detach().float().cpu().contiguous().numpy().tobytes())
    if mlm is not None:
        files = sorted(p for p in mlm.rglob("*") if p.is_file())
        stats = [(str(p.relative_to(mlm)), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
        digest.update(json.dumps([str(mlm), stats]).encode())
    settings = {"copies": config.copies, "p": config.p, "candidates": config.candidates, "seed": seed}
    digest.update(json.dumps(settings, sort_keys=True).encode())
    return digest.hexdigest()


def _read(folder: Path) -> list[Augmented]:
    with (folder / ROWS_FILE).open(encoding="utf-8") as lines:
        return [Augmented(row["source"], tuple(row["texts"])) for row in map(json.loads, lines)]


def _write(folder: Path, augmented: list[Augmented], meta: dict[str, Any]) -> None:
    """Written into a fresh folder beside ``folder``, then renamed: a reader never sees half of it, and
    of two processes writing the same key, the first rename wins (the contents are the same)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    draft = folder.with_name(f"{folder.name}.tmp-{uuid.uuid4().hex[:8]}")
    draft.mkdir()
    with (draft / ROWS_FILE).open("w", encoding="utf-8") as out:
        for row in augmented:
            out.write(json.dumps({"source": row.source, "texts": list(row.texts)}, ensure_ascii=False) + "\n")
    (draft / META_FILE).write_text(json.dumps(meta, indent=1))
    try:
        draft.rename(folder)
    except OSError:
        shutil.rmtree(draft, ignore_errors=True)
        if not (folder / META_FILE).is_file():
            raise


def _masked_lm(path: str, tokenizer: PreTrainedTokenizerBase, stage: Stage) -> tuple[Path, torch.nn.Module]:
    folder = Path(path).expanduser().resolve()
    where = f"stage {stage.name!r}: augment.mlm {path!r}"
    if not folder.is_dir():
        raise UserError(f"{where}: not a folder; give a local masked-LM checkpoint (or mlm: null)")
    try:
        mlm_tokenizer = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForMaskedLM.from_pretrained(folder)
    except (OSError, ValueError) as err:
        raise UserError(f"{where}: not a masked-LM checkpoint ({str(err).splitlines()[0]})") from None
    if mlm_tokenizer.get_vocab() != tokenizer.get_vocab():
        raise UserError(
            f"{where}: its tokenizer's vocabulary differs from the run's; candidates need the same"
        )
    return folder, model.eval()


def _teacher_labels(
    teacher: torch.nn.Module, rows: Dataset, ctx: StageContext, device: torch.device
) -> np.ndarray:
    """The teacher's argmax class per row (its value for a regression task)."""
    home = next(teacher.parameters()).device
    teacher.to(device)
    try:
        logits, _ = predict_logits(teacher, rows, ctx.tokenizer, progress=ctx.progress)
    finally:
        teacher.to(home)
    return logits[:, 0].astype(np.float32) if ctx.task.is_regression else logits.argmax(-1).astype(np.int64)


def class_shares(labels: np.ndarray, num_labels: int) -> list[float]:
    """The share of ``labels`` in each class 0 .. num_labels - 1, to 4 decimals: whether the teacher's
    labels of the copies keep the gold labels' balance (a changed word can change the class)."""
    counts = np.bincount(labels.astype(np.int64), minlength=num_labels)
    return [round(float(count) / max(len(labels), 1), 4) for count in counts]


def augmented_train(
    ctx: StageContext,
    stage: Stage,
    config: AugmentConfig,
    teacher: torch.nn.Module | None,
    device: torch.device | str = "cpu",
) -> tuple[Dataset, dict[str, Any]]:
    """``ctx.train_dataset`` followed by the augmented copies of its rows (tokenized like them, labelled by
    ``teacher`` on ``device``), and the facts for the stage's record."""
    if teacher is None:
        raise UserError(f"stage {stage.name!r}: augment labels the new rows with the teacher; it has none")
    if ctx.train_rows is None or ctx.train_dataset is None:
        raise UserError(f"stage {stage.name!r}: augment needs the run's train rows as text (a recipe run)")
    source_rows = ctx.train_rows()
    columns = ctx.task.text_fields
    rows = list(zip(*(source_rows[column] for column in columns), strict=True))
    if len(rows) != len(ctx.train_dataset):
        raise UserError(
            f"stage {stage.name!r}: augment read {len(rows)} train rows as text, the run has "
            f"{len(ctx.train_dataset)} tokenized"
        )
    embeddings = teacher.get_input_embeddings().weight
    mlm_path, mlm = _masked_lm(config.mlm, ctx.tokenizer, stage) if config.mlm is not None else (None, None)
    seed = ctx.seed if config.seed is None else config.seed
    folder = cache_root() / cache_key(rows, ctx.tokenizer, embeddings, mlm_path, config, seed)
    source = f"mlm:{mlm_path}" if mlm_path is not None else EMBEDDINGS
    reused = (folder / META_FILE).is_file()
    if reused:
        augmented = _read(folder)
        logger.info("stage %s: augment reuses %d cached rows from %s", stage.name, len(augmented), folder)
    else:
        if mlm is not None:
            mlm.to(device)
        finder = CandidateFinder(ctx.tokenizer, embeddings, config.candidates, mlm)
        augmented = augment_rows(rows, finder, config.copies, config.p, seed, progress=ctx.progress)
        meta = {"source": source, "copies": config.copies, "p": config.p, "candidates": config.candidates,
                "seed": seed, "rows_before": len(rows), "augmented": len(augmented)}  # fmt: skip
        _write(folder, augmented, meta)
        logger.info("stage %s: augment wrote %d rows to %s", stage.name, len(augmented), folder)
    facts = {
        "source": source,
        "multi_piece_words": EMBEDDINGS,
        "copies": config.copies,
        "p": config.p,
        "candidates": config.candidates,
        "seed": seed,
        "rows_before": len(rows),
        "rows_after": len(rows) + len(augmented),
        "labels": "gold for the original rows, the teacher's prediction for the augmented ones",
        "cache": str(folder),
        "reused": reused,
    }
    if not augmented:
        return ctx.train_dataset, facts
    new = Dataset.from_dict(
        {
            **{column: [row.texts[i] for row in augmented] for i, column in enumerate(columns)},
            "label": [0.0 if ctx.task.is_regression else 0] * len(augmented),
        }
    )
    new = tokenize(new, ctx.tokenizer, ctx.task, ctx.max_length)
    labels = _teacher_labels(teacher, new, ctx, torch.device(device))
    if not ctx.task.is_regression:
        facts["class_shares"] = {
            "gold": class_shares(np.asarray(ctx.train_dataset["labels"]), ctx.task.num_labels),
            "teacher_on_copies": class_shares(labels, ctx.task.num_labels),
        }
    new = new.remove_columns("labels").add_column("labels", labels)
    train = concatenate_datasets([ctx.train_dataset, new.cast(ctx.train_dataset.features)])
    return train, facts
