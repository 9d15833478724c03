"""The examples of a Markdown document, run as a reader would paste them.

An example is a ```sh block; the plain ``` block right after it, if any, is
what it prints. In the printed text ``...`` stands for anything, and a line
break (with the indentation after it) for any whitespace or none, so that a
long JSON line may be wrapped and shortened in the document.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

FENCE = re.compile(r"^```(\w*)\n(.*?)^```\n", re.S | re.M)


@dataclass
class Example:
    line: int
    command: str
    output: str | None  # None: no output shown, it must only succeed


def examples(path: Path, section: str | None = None) -> list[Example]:
    """The examples of a document (or of its ``## section``), in order."""
    text = path.read_text()
    offset = 0
    if section is not None:
        start = text.index(f"\n## {section}\n")
        end = text.find("\n## ", start + 1)
        offset, text = start, text[start:end if end >= 0 else len(text)]
    out: list[Example] = []
    blocks = list(FENCE.finditer(text))
    for i, block in enumerate(blocks):
        if block.group(1) != "sh":
            continue
        output = None
        if i + 1 < len(blocks):
            after = blocks[i + 1]
            if after.group(1) == "" and not text[block.end():after.start()].strip():
                output = after.group(2)
        line = text.count("\n", 0, block.start()) + text.count("\n", 0, offset) + 2
        out.append(Example(line, block.group(2), output))
    return out


def pattern(expected: str) -> re.Pattern[str]:
    parts = []
    for piece in expected.strip().split("..."):
        words = re.split(r"\s*\n\s*", piece)
        parts.append(r"\s*".join(re.escape(w) for w in words))
    return re.compile(".*?".join(parts), re.S)


def run(example: Example, replace: dict[str, str], cwd: Path, env: dict[str, str],
        where: str) -> str:
    """Run one example with bash; fail with the example's place if it fails
    or prints something else than the document shows."""
    command = example.command
    for old, new in replace.items():
        command = command.replace(old, new)
    done = subprocess.run(["bash", "-o", "pipefail", "-c", command], cwd=cwd, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=60)
    printed = done.stdout  # as a terminal shows it: stderr in its place
    if done.returncode != 0 and example.output is None:
        raise AssertionError(f"{where}:{example.line}: exit {done.returncode}:\n{command}\n"
                             f"{_short(printed)}")
    if example.output is not None and not pattern(example.output).fullmatch(printed.strip()):
        raise AssertionError(f"{where}:{example.line}: printed something else than the "
                             f"document shows.\n--- command\n{command}\n--- shown\n"
                             f"{example.output}\n--- printed\n{_short(printed)}")
    return printed


def _short(text: str, size: int = 1500) -> str:
    return text if len(text) <= 2 * size else f"{text[:size]}\n[...]\n{text[-size:]}"
