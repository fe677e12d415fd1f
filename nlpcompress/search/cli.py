"""`nlpcompress search SPACE.yaml`: run (or resume) a recipe search, or report on one from its storage."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from nlpcompress.errors import UserError


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``search`` command to ``subparsers`` (the ``add_subparsers()`` of the main parser)."""
    search = subparsers.add_parser(
        "search", help="search recipes with Optuna: several objectives, pruning, resumable, Pareto report"
    )
    search.add_argument(
        "space", help="a search space: a recipe YAML with distributions and a search: section"
    )
    count = search.add_mutually_exclusive_group()
    count.add_argument("--trials", type=int, help="trials to run now, added to the study's (default 10)")
    count.add_argument(
        "--until",
        type=int,
        metavar="N",
        help="run trials until the study has N finished ones (trials lost to a killed worker are not "
        "counted): the same command after a kill finishes the study",
    )
    search.add_argument("--timeout", type=float, metavar="S", help="start no trial after S seconds")
    search.add_argument(
        "--output-dir", help="the search folder: trials/, study.db, report (default: the space's output_dir)"
    )
    search.add_argument(
        "--set",
        action="append",
        metavar="KEY.PATH=VALUE",
        help="override a value of the space (a distribution too)",
    )
    search.add_argument(
        "--storage", metavar="URL", help="an Optuna database URL (default: sqlite:///<output-dir>/study.db)"
    )
    search.add_argument("--study", metavar="NAME", help="the study's name (default: the space file's name)")
    search.add_argument("--report", action="store_true", help="report on the stored study; run no trial")
    search.add_argument(
        "--keep-all", action="store_true", help="keep every trial's folder, not only the front's"
    )
    search.set_defaults(func=run_search)
    return search


def run_search(args: argparse.Namespace) -> None:
    """Run ``args.trials`` trials of the space's study (created or resumed), then print the report."""
    try:
        import optuna
    except ImportError:
        raise UserError("nlpcompress search needs optuna: pip install 'nlpcompress[search]'") from None

    from nlpcompress.search.objectives import objectives_from_settings
    from nlpcompress.search.pruning import pruning_note
    from nlpcompress.search.report import report
    from nlpcompress.search.space import load_space
    from nlpcompress.search.study import (
        counted_trials,
        default_storage,
        load_study,
        open_study,
        run_trials,
    )

    for option in ("trials", "until"):
        value = getattr(args, option)
        if value is not None and value < 1:
            raise UserError(f"--{option} must be a positive integer (got {value})")
    if args.timeout is not None and not args.timeout > 0:
        raise UserError(f"--timeout must be a positive number of seconds (got {args.timeout})")
    overrides = list(args.set or [])
    if args.output_dir:
        overrides.append(f"output_dir={args.output_dir}")
    space = load_space(args.space, overrides)
    objectives = objectives_from_settings(space.settings, space.template.get("task"), args.space)
    output_dir = space.output_dir.resolve()
    storage = args.storage or default_storage(output_dir)
    name = args.study or Path(args.space).stem
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # the progress lines say what happened
    if args.report:
        study = load_study(storage, name, objectives)
    else:
        output_dir.mkdir(parents=True, exist_ok=True)
        study = open_study(storage, name, objectives, space.settings)
        done = counted_trials(study)
        trials = (args.trials or 10) if args.until is None else max(args.until - done, 0)
        print(
            f"study {name} in {storage}: {objectives.describe()}; {done} trials so far, "
            f"{trials} more now" + (f" (until {args.until})" if args.until is not None else "")
        )
        note = pruning_note(space, objectives)
        if note:
            print(note)
        if trials:
            run_trials(
                study,
                space,
                objectives,
                output_dir,
                trials,
                args.timeout,
                args.keep_all,
                until=args.until,
            )
    print(report(study, objectives, output_dir))
    if not any(trial.state == optuna.trial.TrialState.COMPLETE for trial in study.trials):
        raise UserError(
            f"no trial of study {name} completed ({len(study.trials)} tried): each trial's error is above"
        )
