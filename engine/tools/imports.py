"""The shape of the package: which folder imports which, and what breaks the house rules.

    python -m engine.tools.imports            # the folder graph, then rule findings; exit 1 if a rule is broken
    python -m engine.tools.imports --sizes    # also every module's line count

Rules checked: a module of at most 500 lines, a class of at most 300, a function of at most 60 (except the
ones listed in :data:`EARNED`, each with its reason), and imports that follow the layers in :data:`LAYERS`
(a folder may import only the folders listed for it; the core modules at the top level are open to all).
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections import defaultdict
from pathlib import Path

__all__ = ["EARNED", "LAYERS", "main"]

ROOT = Path(__file__).resolve().parents[1]
MAX_MODULE, MAX_CLASS, MAX_FUNCTION = 500, 300, 60

#: folder -> the folders it may import (besides the core: the top-level modules of ``engine``)
LAYERS: dict[str, set[str]] = {
    "spec": set(),
    "plan": {"spec"},
    "sources": {"plan", "spec"},
    "postgres": set(),
    "archive": {"postgres"},
    "reads": {"postgres", "archive"},
    "pipeline": {"sources", "plan", "spec", "postgres", "archive", "reads"},
    "jobs": {"sources", "spec", "postgres", "archive", "reads", "pipeline"},
    "tools": set(),
}
#: the top-level modules that are not core: they sit above every folder
TOP = {"cli", "demo", "__main__", "__init__"}

#: functions allowed past the limit, and why
EARNED: dict[str, str] = {}


def _folder(module: str) -> str:
    """``engine.sources.files.csv`` -> ``sources``; a top-level module -> its own name."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _modules() -> dict[str, Path]:
    found = {}
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        name = ".".join(rel.parts).removesuffix(".__init__")
        found[name] = path
    return found


def _imports(tree: ast.AST) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("engine"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("engine"):
            out.add(node.module)
    return out


def _sizes(name: str, tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            limit = MAX_CLASS if isinstance(node, ast.ClassDef) else MAX_FUNCTION
            what = f"{name}.{node.name}"
            if length > limit and what not in EARNED:
                kind = "class" if isinstance(node, ast.ClassDef) else "function"
                found.append(f"{kind} over {limit} lines: {what} ({length})")
    return found


def main(argv: list[str] | None = None) -> int:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--sizes", action="store_true", help="print every module's line count")
    opts = args.parse_args(argv)
    modules = _modules()
    graph: dict[str, set[str]] = defaultdict(set)
    findings: list[str] = []
    lines: dict[str, int] = {}
    for name, path in sorted(modules.items()):
        text = path.read_text()
        lines[name] = text.count("\n")
        if lines[name] > MAX_MODULE:
            findings.append(f"module over {MAX_MODULE} lines: {name} ({lines[name]})")
        tree = ast.parse(text)
        findings += _sizes(name, tree)
        here = _folder(name)
        for target in _imports(tree):
            there = _folder(target)
            if there == here or (there not in LAYERS and there not in TOP):
                continue  # its own folder, or a core module
            graph[here].add(there)
            if here in LAYERS and there not in LAYERS[here]:
                allowed = sorted(LAYERS[here]) or "core only"
                findings.append(f"layer: {name} imports {target} ({here} may import {allowed})")
    print("folder imports (core modules left out):")
    for folder in sorted(graph):
        print(f"  {folder:<10} -> {', '.join(sorted(graph[folder]))}")
    if opts.sizes:
        for name, n in sorted(lines.items(), key=lambda kv: kv[0]):
            print(f"{n:6} {name}")
    for finding in findings:
        print(finding)
    print(f"{len(modules)} modules, {sum(lines.values())} lines, {len(findings)} finding(s)")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
