"""Map a package's internal imports: modules, import floors, loops and the largest pieces.

Run ``python tools/import_map.py [src/sqlkv]`` to print the figures issue 23 asks for:
the number of modules, the number of import floors (the longest chain of imports between
the package's own modules, loops collapsed to one node), the import loops (strongly
connected groups of modules), and the largest module, class and function by line count.
Imports inside functions count like top-level ones (they are still dependencies), and so do
imports under ``if TYPE_CHECKING:`` (they are dependencies of the types, and import-linter
counts them too); the figures are also printed without the latter ("at run time").
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass
class ImportMap:
    """The package's modules and, for each, the package modules it imports."""

    package: str
    modules: dict[str, Path]
    imports: dict[str, set[str]]


def _module_name(package: str, root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([package, *parts])


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(tree: ast.AST, type_checking: bool) -> list[ast.Import | ast.ImportFrom]:
    found: list[ast.Import | ast.ImportFrom] = []
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if not type_checking and isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        stack.extend(ast.iter_child_nodes(node))
    return found


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The longest package module that ``name`` (a module or a name in one) refers to."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def build(root: Path, type_checking: bool = True) -> ImportMap:
    """Parse every module under ``root`` (a package directory) and collect its imports.

    With ``type_checking`` false, imports under ``if TYPE_CHECKING:`` are left out.
    """
    package = root.name
    modules = {_module_name(package, root, p): p for p in sorted(root.rglob("*.py"))}
    imports: dict[str, set[str]] = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        base = name if is_package else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in _import_nodes(ast.parse(path.read_text(), str(path)), type_checking):
            if isinstance(node, ast.Import):
                candidates = [alias.name for alias in node.names]
            else:
                if node.level:
                    anchor = base.split(".")
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    prefix = ".".join(anchor + ([node.module] if node.module else []))
                else:
                    prefix = node.module or ""
                candidates = [f"{prefix}.{alias.name}" for alias in node.names]
            for candidate in candidates:
                target = _resolve(candidate, modules)
                if target is not None and target != name:
                    targets.add(target)
        imports[name] = targets
    return ImportMap(package, modules, imports)


def loops(imap: ImportMap) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    groups: list[list[str]] = []
    counter = 0
    for start in imap.modules:
        if start in index:
            continue
        work = [(start, iter(sorted(imap.imports[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(imap.imports[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    groups.append(sorted(group))
    return groups


def floors(imap: ImportMap) -> dict[str, int]:
    """Each module's floor: 1 + the highest floor it imports (loops count as one floor)."""
    group_of = {m: m for m in imap.modules}
    for group in loops(imap):
        for member in group:
            group_of[member] = group[0]
    edges: dict[str, set[str]] = {g: set() for g in group_of.values()}
    for module, targets in imap.imports.items():
        for target in targets:
            if group_of[target] != group_of[module]:
                edges[group_of[module]].add(group_of[target])
    level: dict[str, int] = {}

    def visit(group: str) -> int:
        pending = [group]
        while pending:
            node = pending[-1]
            todo = [t for t in edges[node] if t not in level]
            if todo:
                pending.extend(todo)
                continue
            pending.pop()
            level[node] = 1 + max((level[t] for t in edges[node]), default=0)
        return level[group]

    return {m: visit(group_of[m]) for m in imap.modules}


def largest(imap: ImportMap) -> dict[str, tuple[str, int]]:
    """The largest module, class and function (by lines, as ``module:name``)."""
    best = {"module": ("", 0), "class": ("", 0), "function": ("", 0)}
    for name, path in imap.modules.items():
        text = path.read_text()
        lines = len(text.splitlines())
        if lines > best["module"][1]:
            best["module"] = (name, lines)
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef):
                kind = "class"
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                kind = "function"
            else:
                continue
            size = (node.end_lineno or node.lineno) - node.lineno + 1
            if size > best[kind][1]:
                best[kind] = (f"{name}:{node.name}", size)
    return best


def report(root: Path) -> str:
    """The figures as text, one per line."""
    imap = build(root)
    found = loops(imap)
    run_time = build(root, type_checking=False)
    lines = [
        f"modules: {len(imap.modules)}",
        f"floors: {max(floors(imap).values(), default=0)}"
        f" (at run time: {max(floors(run_time).values(), default=0)})",
        f"loops: {len(found)} (at run time: {len(loops(run_time))})",
    ]
    lines += [f"  loop: {' '.join(group)}" for group in found]
    for kind, (name, size) in largest(imap).items():
        lines.append(f"largest {kind}: {name} ({size} lines)")
    return "\n".join(lines)


if __name__ == "__main__":
    print(report(Path(sys.argv[1] if len(sys.argv) > 1 else "src/sqlkv")))
