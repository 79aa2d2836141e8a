"""The package's import graph: no cycles (counting imports inside functions), bench a leaf, no import side effects."""

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in (SRC / "normlab").rglob("*.py")}


def imports(name: str) -> set[str]:
    """Every normlab module ``name`` imports, at module level or in any function: ``from P import x`` counts as
    importing P.x when that is a module, else P."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package.split(".")[:len(package.split(".")) - node.level + 1], *filter(None, [base])])
            found |= {f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names}
    return {m for m in found if m in MODULES and m != name}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each a cycle or several."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while (w := stack.pop()) != v:
                on_stack.discard(w)
                component.append(w)
            on_stack.discard(v)
            if component:
                found.append(sorted([v, *component]))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_walker_sees_imports_inside_functions_and_finds_a_cycle():
    assert "normlab.cli" in {m for m in MODULES if "normlab.bench.command" in imports(m)}  # inside build_parser
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    assert cycles({name: imports(name) for name in MODULES}) == []


def test_bench_is_a_leaf_only_the_cli_imports():
    outside = {name for name in MODULES if not name.startswith("normlab.bench")}
    assert {name for name in outside if any(m.startswith("normlab.bench") for m in imports(name))} == {"normlab.cli"}


def test_importing_every_module_changes_no_setting():
    """XLA_FLAGS and JAX's compile cache are set by ``runtime.configure()`` at the entry points, never on import."""
    code = ("import importlib, json, os, sys\n"
            f"for name in {sorted(m for m in MODULES if not m.endswith('__main__'))!r}:\n"
            "    importlib.import_module(name)\n"
            "import jax\n"
            "print(json.dumps([os.environ.get('XLA_FLAGS'), jax.config.jax_compilation_cache_dir]))")
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert json.loads(out.splitlines()[-1]) == [None, None]
