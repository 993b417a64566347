#!/usr/bin/env python3
"""Checks the "Where things happen" table of docs/ARCHITECTURE.md against the code.

Every `path::function` in the table (backticked, e.g. `api/src/dispatch/publish.rs::publish`,
or `path::Type::method`) must name an existing file that defines that function (`fn name`),
so the map a newcomer follows cannot point at code that moved. Exit 1 with the broken entries.

    python3 scripts/lib/where_things_happen.py
"""
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def main() -> int:
    doc = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    m = re.search(r"^## Where things happen\n(.*?)(?=^## )", doc, re.S | re.M)
    if not m:
        print("docs/ARCHITECTURE.md has no '## Where things happen' section", file=sys.stderr)
        return 1
    refs = re.findall(r"`([\w./-]+\.rs)::([\w:]+)`", m.group(1))
    if not refs:
        print("the 'Where things happen' table names no file::function", file=sys.stderr)
        return 1
    broken = []
    for path, item in refs:
        f = ROOT / path
        name = item.split("::")[-1]
        if not f.is_file():
            broken.append(f"{path}::{item}: no such file")
        elif not re.search(rf"\bfn {re.escape(name)}\b", f.read_text()):
            broken.append(f"{path}::{item}: no `fn {name}` in the file")
    for b in broken:
        print(b, file=sys.stderr)
    if broken:
        return 1
    print(f"where things happen: {len(refs)} entries, all found")
    return 0


if __name__ == "__main__":
    sys.exit(main())
