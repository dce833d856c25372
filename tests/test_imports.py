"""The package's import graph has no circles, between modules or between
subpackages, counting imports inside functions too (docs/DESIGN.md: one home
per concern; a lazy import that closes a circle is still a circle)."""

from __future__ import annotations

import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "dagan_jax"


def _modules() -> dict[str, pathlib.Path]:
  out = {}
  for path in PACKAGE.rglob("*.py"):
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    if parts[-1] == "__init__":
      parts = parts[:-1]
    out[".".join(parts)] = path
  return out


def _imports(modules: dict[str, pathlib.Path]) -> dict[str, set[str]]:
  """{module: package modules it imports anywhere in its source}."""
  graph: dict[str, set[str]] = {m: set() for m in modules}
  for name, path in modules.items():
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
      if isinstance(node, ast.ImportFrom) and node.module:
        for alias in node.names:
          full = f"{node.module}.{alias.name}"
          target = full if full in modules else node.module
          if target in modules:
            graph[name].add(target)
      elif isinstance(node, ast.Import):
        graph[name].update(a.name for a in node.names if a.name in modules)
  return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
  """Strongly connected components with more than one node (Tarjan)."""
  index: dict[str, int] = {}
  low: dict[str, int] = {}
  stack: list[str] = []
  on_stack: set[str] = set()
  found: list[list[str]] = []

  def visit(v: str) -> None:
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for w in graph[v]:
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      component = []
      while True:
        w = stack.pop()
        on_stack.discard(w)
        component.append(w)
        if w == v:
          break
      if len(component) > 1:
        found.append(sorted(component))

  for v in sorted(graph):
    if v not in index:
      visit(v)
  return found


def _subpackage(module: str) -> str:
  return ".".join(module.split(".")[:2])


def test_no_circle_between_modules():
  assert _cycles(_imports(_modules())) == []


def test_no_circle_between_subpackages():
  graph: dict[str, set[str]] = {}
  for name, targets in _imports(_modules()).items():
    node = graph.setdefault(_subpackage(name), set())
    node.update(_subpackage(t) for t in targets if _subpackage(t) != _subpackage(name))
    for t in targets:
      graph.setdefault(_subpackage(t), set())
  assert _cycles(graph) == []


def test_the_checker_sees_a_circle():
  assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
