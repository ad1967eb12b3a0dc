"""The package's import structure: every module imports on its own, the teacher model pulls in no stage,
and no module imports itself back through others (checked statically, function-level imports included)."""

import ast
import importlib
import importlib.util
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGES = ("choral.cli", "choral.pipeline", "choral.kernels")
# what the teacher model must not drag in: the stages and the propagation machinery
NOT_FROM_THE_MODEL = ("choral.pipeline.propagate", "choral.pipeline.decode", "choral.pipeline.propagate.labels",
                      "choral.pipeline.graph", "choral.kernels.propagation")
# Imported once before forking, so each child skips their cost (about 2 s of torch each); only speed depends on
# this list: a child imports whatever else it needs itself.
THIRD_PARTY = ("numpy", "scipy.sparse", "torch", "lhotse", "h5py", "soundfile", "yaml", "jiwer", "typer", "rich")
# A fresh interpreter imports the third-party libraries, checks that no choral module is loaded, then forks one
# child per module: each child starts with no choral module, as a fresh interpreter would, and reports what
# importing its module loaded (or the traceback).
_IMPORT_EACH = r"""
import importlib, json, os, sys, traceback
names, preload = json.loads(sys.argv[1]), json.loads(sys.argv[2])
for library in preload:
    importlib.import_module(library)
assert not [m for m in sys.modules if m.startswith("choral.")], "a library imported choral"
results = {}
for name in names:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            importlib.import_module(name)
            out = {"ok": True, "loaded": sorted(m for m in sys.modules if m.startswith("choral."))}
        except BaseException:
            out = {"ok": False, "error": traceback.format_exc()}
        with os.fdopen(write, "w") as handle:
            json.dump(out, handle)
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as handle:
        data = handle.read()
    os.waitpid(pid, 0)
    results[name] = json.loads(data) if data else {"ok": False, "error": "the child died"}
print(json.dumps(results))
"""


def all_modules() -> list[str]:
    """Every module of the three packages, subpackages and their ``__init__`` included."""
    names = []
    for package in PACKAGES:
        names.append(package)
        path = importlib.import_module(package).__path__
        names += [info.name for info in pkgutil.walk_packages(path, package + ".")]
    return sorted(names)


@pytest.fixture(scope="module")
def imported_alone() -> dict[str, dict]:
    """Each module imported with no choral module loaded before: ``{"ok", "loaded"}`` or ``{"ok", "error"}``."""
    result = subprocess.run([sys.executable, "-c", _IMPORT_EACH, json.dumps(all_modules()), json.dumps(THIRD_PARTY)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_every_module_imports_on_its_own(imported_alone: dict[str, dict]) -> None:
    assert "choral.pipeline.teacher.model" in imported_alone and "choral.cli.app" in imported_alone
    failed = {name: report["error"] for name, report in imported_alone.items() if not report["ok"]}
    assert not failed, "\n".join(f"{name}:\n{error}" for name, error in failed.items())


def test_the_teacher_model_loads_no_stage(imported_alone: dict[str, dict]) -> None:
    loaded = set(imported_alone["choral.pipeline.teacher.model"]["loaded"])
    assert "choral.pipeline.teacher.model" in loaded
    assert not loaded & set(NOT_FROM_THE_MODEL), sorted(loaded & set(NOT_FROM_THE_MODEL))
    # and in a really fresh interpreter, as `python -c "import choral.pipeline.teacher.model"` is
    fresh = subprocess.run([sys.executable, "-c", "import sys, choral.pipeline.teacher.model; "
                            "print('choral.pipeline.propagate' in sys.modules)"],
                           capture_output=True, text=True, timeout=300)
    assert fresh.returncode == 0 and fresh.stdout.strip() == "False", fresh.stderr


# --- static import graph ------------------------------------------------------------------------------------------
def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _runtime_imports(tree: ast.AST):
    """Import statements anywhere in the module (functions included), except under ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
        else:
            stack.extend(ast.iter_child_nodes(node))


def _known_prefix(dotted: str, known: set[str]) -> str | None:
    """The longest prefix of ``dotted`` that is one of ``known`` (a name imported from a module is that module)."""
    parts = dotted.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in known:
            return ".".join(parts[:end])
    return None


def module_imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The modules of ``known`` that module ``name`` (source ``path``) imports, relative imports resolved.

    ``from . import x`` is an edge to the submodule ``x`` when there is one, else to
    the package (its ``__init__``); a package's ``__init__`` is a module like any other.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str | None] = set()
    for node in _runtime_imports(tree):
        if isinstance(node, ast.Import):
            found.update(_known_prefix(alias.name, known) for alias in node.names)
            continue
        if node.level:
            parts = package.split(".")
            base = ".".join(parts[: len(parts) - node.level + 1])
            source = f"{base}.{node.module}" if node.module else base
        else:
            source = node.module or ""
        for alias in node.names:
            submodule = f"{source}.{alias.name}"
            found.add(submodule if submodule in known else _known_prefix(source, known))
    found.discard(None)
    return found  # type: ignore[return-value]


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (``a -> b -> ... -> a``) per strongly connected component that has one (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph.get(node, ()):
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)

    cycles = []
    for component in components:
        members, start = set(component), component[0]
        previous: dict[str, str] = {}
        frontier = [start]
        while frontier and start not in previous:  # breadth first, back to the start
            following = []
            for node in frontier:
                for target in sorted(graph[node] & members):
                    if target not in previous:
                        previous[target] = node
                        following.append(target)
            frontier = following
        path = [start]
        while len(path) == 1 or path[-1] != start:
            path.append(previous[path[-1]])
        cycles.append(path[::-1])
    return cycles


def import_graph() -> dict[str, set[str]]:
    names = all_modules()
    known = set(names)
    origins = {name: Path(importlib.util.find_spec(name).origin) for name in names}
    return {name: module_imports(name, origin, known) if origin.suffix == ".py" else set()  # compiled: no imports
            for name, origin in origins.items()}


def test_no_import_cycle() -> None:
    graph = import_graph()
    assert "choral.pipeline.teacher.contracts" in graph["choral.pipeline.propagate.engine"]
    cycles = find_cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(cycle) for cycle in cycles)


def test_the_checker_sees_relative_and_function_level_imports(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    files = {
        "pkg": ("__init__.py", "from . import a\n"),
        "pkg.a": ("a.py", "from .b import helper\n"),
        "pkg.b": ("b.py", "def helper():\n    from . import c\n"),
        "pkg.c": ("c.py", "import pkg.a.thing\nfrom typing import TYPE_CHECKING\n"
                          "if TYPE_CHECKING:\n    from . import d\n"),
        "pkg.d": ("d.py", ""),
    }
    for file, text in files.values():
        (tmp_path / "pkg" / file).write_text(text)
    known = set(files)
    graph = {name: module_imports(name, tmp_path / "pkg" / file, known) for name, (file, _) in files.items()}
    assert graph == {"pkg": {"pkg.a"}, "pkg.a": {"pkg.b"}, "pkg.b": {"pkg.c"}, "pkg.c": {"pkg.a"}, "pkg.d": set()}
    assert find_cycles(graph) == [["pkg.a", "pkg.b", "pkg.c", "pkg.a"]]
    assert find_cycles({"x": {"x"}}) == [["x", "x"]]
