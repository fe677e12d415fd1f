"""Stage contracts: the model states a stage takes, and what the runner does first to bring a model there.

A model's state (``structure.model_state``) is a set of ``STATES``. Each stage class declares the states
it ``accepts``, the normalisations it ``prepares`` (run on the model before the stage, in order) and
the states it may leave (``produces``; a stage instance may narrow it from its settings). The runner
checks a recipe's whole sequence before anything trains (``check_order``) and the real model before
each stage (``prepare``), with one message that names the stage, the state and what would make it
acceptable. No stage guards against another (modelopt's per-mode compatibility is the anchor).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from nlpcompress.errors import UserError
from nlpcompress.finalize import densify
from nlpcompress.parametrize import bake
from nlpcompress.stages.registry import STAGES, Model, Stage
from nlpcompress.structure import STATES, model_state
from nlpcompress.surgery import remove_dead_units

# name -> (the edit, the state it clears, the state it may leave instead)
NORMALISATIONS: dict[str, tuple[Callable[[Model], object], str | None, str | None]] = {
    "densify": (densify, "sparse-stored", "transforms"),  # stored sparse -> dense with fixed masks
    "bake": (bake, "transforms", None),  # masks, gates and fake quantizers -> plain weights
    "remove_dead_units": (remove_dead_units, None, None),  # heads and neurons with constant output go
}


def after_preparing(stage: Stage, state: frozenset[str]) -> frozenset[str]:
    """The state ``stage``'s normalisations leave of ``state``."""
    state = set(state)
    for name in stage.prepares:
        _, clears, leaves = NORMALISATIONS[name]
        if clears in state:
            state.discard(clears)
            if leaves:
                state.add(leaves)
    return frozenset(state)


def _refused(stage: Stage, state: frozenset[str]) -> list[str]:
    return sorted(after_preparing(stage, state) - stage.accepts)


def _advice(stage: Stage, refused: str, made_by: Stage | None) -> str:
    takers = [name for name, kind in STAGES.items() if refused in kind.accepts or refused in _cleared(kind)]
    where = (
        f"put {stage.type} before {made_by.type} {made_by.name or made_by.type!r}, which makes it {refused}"
        if made_by is not None
        else f"start from a model that is not {refused}"
    )
    return f"{where}" + (f" (stages that take a {refused} model: {', '.join(takers)})" if takers else "")


def _cleared(kind: type[Stage]) -> set[str]:
    return {NORMALISATIONS[name][1] for name in kind.prepares} - {None}


def check_order(stages: Sequence[Stage], state: frozenset[str] = frozenset()) -> None:
    """Refuse, before anything trains, a sequence in which a stage would get a model state it cannot take."""
    made_by: dict[str, Stage] = {}
    for stage in stages:
        refused = _refused(stage, state)
        if refused:
            raise UserError(_message(stage, refused[0], made_by.get(refused[0])))
        state = after_preparing(stage, state) | stage.produces()
        made_by |= dict.fromkeys(stage.produces() - made_by.keys(), stage)


def prepare(stage: Stage, model: Model) -> list[str]:
    """Run ``stage``'s normalisations on ``model`` (where they apply), then refuse a state it cannot take;
    returns the normalisations that changed something."""
    done = []
    for name in stage.prepares:
        edit, clears, _ = NORMALISATIONS[name]
        if clears is None or clears in model_state(model):
            result = edit(model)
            if result:
                done.append(name)
    refused = sorted(model_state(model) - stage.accepts)
    if refused:
        raise UserError(_message(stage, refused[0], None))
    return done


def _message(stage: Stage, refused: str, made_by: Stage | None) -> str:
    return (
        f"stage {stage.name or stage.type!r} ({stage.type}) cannot take a model that is {refused} "
        f"({STATES[refused]}): {_advice(stage, refused, made_by)}"
    )


def contract_table() -> list[str]:
    """The Markdown table of every registered stage's contract (docs/reference.md shows it)."""
    lines = [
        "| stage | takes a model that is | first | leaves it |",
        "|---|---|---|---|",
    ]
    for name, kind in sorted(STAGES.items()):
        takes = ", ".join(sorted(kind.accepts)) or "plain (dense, unshared)"
        if kind.accepts == frozenset(STATES):
            takes = "anything"
        lines.append(
            f"| {name} | {takes} | {', '.join(kind.prepares) or '—'} | "
            f"{', '.join(sorted(kind.produces_states)) or 'as it was'} |"
        )
    return lines


if __name__ == "__main__":  # the reference's table: python -m nlpcompress.stages.contracts
    import nlpcompress.stages.builtin  # noqa: F401  (registers the built-in stages)

    print("\n".join(contract_table()))
