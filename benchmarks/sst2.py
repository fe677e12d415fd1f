"""What the SST-2 benchmarks share: budgets, command-line options, data, and running stages on a model.

Every benchmark fine-tunes or compresses MiniLM-L6 on the first ``max_train_samples`` SST-2 rows
(seq 64, batch 32) through the same stage runners a recipe uses, so its numbers are the toolkit's.
"""

import argparse
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datasets import Dataset
from transformers import PreTrainedTokenizerBase, set_seed

from benchmarks.paths import portable
from nlpcompress.compact import CompactBertForSequenceClassification
from nlpcompress.context import RunData, stage_context
from nlpcompress.glue import Task, get_task, load_task_data
from nlpcompress.models import load_compact, load_model_dir, load_tokenizer
from nlpcompress.recipe import Recipe, recipe_from_dict
from nlpcompress.runner import run_stages
from nlpcompress.stages import Model, Stage, StageContext, StageOutput
from nlpcompress.stages.training import evaluate

BUDGETS = {
    "small": {"max_train_samples": 8000, "max_eval_samples": None},
    "ci": {"max_train_samples": 512, "max_eval_samples": 128},
}
MAX_LENGTH = 64
BATCH_SIZE = 32


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    """The options every SST-2 benchmark takes; ``name`` picks the default work and result paths."""
    parser.add_argument(
        "--data-dir", default=None, help="local GLUE folder (else $NLPCOMPRESS_GLUE_DIR / Hub)"
    )
    parser.add_argument("--budget", choices=BUDGETS, default="small")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--work-dir", type=Path, default=Path(f"runs/{name.replace('_', '-')}-bench"))
    parser.add_argument("--output", type=Path, default=Path(f"benchmarks/results/{name}.json"))


@dataclass
class Sst2Bench:
    """The benchmark's data and settings; ``run`` executes stages on a model the way a recipe would."""

    args: argparse.Namespace
    task: Task
    tokenizer: PreTrainedTokenizerBase
    train: Dataset
    evals: dict[str, Dataset]

    @classmethod
    def load(cls, args: argparse.Namespace) -> "Sst2Bench":
        task, tokenizer = get_task("sst2"), load_tokenizer("minilm-l6")
        budget = BUDGETS[args.budget]
        train, evals = load_task_data(
            task,
            tokenizer,
            args.data_dir,
            MAX_LENGTH,
            budget["max_train_samples"],
            budget["max_eval_samples"],
        )
        return cls(args, task, tokenizer, train, evals)

    def pretrained(self) -> CompactBertForSequenceClassification:
        """MiniLM-L6 with its new classifier initialised from the run's seed, as ``nlpcompress run`` does."""
        set_seed(self.args.seed)
        return load_compact("minilm-l6", self.task)

    def baseline(self, folder: str | None) -> tuple[Model, dict[str, float]]:
        """The fine-tuned model every arm starts from (``folder``, else fine-tuned here) and its metrics."""
        if folder:
            model = load_model_dir(folder)
        else:
            [tuned], _ = self.run([{"type": "finetune"}], self.pretrained())
            model = tuned.model
        model.eval()
        recipe = self.recipe([{"type": "finetune", "name": "teacher"}])
        return model, evaluate(model, self.context(recipe, recipe.stages[0]))

    def facts(self) -> dict[str, Any]:
        """The settings every result file records."""
        return {
            "task": "sst2",
            "model": "minilm-l6",
            "budget": self.args.budget,
            **BUDGETS[self.args.budget],
            "batch_size": BATCH_SIZE,
            "max_length": MAX_LENGTH,
            "seed": self.args.seed,
        }

    def write_results(self, result: dict[str, Any]) -> None:
        """Write ``result`` as JSON to ``--output``."""
        self.args.output.parent.mkdir(parents=True, exist_ok=True)
        self.args.output.write_text(json.dumps(portable(result), indent=2) + "\n")
        print(f"wrote {self.args.output}")

    def recipe(
        self, stages: list[dict[str, Any]], learning_rate: float = 1e-4, epochs: float = 1.0
    ) -> Recipe:
        return recipe_from_dict(
            {
                "model": "minilm-l6",
                "task": "sst2",
                "data_dir": self.args.data_dir,
                **BUDGETS[self.args.budget],
                "max_length": MAX_LENGTH,
                "seed": self.args.seed,
                "output_dir": str(self.args.work_dir),
                "training": {
                    "learning_rate": learning_rate,
                    "per_device_train_batch_size": BATCH_SIZE,
                    "per_device_eval_batch_size": 64,
                    "num_train_epochs": epochs,
                    "warmup_steps": 25,
                    "weight_decay": 0.01,
                    "logging_steps": 50,
                },
                "stages": stages,
            },
            "benchmark",
        )

    def context(
        self, recipe: Recipe, stage: Stage, train: Dataset | None = None, teacher: Model | None = None
    ) -> StageContext:
        """A stage context writing under the work folder; ``train`` replaces the training rows."""
        data = RunData(self.task, self.tokenizer, self.train if train is None else train, self.evals)
        return stage_context(recipe, stage, data, self.args.work_dir, teacher, progress=False)

    def run(
        self,
        stages: list[dict[str, Any]],
        model: CompactBertForSequenceClassification,
        learning_rate: float = 1e-4,
        epochs: float = 1.0,
        train: Dataset | None = None,
        teacher: Model | None = None,
    ) -> tuple[list[StageOutput], float]:
        """Run ``stages`` in order from ``model`` as a recipe would (each seeded alike, distilling stages from
        ``teacher`` until a stage provides one); outputs and wall time."""
        recipe = self.recipe(stages, learning_rate, epochs)

        def context(stage: Stage, run_teacher: Model | None) -> StageContext:
            set_seed(self.args.seed)
            ctx = self.context(recipe, stage, train, run_teacher)
            shutil.rmtree(ctx.work_dir, ignore_errors=True)  # a checkpoint of an earlier run must not resume
            return ctx

        started = time.perf_counter()
        outputs = [output for _, output, _, _ in run_stages(recipe.stages, model, context, teacher)]
        return outputs, time.perf_counter() - started


class Results:
    """The JSON file, rewritten after every row so an interrupted benchmark keeps what it finished."""

    def __init__(self, path: Path, facts: dict[str, Any]):
        self.path = path
        self.data = json.loads(path.read_text()) if path.exists() else {}
        self.data.update(facts)
        self.data.setdefault("runs", {})

    def has(self, name: str) -> bool:
        return name in self.data["runs"]

    def put(self, key: str, value: Any, run: bool = False) -> None:
        if run:
            self.data["runs"][key] = value
        else:
            self.data[key] = value
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(portable(self.data), indent=1) + "\n")
