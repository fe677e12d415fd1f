"""Nothing of ours unpickles: every ``torch.load`` passes ``weights_only=True``, and no pickle module is loaded
from (weights go through safetensors). Read from the source, so a new call fails here with its file and line."""

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
UNPICKLERS = {
    ("pickle", "load"),
    ("pickle", "loads"),
    ("dill", "load"),
    ("joblib", "load"),
    ("numpy", "load"),
}


def unpickling_calls(source: str) -> list[tuple[int, str]]:
    """``(line, call)`` for each ``torch.load`` without ``weights_only=True`` and each pickle-style loader."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        owner = node.func.value.id if isinstance(node.func.value, ast.Name) else ""
        name = f"{owner}.{node.func.attr}"
        if (owner, node.func.attr) == ("torch", "load"):
            safe = any(
                k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                for k in node.keywords
            )
            if not safe:
                found.append((node.lineno, name))
        elif (owner, node.func.attr) in UNPICKLERS:
            found.append((node.lineno, name))
    return found


def test_no_code_of_ours_unpickles():
    offenders = [
        f"{path.relative_to(REPO)}:{line}: {call}"
        for folder in ("nlpcompress", "benchmarks")
        for path in sorted((REPO / folder).rglob("*.py"))
        for line, call in unpickling_calls(path.read_text())
    ]
    assert offenders == [], (
        "unpickling calls (use safetensors, or torch.load(..., weights_only=True)):\n" + "\n".join(offenders)
    )


def test_the_check_catches_what_it_claims_to():
    source = "import torch, pickle\ntorch.load(p)\ntorch.load(p, weights_only=True)\npickle.loads(b)\ntorch.load(p, weights_only=False)\n"
    assert unpickling_calls(source) == [(2, "torch.load"), (4, "pickle.loads"), (5, "torch.load")]
