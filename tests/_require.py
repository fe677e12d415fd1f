"""What a test needs from the machine: in CI (``CI=true``) a missing piece fails the run, locally the skip
names the one command that enables the test. No test skips quietly."""

import importlib
import os
from types import ModuleType
from typing import NoReturn

import pytest

SETUP = "make setup (installs the dev, offline, plots, onnx and search extras)"


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def missing(what: str, enable: str = SETUP) -> NoReturn:
    """Fail in CI, skip elsewhere; usable inside a test or at module level."""
    if in_ci():
        pytest.fail(f"{what} is missing in CI; {enable}", pytrace=False)
    pytest.skip(f"{what} is missing; enable with: {enable}", allow_module_level=True)


def require_module(name: str, enable: str = SETUP) -> ModuleType:
    """``import name``, or :func:`missing`."""
    try:
        return importlib.import_module(name)
    except ImportError:
        missing(f"the package {name!r}", enable)
