#!/usr/bin/env python3
"""Import cycles between the modules of one Rust crate.

Usage: ``python3 scripts/lib/module_cycles.py <crate>/src [--edges]``

Prints every cycle and exits 1; prints nothing and exits 0 when there is none. ``--edges`` also
prints the module graph (each level's edges with one file:line witness each).

What a node is (the granularity)
--------------------------------
Each ``.rs`` file under ``src/`` is a module: ``src/lib.rs`` (or ``src/main.rs`` when the crate
has no ``lib.rs``) is the crate root, ``src/a.rs`` and ``src/a/mod.rs`` are ``a``, ``src/a/b.rs``
is ``a::b``. ``src/bin/`` and, beside a ``lib.rs``, ``src/main.rs`` are other crates and are
skipped. Inline modules (``mod tests { ... }``) belong to their file.

Cycles are looked for at every folder level separately, between **siblings**:

* at the crate root, between the top-level modules (``auth``, ``state``, ``routes`` ...): a
  reference from anywhere inside ``routes/`` to anywhere inside ``relay/`` is the edge
  ``routes -> relay``;
* inside each folder module, between its files and sub-folders: ``routes::chats::handlers``
  using ``routes::sessions`` is the edge ``chats -> sessions`` at level ``routes``.

A module and its own descendants are never an edge: a parent ``mod.rs`` declaring (and
re-exporting) its children, and children using ``super::`` items of their parent, are how a
folder module is built, not a cycle.

What a reference is
-------------------
Paths in code (comments and string literals are removed first, so doc links and SQL do not
count): ``crate::a::b``, ``self::a``, ``super::a`` (repeated ``super`` too), and a path whose
first segment is a child module of the current module (``chats::create`` in ``routes/mod.rs``),
in ``use`` trees (``use crate::x::{y, z::{self, w}}``) and in expressions alike. A path is
resolved to the deepest module it names; items after that are ignored.
"""

from __future__ import annotations

import re
import sys
from collections import defaultdict
from pathlib import Path

Module = tuple[str, ...]


def strip_comments_and_strings(text: str) -> str:
    """The text with comments, string and char literals blanked (newlines kept)."""
    out: list[str] = []
    i, n = 0, len(text)

    def blank(s: str) -> str:
        return "".join("\n" if c == "\n" else " " for c in s)

    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(blank(text[i:j]))
            i = j
        elif text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append(blank(text[i:j]))
            i = j
        elif m := re.match(r'b?r(#*)"', text[i:]) if c in "br" and (
            i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")
        ) else None:
            hashes = m.group(1)
            end = text.find('"' + hashes, i + m.end())
            end = n if end < 0 else end + 1 + len(hashes)
            out.append('""' + blank(text[i + 2 : end]))
            i = end
        elif c == '"' or (c == "b" and text.startswith('b"', i)):
            j = i + (2 if c == "b" else 1)
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append('""' + blank(text[i + 2 : j + 1]))
            i = j + 1
        elif c == "'":
            # A char literal ('a', '\n', '\u{1F600}') or a lifetime ('a): keep lifetimes.
            m = re.match(r"'(\\(u\{[0-9a-fA-F]+\}|x[0-9a-fA-F]{2}|.)|[^\\'])'", text[i:])
            if m:
                out.append(blank(m.group(0)))
                i += m.end()
            else:
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


TOKEN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|::|[{}();,*<>]|\n|.", re.S)


def tokens(text: str):
    """(token, line) pairs, whitespace dropped."""
    line = 1
    for m in TOKEN.finditer(text):
        t = m.group(0)
        if t == "\n":
            line += 1
        elif not t.isspace():
            yield t, line


def file_modules(src: Path) -> dict[Module, Path]:
    """Module path → file, for every file of the crate rooted at `src`."""
    has_lib = (src / "lib.rs").exists()
    mods: dict[Module, Path] = {}
    for f in sorted(src.rglob("*.rs")):
        rel = f.relative_to(src).with_suffix("")
        parts = rel.parts
        if parts[0] == "bin":
            continue
        if len(parts) == 1 and parts[0] in ("lib", "main"):
            if parts[0] == "main" and has_lib:
                continue
            mods[()] = f
            continue
        if parts[-1] == "mod":
            parts = parts[:-1]
        mods[tuple(parts)] = f
    return mods


def is_ident(t: str) -> bool:
    return bool(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", t))


def parse_use_tree(toks: list[str], i: int, prefix: list[str], out: list[list[str]]) -> int:
    """Parses one use tree at `toks[i]`, appending full paths to `out`; returns the next index."""
    path = list(prefix)
    while i < len(toks):
        t = toks[i]
        if t == "{":
            i += 1
            while i < len(toks) and toks[i] != "}":
                i = parse_use_tree(toks, i, path, out)
                if i < len(toks) and toks[i] == ",":
                    i += 1
            return i + 1
        if t == "*":
            out.append(path)
            return i + 1
        if is_ident(t):
            path.append(t)
            i += 1
            if i < len(toks) and toks[i] == "as":
                i += 2
            if i < len(toks) and toks[i] == "::":
                i += 1
                continue
            out.append(path)
            return i
        if t == "::":  # a leading `::` (an external crate)
            i += 1
            path.append("::")
            continue
        return i + 1
    out.append(path)
    return i


class Crate:
    def __init__(self, src: Path):
        self.src = src
        self.files = file_modules(src)
        self.known: set[Module] = set(self.files)
        # (source file module, target file module) -> first witness "file:line"
        self.refs: dict[tuple[Module, Module], str] = {}
        texts = {m: strip_comments_and_strings(f.read_text(encoding="utf-8")) for m, f in self.files.items()}
        for m, text in texts.items():
            self.find_inline_modules(m, text)
        for m, text in texts.items():
            self.collect(m, text)

    def find_inline_modules(self, module: Module, text: str) -> None:
        stack: list[tuple[str, int]] = []
        depth = 0
        toks = [t for t, _ in tokens(text)]
        for k, t in enumerate(toks):
            if t == "mod" and k + 2 < len(toks) and is_ident(toks[k + 1]) and toks[k + 2] == "{":
                self.known.add(module + tuple(n for n, _ in stack) + (toks[k + 1],))
                stack.append((toks[k + 1], depth + 1))
            elif t == "{":
                depth += 1
            elif t == "}":
                depth -= 1
                while stack and stack[-1][1] > depth:
                    stack.pop()

    def file_of(self, module: Module) -> Module:
        while module not in self.files:
            module = module[:-1]
        return module

    def resolve(self, segs: list[str], here: Module) -> Module | None:
        if not segs or segs[0] == "::":
            return None
        first = segs[0]
        if first == "crate":
            cur: Module = ()
            rest = segs[1:]
        elif first == "self":
            cur, rest = here, segs[1:]
        elif first == "super":
            cur, k = here, 0
            while k < len(segs) and segs[k] == "super":
                cur, k = cur[:-1], k + 1
            rest = segs[k:]
        elif here + (first,) in self.known:
            cur, rest = here + (first,), segs[1:]
        else:
            return None
        for s in rest:
            if s == "self":
                continue
            if cur + (s,) in self.known:
                cur = cur + (s,)
            else:
                break
        return cur

    def add(self, src: Module, segs: list[str], here: Module, line: int) -> None:
        target = self.resolve(segs, here)
        if target is None:
            return
        target = self.file_of(target)
        if target != src and (src, target) not in self.refs:
            self.refs[(src, target)] = f"{self.files[src].relative_to(self.src.parent)}:{line}"

    def collect(self, module: Module, text: str) -> None:
        toks = list(tokens(text))
        stack: list[tuple[str, int]] = []
        depth = 0
        k = 0
        while k < len(toks):
            t, line = toks[k]
            here = module + tuple(n for n, _ in stack)
            prev = toks[k - 1][0] if k else ""
            if t == "mod" and k + 2 < len(toks) and is_ident(toks[k + 1][0]) and toks[k + 2][0] == "{":
                stack.append((toks[k + 1][0], depth + 1))
                depth += 1
                k += 3
                continue
            if t == "use" and prev != "::":
                j, inner = k + 1, 0
                while j < len(toks) and not (toks[j][0] == ";" and inner == 0):
                    inner += {"{": 1, "}": -1}.get(toks[j][0], 0)
                    j += 1
                paths: list[list[str]] = []
                parse_use_tree([x for x, _ in toks[k + 1 : j]], 0, [], paths)
                for p in paths:
                    self.add(module, p, here, line)
                k = j + 1
                continue
            if t == "{":
                depth += 1
            elif t == "}":
                depth -= 1
                while stack and stack[-1][1] > depth:
                    stack.pop()
            elif is_ident(t) and prev != "::" and k + 1 < len(toks) and toks[k + 1][0] == "::":
                segs, j = [t], k + 1
                while j + 1 < len(toks) and toks[j][0] == "::" and is_ident(toks[j + 1][0]):
                    segs.append(toks[j + 1][0])
                    j += 2
                self.add(module, segs, here, line)
                k = j
                continue
            k += 1

    def level_edges(self) -> dict[Module, dict[str, dict[str, str]]]:
        """Folder level → sibling → sibling → witness (ancestor/descendant pairs dropped)."""
        levels: dict[Module, dict[str, dict[str, str]]] = defaultdict(lambda: defaultdict(dict))
        for (a, b), witness in sorted(self.refs.items()):
            p = 0
            while p < min(len(a), len(b)) and a[p] == b[p]:
                p += 1
            if p == len(a) or p == len(b):
                continue  # one contains the other
            levels[a[:p]][a[p]].setdefault(b[p], witness)
        return levels


def cycles(graph: dict[str, dict[str, str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    nodes = sorted(set(graph) | {b for e in graph.values() for b in e})

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, {})):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    sys.setrecursionlimit(10_000)
    for v in nodes:
        if v not in index:
            visit(v)
    return found


def name(level: Module, child: str) -> str:
    return "::".join(("crate",) + level + (child,))


def main(argv: list[str]) -> int:
    args = [a for a in argv if not a.startswith("--")]
    if len(args) != 1 or not Path(args[0]).is_dir():
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    crate = Crate(Path(args[0]))
    levels = crate.level_edges()
    if "--edges" in argv:
        for level in sorted(levels):
            for a in sorted(levels[level]):
                for b, w in sorted(levels[level][a].items()):
                    print(f"{name(level, a)} -> {name(level, b)}    ({w})")
    bad = 0
    for level in sorted(levels):
        graph = levels[level]
        for comp in cycles(graph):
            bad += 1
            print(f"cycle among {', '.join(name(level, c) for c in comp)}:")
            for a in comp:
                for b in comp:
                    if b in graph.get(a, {}):
                        print(f"  {name(level, a)} -> {name(level, b)}    ({graph[a][b]})")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
