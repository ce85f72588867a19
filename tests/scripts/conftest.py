"""Shared by the script tests: a script of scripts/ loaded as a module."""

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def load_script(name: str):
    """scripts/<name>.py as module ``deepleak_<name>``; scripts/ goes on sys.path first, since
    some import label_figures beside them."""
    if str(SCRIPTS) not in sys.path:
        sys.path.insert(0, str(SCRIPTS))
    spec = importlib.util.spec_from_file_location(f"deepleak_{name}", SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench():
    return load_script("bench")


@pytest.fixture(scope="module")
def gradient_scale():
    return load_script("gradient_scale")


@pytest.fixture(scope="module")
def adaptive_fit():
    return load_script("adaptive_fit")
