"""The examples are written as research code is, and checked through short factories.

Issue 10's proof asks for at least 12 example implementations that draw their own times and noise,
each checked through a factory of at most 25 lines with no monkeypatching, each with a wrong
variant. These tests read the example files themselves (their syntax trees), so a factory that
grows, an example that patches a library, or one without a wrong variant fails here.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from flowmap_oracle.oracle import Implementation

EXAMPLES = sorted(p for p in (Path(__file__).parent.parent / "examples").glob("*.py"))
FACTORY_LINES = 25
"""The most lines a factory (``implementation`` and its wrong variants) may take."""

PATCHING = ("monkeypatch", "mock.patch", "unittest.mock", "setattr(torch", "setattr(jax")
"""Text that would mean an example patches a library instead of handing its code over."""


def _factories(path: Path) -> dict[str, ast.FunctionDef]:
    tree = ast.parse(path.read_text())
    return {
        n.name: n
        for n in tree.body
        if isinstance(n, ast.FunctionDef) and n.name.endswith("implementation")
    }


def _as_shipped(path: Path) -> bool:
    """Whether the example's ``implementation()`` hands over a loss as it ships."""
    impl = importlib.import_module(f"examples.{path.stem}").implementation()
    return bool(impl.shipped_losses)


@pytest.mark.parametrize(
    "path", [p for p in EXAMPLES if p.stem != "__init__"], ids=lambda p: p.stem
)
def test_each_example_is_a_short_factory_without_patching(path):
    factories = _factories(path)
    assert "implementation" in factories, f"{path.name} has no implementation() factory"
    for name, node in factories.items():
        lines = node.end_lineno - node.lineno + 1
        assert lines <= FACTORY_LINES, f"{path.name}: {name}() is {lines} lines"
    text = path.read_text()
    assert not [p for p in PATCHING if p in text], f"{path.name} patches a library"
    impl = importlib.import_module(f"examples.{path.stem}").implementation()
    assert isinstance(impl, Implementation)


def test_at_least_twelve_examples_ship_their_own_loss_each_with_a_wrong_variant():
    shipped = [p for p in EXAMPLES if p.stem != "__init__" and _as_shipped(p)]
    assert len(shipped) >= 12, [p.stem for p in shipped]
    for path in shipped:
        wrong = [n for n in _factories(path) if n != "implementation"]
        assert wrong, f"{path.name} has no wrong variant"


def test_the_checks_of_this_file_reject_a_long_factory_and_a_patch(tmp_path):
    long_body = "\n".join(f"    x{i} = {i}" for i in range(FACTORY_LINES))
    bad = tmp_path / "bad.py"
    bad.write_text(f"import unittest.mock\n\ndef implementation():\n{long_body}\n    return x0\n")
    node = _factories(bad)["implementation"]
    assert node.end_lineno - node.lineno + 1 > FACTORY_LINES
    assert [p for p in PATCHING if p in bad.read_text()]
