"""The package's floors: a module imports only from its own floor or the ones below, read from the source.

Floors, bottom to top: base → model → surgery/bake → techniques → stages → recipe/runtime → runner/card →
interfaces (CLI, search). The compact model imports nothing of ours but its own siblings (its files are
copied verbatim into saved folders for ``trust_remote_code``). A new module must be given a floor here.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "nlpcompress"

FLOORS: list[tuple[str, tuple[str, ...]]] = [
    (
        "base",
        (
            "errors",
            "file_digest",
            "schema",
            "distributed",
            "comparisons",
            "hub",
            "glue",
            "task_spec",
            "user_data",
            "task",
            "version",
            "vocab",
            "distillation_losses",
            "runtime.extras",
        ),
    ),
    ("model", ("compact", "parametrize", "measure", "snapshot", "runtime.verify")),
    ("surgery/bake", ("surgery", "finalize", "structure", "evaluation", "models")),
    (
        "techniques",
        (
            "pruning",
            "movement",
            "distill",
            "quant",
            "lowrank",
            "sharing",
            "albert",
            "nm",
            "loss_terms",
            "trainer",
        ),
    ),
    ("stages", ("stages",)),
    ("recipe/runtime", ("recipe", "recipe_reference", "runtime", "context", "exporters", "predict")),
    ("runner/card", ("runner", "card", "run_folder")),
    # the package root re-exports the predictor (nlpcompress.load), the users' entry point
    ("interfaces", ("", "cli", "search", "__main__")),
]
# The compact model's files that ship inside saved folders (nlpcompress.compact.convert is a converter, not shipped).
SELF_CONTAINED = ("configuration_compact_bert", "modeling_compact_bert", "quantized", "storage", "nm_sparse")


def module_name(path: Path, root: Path) -> str:
    """``nlpcompress/stages/registry.py`` -> ``stages.registry``; the package root is ``""``."""
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def floor_of(module: str) -> int:
    """The floor of ``module`` (dotted, without ``nlpcompress``): its longest listed prefix."""
    best = (-1, -1)
    for level, (_, prefixes) in enumerate(FLOORS):
        for prefix in prefixes:
            if module == prefix or (prefix and module.startswith(prefix + ".")):
                best = max(best, (len(prefix), level))
            elif prefix == "" and module == "":
                best = max(best, (0, level))
    if best[1] < 0:
        raise LookupError(
            f"module nlpcompress.{module} has no floor: add it to FLOORS in {Path(__file__).name}"
        )
    return best[1]


def imported_modules(source: str, module: str, known: set[str]) -> list[tuple[int, str]]:
    """``(line, imported module)`` for every import of nlpcompress code in ``source`` (relative ones resolved;
    ``from nlpcompress import x`` counts as ``x`` when ``x`` is a module)."""
    found = []
    parts = module.split(".") if module else []
    package = parts if _is_package(module) else parts[:-1]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "nlpcompress"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                target = ".".join(["nlpcompress", *base, *([node.module] if node.module else [])])
            elif node.module and node.module.split(".")[0] == "nlpcompress":
                target = node.module
            else:
                continue
            relative = target.removeprefix("nlpcompress").removeprefix(".")
            names = [a.name for a in node.names]
            submodules = [
                f"{relative}.{n}".lstrip(".") for n in names if f"{relative}.{n}".lstrip(".") in known
            ]
            found += [(node.lineno, f"nlpcompress.{s}") for s in submodules] or [(node.lineno, target)]
    return [(line, name.removeprefix("nlpcompress").removeprefix(".")) for line, name in found]


def _is_package(module: str) -> bool:
    return (PACKAGE.joinpath(*module.split(".")) / "__init__.py").is_file() if module else True


def violations(sources: dict[str, tuple[str, str]]) -> list[str]:
    """One line per import that climbs: ``file:line: module (floor) imports module (floor)``.

    ``sources``: ``{module: (file shown in messages, source text)}``.
    """
    known = set(sources)
    found = []
    for module, (file, source) in sorted(sources.items()):
        level = floor_of(module)
        for line, target in imported_modules(source, module, known):
            if module.startswith("compact.") and module.split(".")[-1] in SELF_CONTAINED:
                if not target.startswith("compact."):
                    found.append(f"{file}:{line}: the shipped compact model imports nlpcompress.{target}")
                continue
            target_level = floor_of(target)
            if target_level > level:
                found.append(
                    f"{file}:{line}: nlpcompress.{module or '__init__'} ({FLOORS[level][0]}) imports "
                    f"nlpcompress.{target} ({FLOORS[target_level][0]}), a higher floor"
                )
    return found


def package_sources() -> dict[str, tuple[str, str]]:
    return {
        module_name(path, PACKAGE): (str(path.relative_to(PACKAGE.parent)), path.read_text())
        for path in sorted(PACKAGE.rglob("*.py"))
    }


def test_no_import_climbs_a_floor():
    assert violations(package_sources()) == []


def test_an_upward_import_is_named_with_its_file_and_line():
    sources = package_sources()
    file, source = sources["measure"]
    sources["measure"] = (file, source + "\nfrom nlpcompress.runner import run_recipe\n")
    line = source.count("\n") + 2
    assert violations(sources) == [
        f"{file}:{line}: nlpcompress.measure (model) imports nlpcompress.runner (runner/card), a higher floor"
    ]


def test_the_shipped_compact_model_imports_nothing_of_ours():
    sources = package_sources()
    file, source = sources["compact.storage"]
    sources["compact.storage"] = (file, "from nlpcompress.errors import UserError\n" + source)
    assert violations(sources) == [f"{file}:1: the shipped compact model imports nlpcompress.errors"]


def test_a_module_without_a_floor_is_refused():
    with pytest.raises(LookupError, match=r"nlpcompress\.newthing has no floor"):
        floor_of("newthing")
