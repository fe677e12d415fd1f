"""Run a recipe: load data and model, apply the stages in order, save, check, measure.

Everything is written into a staging folder beside the destination (``.<name>.partial``) and renamed
at the end, so an interrupted or failed run never leaves a half-written result. The staging folder
also lets a killed run resume: after each stage the model (and the teacher later stages need) is
saved there with the stage records, and each training stage keeps its last Trainer checkpoint. The
same command then skips the finished stages and continues the unfinished one from its checkpoint;
``restart`` discards the partial run. Under ``torchrun`` or ``accelerate launch`` every process runs
the stages (the Trainer splits the data, importance scores are all-reduced); only the main process
writes the staging folder, finalizes, measures and publishes, while the others wait.
"""

import json
import logging
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import transformers
import yaml
from transformers import (
    AutoModelForSequenceClassification,
    PreTrainedTokenizerBase,
    TrainerCallback,
    set_seed,
)

from nlpcompress.card import write_model_card
from nlpcompress.compact import CompactBertForSequenceClassification
from nlpcompress.context import RunData, load_run_data, stage_context
from nlpcompress.distributed import is_main, start, wait
from nlpcompress.errors import UserError
from nlpcompress.exporters import ExportContext, check_exporters, portable_files, run_exporters
from nlpcompress.finalize import finalize
from nlpcompress.glue import Task, data_record, resolve_data_dir, task_score
from nlpcompress.measure import latency_report, size_on_disk
from nlpcompress.models import NEW_HEAD, check_model, comes_with_head, load_compact, load_tokenizer
from nlpcompress.parametrize import clone
from nlpcompress.recipe import Recipe
from nlpcompress.run_folder import RESULTS, check_destination, folder_lock, publish, written_files
from nlpcompress.snapshot import load_snapshot, save_snapshot
from nlpcompress.stages import Model, Stage, StageContext, StageOutput
from nlpcompress.stages.contracts import check_order, prepare
from nlpcompress.stages.teachers import check_teacher, head_problem, head_source
from nlpcompress.stages.training import evaluate
from nlpcompress.structure import describe, model_state
from nlpcompress.task import resolve_task
from nlpcompress.user_data import DataFiles, TaskBlock
from nlpcompress.version import __version__
from nlpcompress.vocab import token_ids_read

logger = logging.getLogger("nlpcompress")

# A reloaded model must reproduce the in-memory metrics. Finalizing reorders float sums (heads and neurons
# removed, masks folded): ~1e-7 in the logits, which a correlation of nearly constant predictions (an
# untrained regressor) magnifies to ~1e-5; a wrong or missing weight moves metrics far more than 1e-4.
RELOAD_TOLERANCE = 1e-4


@dataclass
class RunResult:
    output_dir: Path
    results: dict[str, Any]
    pushed_to: str | None = None  # the Hub commit URL when the recipe pushes


PROGRESS = "progress.json"
INPUT_MODEL = "input-model.json"  # the recipe's own classifier scored before any stage


def _staging_folder(output_dir: Path, recipe: Recipe, restart: bool) -> tuple[Path, list[dict[str, Any]]]:
    """The staging folder beside ``output_dir`` (same file system, so the final rename is atomic) and the
    records of the stages that an interrupted run of the same recipe finished there. The main process
    prepares it; the others read it once it is ready."""
    staging = output_dir.parent / f".{output_dir.name}.partial"
    if is_main():
        _prepare_staging(staging, output_dir, recipe, restart)
    wait()
    return staging, json.loads((staging / PROGRESS).read_text())["finished"]


def _prepare_staging(staging: Path, output_dir: Path, recipe: Recipe, restart: bool) -> None:
    progress = staging / PROGRESS
    if staging.exists() and progress.is_file() and not restart:
        earlier = json.loads(progress.read_text())
        if earlier.get("recipe") == recipe.to_yaml():
            return
        kept = _unchanged_stages(earlier, recipe)
        if kept:
            logger.info(
                "the partial run in %s is of an earlier version of this recipe: stages %s are unchanged and "
                "reused; the rest starts over",
                staging, ", ".join(record["name"] for record in kept),
            )  # fmt: skip
            shutil.rmtree(staging / "work", ignore_errors=True)  # checkpoints of the changed stage
            _write_progress(staging, recipe, kept)
            return
        logger.info("the partial run in %s is of another recipe: starting over", staging)
    elif staging.exists() and restart:
        logger.info("--restart: discarding the partial run in %s", staging)
    shutil.rmtree(staging, ignore_errors=True)
    try:
        staging.mkdir(parents=True)
    except OSError as error:
        raise UserError(
            f"output_dir {str(output_dir)!r}: cannot write beside it ({error.strerror or error})"
        ) from None
    _write_progress(staging, recipe, [])


def _unchanged_stages(earlier: dict[str, Any], recipe: Recipe) -> list[dict[str, Any]]:
    """The finished stages of an earlier version of ``recipe`` that it can reuse: all of them, when every
    setting but the stages after them (and the exports) is the same; else none (a resume point holds the
    model after the last finished stage only)."""
    finished = earlier.get("finished") or []
    try:
        before = yaml.safe_load(earlier["recipe"])
    except (KeyError, yaml.YAMLError):
        return []
    now = yaml.safe_load(recipe.to_yaml())
    after_save = ("stages", "export", "push_to_hub")
    same_run = {k: v for k, v in before.items() if k not in after_save} == {
        k: v for k, v in now.items() if k not in after_save
    }
    count = len(finished)
    if (
        not same_run
        or count == 0
        or count > len(now["stages"])
        or before["stages"][:count] != now["stages"][:count]
    ):
        return []
    return finished


def _write_progress(staging: Path, recipe: Recipe, finished: list[dict[str, Any]]) -> None:
    """Record the finished stages (written whole, then renamed: a kill never leaves half of it)."""
    draft = staging / f"{PROGRESS}.tmp"
    draft.write_text(json.dumps({"recipe": recipe.to_yaml(), "finished": finished}, indent=1))
    draft.replace(staging / PROGRESS)


def _save_resume_point(
    staging: Path, count: int, model: Model, teacher: Model | None, tokenizer: PreTrainedTokenizerBase
) -> None:
    """The model (teacher, tokenizer) after ``count`` finished stages, in ``resume-<count>`` (one a killed
    run left there unrecorded is replaced). The earlier point stays until the progress record names this
    one (``_drop_resume_points_before``), so a kill in between resumes from the earlier one."""
    draft = staging / f"resume-{count}.tmp"
    shutil.rmtree(draft, ignore_errors=True)
    save_snapshot(model, draft / "model")
    tokenizer.save_pretrained(draft / "tokenizer")
    if teacher is not None:
        save_snapshot(teacher, draft / "teacher")
    shutil.rmtree(staging / f"resume-{count}", ignore_errors=True)
    draft.rename(staging / f"resume-{count}")


def _drop_resume_points_before(staging: Path, count: int) -> None:
    for older in staging.glob("resume-*"):
        if older.name != f"resume-{count}":
            shutil.rmtree(older, ignore_errors=True)


def _worth_keeping(staging: Path) -> bool:
    """A finished stage or a Trainer checkpoint: the run can resume from it."""
    return any(staging.glob("resume-*")) or any(staging.glob("work/*/checkpoint-*"))


def _check_reload(folder: Path, expected: dict[str, float], ctx: StageContext) -> torch.nn.Module:
    """Reload the saved folder through the Auto classes and require the same metrics."""
    reloaded = AutoModelForSequenceClassification.from_pretrained(folder)
    if not isinstance(reloaded, CompactBertForSequenceClassification):
        raise RuntimeError(f"saved model reloaded as {type(reloaded).__name__}, not the compact model")
    metrics = evaluate(reloaded, ctx)
    drift = {k: abs(metrics[k] - v) for k, v in expected.items()}
    if any(d > RELOAD_TOLERANCE for d in drift.values()):
        raise RuntimeError(f"the saved model does not reproduce its metrics: {metrics} vs {expected}")
    return reloaded


def check_teachers(stages: Sequence[Stage], given: bool = False) -> list[bool]:
    """Fail before any work when a stage distils with no teacher before it (``given``: the recipe names one);
    per stage, whether a later one needs the teacher."""
    available = given
    for stage in stages:
        if stage.needs_teacher() and not available:
            raise UserError(
                f"stage {stage.name!r} ({stage.type}) distils from the run's teacher, but no earlier stage "
                "provides one: put a finetune (or distill) stage before it, or name one in the recipe's teacher key"
            )
        available = available or stage.provides_teacher
    return [any(later.needs_teacher() for later in stages[index + 1 :]) for index in range(len(stages))]


def run_stages(
    stages: Sequence[Stage],
    model: Model,
    context: Callable[[Stage, Model | None], StageContext],
    teacher: Model | None = None,
) -> Iterator[tuple[Stage, StageOutput, float, Model | None]]:
    """Apply ``stages`` in order; yields each stage with its output, wall seconds and the teacher it leaves.

    ``context(stage, teacher)`` builds the stage's context around the run's current teacher (first
    ``teacher``, then the last one a stage provides). A stage's ``StageOutput.teacher`` becomes the
    teacher of later stages (a snapshot when it is the model itself, which later stages change in
    place), kept only while a later stage needs it.
    """
    check_order(stages, model_state(model))
    for stage, keep_teacher in zip(stages, check_teachers(stages, teacher is not None), strict=True):
        ctx = context(stage, teacher)
        logger.info("stage %s (%s): starting", stage.name, stage.type)
        started = time.perf_counter()
        prepare(stage, model)  # the stage's normalisations, then its contract on the real model
        taught = (
            check_teacher(stage, ctx.teacher, ctx, "the run's teacher") if stage.needs_teacher() else None
        )
        try:
            output = stage.run(model, ctx)
        except ValueError as err:  # a ConfigError too: the technique refuses this model or setting
            raise UserError(f"stage {stage.name!r}: {err}") from err
        if taught is not None:
            output.info.setdefault("teacher", taught)
        model = output.model
        if not keep_teacher:
            teacher = None
        elif output.teacher is not None:
            teacher = clone(output.teacher) if output.teacher is model else output.teacher
        yield stage, output, time.perf_counter() - started, teacher


def teacher_key(recipe: Recipe, task: Task) -> str | None:
    """The recipe's ``teacher``; or ``input`` when a stage distils before any stage provides a teacher and
    the model comes with a head trained for the task's labels (the user's classifier teaches its student)."""
    if recipe.teacher is not None:
        return recipe.teacher
    for stage in recipe.stages:
        if stage.needs_teacher():
            return "input" if comes_with_head(recipe.model, task) else None
        if stage.provides_teacher:
            return None
    return None


def _initial_teacher(recipe: Recipe, model: Model, task) -> Model | None:
    """The run's first teacher (``teacher_key``): ``input`` (a copy of the input model, already fine-tuned),
    a model, or none."""
    key = teacher_key(recipe, task)
    if key is None:
        return None
    if recipe.teacher is None:
        logger.info(
            "the input model %s has a head for %s's labels: it is the teacher", recipe.model, task.name
        )
    teacher = clone(model) if key == "input" else load_compact(key, task)
    teacher_ids, model_ids = token_ids_read(teacher.config), token_ids_read(model.config)
    if teacher_ids != model_ids:
        raise UserError(
            f"teacher {key!r} reads {teacher_ids} token ids, the model {model_ids}; "
            "distillation needs the same vocabulary"
        )
    problem = head_problem(teacher, task)
    if problem is not None and not recipe.allow_untrained_teacher:  # refused before anything trains
        shown = recipe.model if key == "input" else key
        raise UserError(
            f"teacher {key!r} ({shown}): {problem}; fine-tune it on {task.name} first, or set "
            "allow_untrained_teacher: true to distil from it anyway"
        )
    return teacher


def _stage_record(stage, output, wall_s: float) -> dict[str, Any]:
    return {"name": stage.name, "type": stage.type, "metrics": output.metrics, "wall_s": round(wall_s, 1)} | {
        k: v for k, v in output.info.items() if k not in ("name", "type", "metrics", "wall_s")
    }


def _rerunnable(recipe: Recipe) -> Recipe:
    """The recipe with its local paths absolute, so the saved copy reruns from any directory."""

    def absolute(value: str | None) -> str | None:
        return (
            str(Path(value).expanduser().resolve()) if value and Path(value).expanduser().exists() else value
        )

    data_dir = resolve_data_dir(recipe.data_dir)
    task = recipe.task
    if isinstance(task, TaskBlock):  # the user's files and folders, wherever the run started
        data = (
            task.data.model_copy(
                update={split: absolute(getattr(task.data, split)) for split in ("train", "validation")}
            )
            if isinstance(task.data, DataFiles)
            else absolute(task.data)
        )
        task = task.model_copy(update={"data": data})
    return recipe.model_copy(
        update={
            "task": task,
            "model": absolute(recipe.model),
            "teacher": absolute(recipe.teacher) if recipe.teacher != "input" else "input",
            "data_dir": str(data_dir.resolve()) if data_dir is not None else None,
            "output_dir": str(Path(recipe.output_dir).resolve()),
        }
    )


def _write_result(
    staging: Path,
    recipe: Recipe,
    model: Model,
    data: RunData,
    records: list[dict[str, Any]],
    progress: bool,
    started: float,
    input_model: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], ExportContext]:
    """Finalize → save → verify (reload to the same metrics) → describe and measure → each exporter →
    write ``results.json``, the recipe and the card into ``staging``; the results and the exporters' context."""
    finalized = finalize(model)
    logger.info("finalize: %s", finalized)
    model.save_pretrained(staging)
    data.tokenizer.save_pretrained(staging)
    portable_files(staging)
    final_metrics = records[-1]["metrics"]
    saved = _check_reload(
        staging, final_metrics, stage_context(recipe, recipe.stages[-1], data, staging, progress=progress)
    )
    task = data.task
    results = {
        "task": task.name,
        "model": recipe.model,
        "main_metric": task.main_metric,
        "metrics": final_metrics,
        "score": task_score(task, final_metrics),
        "eval_rows": {split: len(dataset) for split, dataset in data.evals.items()},
        "data": data_record(task, recipe.data_dir),
        "structure": describe(saved),
        "size_bytes": size_on_disk(staging),
        "latency_ms": latency_report(saved),
        "finalize": finalized,
        "stages": records,
        "wall_s": round(time.perf_counter() - started, 1),
        "versions": {
            "nlpcompress": __version__,
            "transformers": transformers.__version__,
            "torch": torch.__version__,
        },
    }
    if input_model is not None:  # the user's classifier, compared with what it became
        retention = results["score"] / input_model["score"] if input_model["score"] else None
        results["input_model"] = input_model | {"retention": retention and round(retention, 4)}
    if recipe.allow_untrained_teacher:
        results["overrides"] = {"allow_untrained_teacher": True}
    exports = ExportContext(
        staging,
        recipe,
        task,
        saved,
        results["structure"],
        data.tokenizer,
        data.evals,
        final_metrics,
        progress,
    )
    results |= run_exporters(exports, published=False)
    (staging / "recipe.yaml").write_text(_rerunnable(recipe).to_yaml())
    write_model_card(staging, recipe, results)
    # what this run wrote, so that replacing it later (--overwrite) keeps everything else
    scratch = ("work", PROGRESS, INPUT_MODEL, *(path.name for path in staging.glob("resume-*")))
    results["files"] = sorted([*written_files(staging, scratch), RESULTS])
    (staging / RESULTS).write_text(json.dumps(results, indent=2) + "\n")
    return results, exports


def _input_model(
    staging: Path, recipe: Recipe, model: Model, ctx: StageContext, resumed: bool
) -> dict[str, Any] | None:
    """The recipe's own model scored before any stage, when it comes with a trained head and the recipe
    does not fine-tune it first: the user's classifier, the baseline the compressed model is compared
    with. Measured once; a resumed run reads it back."""
    path = staging / INPUT_MODEL
    if not resumed and recipe.stages[0].type != "finetune" and head_source(model) != NEW_HEAD:
        metrics = evaluate(model, ctx)
        record = {"model": recipe.model, "metrics": metrics, "score": task_score(ctx.task, metrics)}
        if is_main():
            path.write_text(json.dumps(record))
        return record
    return json.loads(path.read_text()) if path.is_file() else None


def _check_recipe(recipe: Recipe, task: Task, output_dir: Path, overwrite: bool) -> None:
    """Everything that can be refused before any work: destination, teachers, stage order, exports, models."""
    check_destination(output_dir, overwrite)
    check_order(recipe.stages)
    check_model(recipe.model, task, replace_head=recipe.stages[0].type == "finetune")
    check_teachers(recipe.stages, teacher_key(recipe, task) is not None)  # reads the model's config
    check_exporters(recipe)
    if recipe.teacher not in (None, "input"):
        check_model(recipe.teacher, task)


def _starting_point(
    recipe: Recipe, task: Task, resume: Path | None
) -> tuple[Model, Model | None, PreTrainedTokenizerBase]:
    """The model, teacher and tokenizer to continue from: the resume point of an interrupted run, or the
    recipe's model (and teacher) freshly loaded."""
    if resume is not None:
        saved_tokenizer = resume / "tokenizer"
        tokenizer = load_tokenizer(str(saved_tokenizer) if saved_tokenizer.is_dir() else recipe.model)
        teacher = load_snapshot(resume / "teacher") if (resume / "teacher").is_dir() else None
        return load_snapshot(resume / "model"), teacher, tokenizer
    set_seed(recipe.seed)
    model = load_compact(recipe.model, task, replace_head=recipe.stages[0].type == "finetune")
    return model, _initial_teacher(recipe, model, task), load_tokenizer(recipe.model)


def run_recipe(
    recipe: Recipe,
    progress: bool = True,
    restart: bool = False,
    callbacks: Sequence[TrainerCallback] = (),
    overwrite: bool = False,
) -> RunResult:
    """Execute ``recipe`` (resuming an interrupted run of it unless ``restart``) and return where the model
    went with its ``results.json`` content; ``callbacks`` join every stage's Trainer (a search trial's
    pruner). A finished run in ``output_dir`` is replaced only with ``overwrite`` (keeping the files it did
    not write); one run at a time writes to a folder."""
    started = time.perf_counter()
    task = resolve_task(recipe.task)
    output_dir = Path(recipe.output_dir).resolve()
    _check_recipe(recipe, task, output_dir, overwrite)
    start()
    with folder_lock(output_dir, "run") if is_main() else nullcontext():
        results, exports = _run_locked(recipe, task, output_dir, progress, restart, callbacks, started)
    published = run_exporters(replace(exports, folder=output_dir), published=True) if exports else {}
    return RunResult(output_dir=output_dir, results=results, pushed_to=published.get("hub"))


def _run_locked(
    recipe: Recipe,
    task: Task,
    output_dir: Path,
    progress: bool,
    restart: bool,
    callbacks: Sequence[TrainerCallback],
    started: float,
) -> tuple[dict[str, Any], ExportContext | None]:
    """The run itself, once the folder is this process's: stages, save, publish (see ``run_recipe``)."""
    staging, finished = _staging_folder(output_dir, recipe, restart)  # early: an unwritable place fails first
    try:
        model, teacher, tokenizer = _starting_point(
            recipe, task, staging / f"resume-{len(finished)}" if finished else None
        )
        data = load_run_data(recipe, task, tokenizer)
        if finished:
            following = (
                recipe.stages[len(finished)].name if len(finished) < len(recipe.stages) else "the save"
            )
            names = ", ".join(record["name"] for record in finished)
            logger.info("resuming %s: stages %s finished, continuing with %s", staging, names, following)
        records = list(finished)

        def context(stage: Stage, teacher: Model | None) -> StageContext:
            set_seed(recipe.seed)  # every stage starts alike, resumed or not
            return stage_context(recipe, stage, data, staging, teacher, progress, callbacks)

        input_model = _input_model(staging, recipe, model, context(recipe.stages[0], teacher), bool(finished))
        remaining = recipe.stages[len(finished) :]
        for stage, output, wall_s, handed_on in run_stages(remaining, model, context, teacher):
            model = output.model
            if output.tokenizer is not None:  # a new vocabulary: later stages and the save read the data anew
                data = data.with_tokenizer(output.tokenizer)
            records.append(_stage_record(stage, output, wall_s))
            logger.info("stage %s: %s (%.0f s)", stage.name, output.metrics, wall_s)
            if is_main():
                _save_resume_point(staging, len(records), model, handed_on, data.tokenizer)
                _write_progress(staging, recipe, records)
                _drop_resume_points_before(staging, len(records))
                shutil.rmtree(staging / "work" / str(stage.name), ignore_errors=True)
            wait()
        if not is_main():
            wait()  # the main process finalizes, checks, measures and publishes
            return json.loads((output_dir / RESULTS).read_text()), None
        results, exports = _write_result(
            staging, recipe, model, data, records, progress, started, input_model
        )
        for leftover in (staging / "work", *staging.glob("resume-*")):
            shutil.rmtree(leftover, ignore_errors=True)
        (staging / PROGRESS).unlink()
        (staging / INPUT_MODEL).unlink(missing_ok=True)
        publish(staging, output_dir)
        wait()
    except BaseException as error:
        if not is_main():
            raise
        if _worth_keeping(staging):
            logger.info("the partial run stays in %s: run the same command again to resume it", staging)
        else:
            shutil.rmtree(staging, ignore_errors=True)
        if isinstance(error, OSError):  # a full disk, a folder that went away: say so, keep what can resume
            raise UserError(
                f"cannot write into {staging} ({error.strerror or error}); {output_dir} is untouched: "
                "free some space and run the same command again to resume"
            ) from None
        raise
    return results, exports
