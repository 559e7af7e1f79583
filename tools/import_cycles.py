"""Fail on any import cycle between interlock's modules (`make lint` runs it; issue 18 part 9).

    .venv/bin/python tools/import_cycles.py

import-linter's contracts (.importlinter) check the layers between packages; this checks what they
cannot: no two modules anywhere in the package import each other, directly or round a longer loop,
even inside one package and even through a function-level import (grimp reads those too: hiding a
cycle in a function is still a cycle). Imports under `if TYPE_CHECKING:` are left out: they never
run, and two value types that name each other in annotations (`core.call.Call` and
`core.views.ResponseView`) need them.

Prints each cycle as the chain of imports that closes it, with line numbers, and exits 1.
`KNOWN` lists the imports that close the cycles still being taken apart, each with its reason; an
entry that closes no cycle any more is reported, so the list only shrinks.
"""

from __future__ import annotations

import sys

import grimp

#: (importer, imported), by the modules' last name (they survive a package move): the function-level
#: imports that close a cycle not yet broken. Each goes with the move that breaks it.
KNOWN: dict[tuple[str, str], str] = {}


def tail(module: str) -> str:
    return module.rpartition(".")[2]


def cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            module, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child)))))
                elif child in on_stack:
                    low[module] = min(low[module], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[module])
            if low[module] == index[module]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == module:
                        break
                if len(group) > 1:
                    found.append(sorted(group))
    return found


def describe(graph: grimp.ImportGraph, group: list[str]) -> list[str]:
    """One loop through the group, as `importer:line imports imported` lines (every module on a
    shortest chain from the first member to one that imports it back is in the group)."""
    start = group[0]
    loops = [
        (*chain, start)
        for importer in group
        if start in graph.find_modules_directly_imported_by(importer)
        and (chain := graph.find_shortest_chain(importer=start, imported=importer)) is not None
    ]
    path = min(loops, key=len)
    lines = []
    for importer, imported in zip(path, path[1:], strict=False):
        details = graph.get_import_details(importer=importer, imported=imported)
        where = ", ".join(str(d["line_number"]) for d in details)
        lines.append(f"  {importer}:{where} imports {imported}")
    return lines


def main() -> int:
    graph = grimp.build_graph("interlock", exclude_type_checking_imports=True, cache_dir=None)
    known = {
        (importer, imported)
        for importer in graph.modules
        for imported in graph.find_modules_directly_imported_by(importer)
        if (tail(importer), tail(imported)) in KNOWN
    }
    closing = {pair for group in cycles(graph) for pair in known if pair[0] in group and pair[1] in group}
    for importer, imported in known:
        graph.remove_import(importer=importer, imported=imported)
    for pair in sorted(set(KNOWN) - {(tail(a), tail(b)) for a, b in closing}):
        print(f"KNOWN {pair[0]} -> {pair[1]} closes no cycle any more: remove it from tools/import_cycles.py")
    found = cycles(graph)
    for group in found:
        print(f"import cycle among {len(group)} modules: {', '.join(group)}")
        print("\n".join(describe(graph, group)))
    if found:
        print(f"{len(found)} import cycle(s) in interlock: break each (move the shared piece down a layer).")
        return 1
    print(f"no import cycle among interlock's {len(graph.modules)} modules ({len(closing)} known, in KNOWN)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
