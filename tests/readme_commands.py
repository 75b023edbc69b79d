"""The distgan command lines of the READMEs' code blocks, as a user would type them.

    for c in commands(REPO / "README.md"):
        c.argv                       # the words after `distgan`, $VARS expanded from ``env``
        c.output                     # what the block shows after a `$ ` command

A command line is a line of a fenced code block that runs distgan (``distgan ...``,
``.venv/bin/distgan ...``, ``python -m distgan.cli ...``), after a ``$ `` prompt or not, joined
across backslash continuations, its ``# comment`` dropped. A *synopsis* (``distgan train JOB
[--set section.field=value ...]``) has brackets, ``...``, ``a|b`` choices or placeholders in
capitals; ``parse_argv`` turns one into a command line (every option given, the first choice,
a sample value for each placeholder).
"""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

FENCE = re.compile(r"^```")
PLACEHOLDER = re.compile(r"^[A-Z][A-Z_]*$")  # JOB, RUN_DIR, ID, N
SAMPLES = {"N": "28", "K": "0"}  # placeholders that must be numbers; the others stay as words
PROGRAMS = (["distgan"], [".venv/bin/distgan"], ["python", "-m", "distgan.cli"])


@dataclass
class Command:
    doc: str  # the README's path, relative to the repository
    text: str  # the line as written (continuations joined, no prompt)
    words: list[str]  # its words after the program, $VARS as written
    prompted: bool  # written after a `$ ` prompt
    output: list[str] = field(default_factory=list)  # the lines the block shows after it

    @property
    def synopsis(self) -> bool:
        return "[" in self.text or any(
            w == "..." or PLACEHOLDER.match(w) or ("|" in w and "://" not in w) for w in self.words
        )

    def argv(self, env: dict[str, str] | None = None) -> list[str]:
        """The words, with ``$NAME`` from ``env`` (else this process's environment)."""
        expand = env if env is not None else os.environ
        return [re.sub(r"\$(\w+)", lambda m: expand[m.group(1)], w) for w in self.words]

    def parse_argv(self) -> list[str]:
        """A command line for the parser: a synopsis with its optional parts given, the first
        of each choice, ``...`` dropped, sample values for numeric placeholders."""
        words = [w.strip("[]") for w in self.argv({"PWD": "/tmp"})]
        words = [w.split("|")[0] if "://" not in w else w for w in words if w not in ("", "...")]
        out = []
        for i, w in enumerate(words):
            if w == "--set" and (i + 1 == len(words) or words[i + 1].startswith("--")):
                continue  # "--set ..." : overrides left to the reader
            out.append(SAMPLES.get(w, w))
        return out


def commands(readme: Path, repo: Path) -> list[Command]:
    """The distgan commands of ``readme``'s fenced code blocks, in order."""
    found: list[Command] = []
    in_block, last, pending = False, None, ""
    for line in readme.read_text().splitlines():
        if FENCE.match(line):
            in_block, last = not in_block, None
            continue
        if not in_block:
            continue
        if pending or line.endswith("\\"):
            pending += line.rstrip("\\").strip() + " "
            if line.endswith("\\"):
                continue
            line, pending = pending.strip(), ""
        prompted = line.startswith("$ ")
        text = line[2:] if prompted else line.strip()
        program = next((p for p in PROGRAMS if text.startswith(" ".join(p) + " ")), None)
        if program is not None:
            words = shlex.split(text, comments=True)[len(program) :]
            last = Command(str(readme.relative_to(repo)), text, words, prompted)
            found.append(last)
        elif prompted:
            last = None  # another program's command: what follows is its output
        elif last is not None and last.prompted:
            last.output.append(line)
    return found
