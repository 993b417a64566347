#!/usr/bin/env python3
"""The configuration reference (docs/CONFIG.md), generated from the binaries' clap definitions.

Every setting of ragq is a clap flag with a `RAGQ_*` environment variable; this reads the
`--help` of `ragq-api`, `ragq-worker` and `ragq` (the global options of the operator tool) and
writes one table per binary: flag, variable, default, meaning. So the reference cannot drift
from the code: `scripts/test.sh` runs this with `--check`, which fails when docs/CONFIG.md is not
what the binaries say.

    python3 scripts/lib/config_reference.py target/debug > docs/CONFIG.md   # regenerate
    python3 scripts/lib/config_reference.py --check target/debug            # compare
"""
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
BINARIES = [
    ("ragq-api", "the ingress (HTTP, SSE)"),
    ("ragq-worker", "the workers"),
    ("ragq", "the operator tool (global options, before the subcommand)"),
]


def options(help_text: str):
    """(flag, env, default, text) for each option of a clap `--help` page."""
    rows, cur = [], None
    for line in help_text.splitlines():
        m = re.match(r"^\s{2,6}(?:-\w, )?(--[\w-]+)(?: <[^>]+>)?\s*$", line)
        if m:
            cur = [m.group(1), ""]
            rows.append(cur)
        elif cur is not None and line.startswith(" " * 10):
            cur[1] += " " + line.strip()
        elif not line.strip():
            continue
        else:
            cur = None
    out = []
    for flag, text in rows:
        if flag in ("--help", "--version"):
            continue
        env = re.search(r"\[env: (\w+)=?[^\]]*\]", text)
        default = re.search(r"\[default: ([^\]]*)\]", text)
        values = re.search(r"\[possible values: ([^\]]*)\]", text)
        desc = re.sub(r"\s*\[(env|default|possible values): [^\]]*\]", "", text).strip()
        if values:
            desc += f" (one of: {values.group(1)})"
        # A value enum with documented values: "Possible values: - a: text - b: text".
        block = re.search(r"\s*Possible values:\s*(- .*)$", desc)
        if block:
            items = [i.strip() for i in re.split(r"(?:^|\s)- ", block.group(1)) if i.strip()]
            shown = "; ".join(f"`{k}`: {v}" if v else f"`{k}`"
                              for k, _, v in (i.partition(": ") for i in items))
            desc = desc[:block.start()] + f". One of: {shown}"
        out.append((flag, env.group(1) if env else "", default.group(1) if default else "", desc))
    return out


def cell(s: str) -> str:
    return s.replace("|", "\\|")


def render(bin_dir: pathlib.Path) -> str:
    lines = [
        "# Configuration reference",
        "",
        "Generated from the binaries' clap definitions by `python3 scripts/lib/config_reference.py "
        "target/debug > docs/CONFIG.md`; `scripts/test.sh` fails when this file and the code "
        "disagree. Every flag can be given as its environment variable; values are checked at "
        "start (a bad one stops the process with a message naming it). Secrets (`RAGQ_SECRET_KEY`, "
        "passwords inside URLs) are never printed. See [OPERATIONS.md](OPERATIONS.md) for how "
        "the settings fit together.",
    ]
    for name, what in BINARIES:
        text = subprocess.run([str(bin_dir / name), "--help"], check=True, capture_output=True,
                              text=True).stdout
        lines += ["", f"## `{name}`: {what}", "", "| flag | variable | default | meaning |",
                  "| --- | --- | --- | --- |"]
        for flag, env, default, desc in options(text):
            lines.append(f"| `{flag}` | {f'`{env}`' if env else ''} | "
                         f"{f'`{cell(default)}`' if default else ''} | {cell(desc)} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    args = sys.argv[1:]
    check = "--check" in args
    args = [a for a in args if a != "--check"]
    bin_dir = pathlib.Path(args[0] if args else ROOT / "target" / "debug")
    text = render(bin_dir)
    if not check:
        sys.stdout.write(text)
        return 0
    doc = ROOT / "docs" / "CONFIG.md"
    if not doc.exists() or doc.read_text() != text:
        sys.stderr.write("docs/CONFIG.md is out of date: run "
                         "`python3 scripts/lib/config_reference.py target/debug > docs/CONFIG.md`\n")
        return 1
    print("docs/CONFIG.md matches the binaries")
    return 0


if __name__ == "__main__":
    sys.exit(main())
