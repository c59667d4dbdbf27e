"""The structure figures of docs/structure.md: files and lines per top-level folder of facepipe/, and the functions
over 50 lines.

    python benchmarks/structure_figures.py [REPO]      # REPO defaults to this checkout
"""
from __future__ import annotations

import ast
import collections
import sys
from pathlib import Path


def main(repo: Path) -> None:
    root = repo / "facepipe"
    layers: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])
    long_functions, functions = [], 0
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        layer = rel.parts[0] if len(rel.parts) > 1 else "(top-level)"
        text = path.read_text(encoding="utf-8")
        layers[layer][0] += 1
        layers[layer][1] += len(text.splitlines())
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                functions += 1
                length = node.end_lineno - node.lineno + 1
                if length > 50:
                    long_functions.append((length, f"{rel}:{node.name}"))
    for layer, (files, lines) in sorted(layers.items()):
        print(f"{layer:14s} {files:4d} files {lines:6d} lines")
    print(f"total {sum(f for f, _ in layers.values())} files, {sum(n for _, n in layers.values())} lines")
    print(f"functions {functions}, over 50 lines: {len(long_functions)}")
    for length, name in sorted(long_functions, reverse=True):
        print(f"  {length:4d} {name}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1])
