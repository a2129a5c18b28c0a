"""The man page cannot drift silently from the command: every subcommand and long option the argparse
parser knows is documented in docs/certbot-mailstack.1 (parser -> page only: the page may describe
more, e.g. commands still being written)."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

from mailstack_installer import __version__
from mailstack_installer.cli import build_parser

PAGE = Path(__file__).resolve().parents[2] / "docs" / "certbot-mailstack.1"


def plain(roff: str) -> str:
    """The words of roff source: minus signs as '-', font and spacing escapes dropped."""
    text = re.sub(r"\\f(\[[^]]*\]|\(..|.)", "", roff)
    text = text.replace("\\-", "-").replace("\\~", " ")
    return re.sub(r"\\[%&|:]", "", text)


def has_word(text: str, word: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", text) is not None


def section(name: str) -> List[str]:
    lines = PAGE.read_text().splitlines()
    start = lines.index(f".SH {name}")
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith(".SH ")), len(lines))
    return lines[start + 1 : end]


def command_entries() -> Dict[str, str]:
    """COMMANDS section: each top-level ``.TP`` / ``.B name`` entry -> its text (nested options too)."""
    entries: Dict[str, List[str]] = {}
    current, depth, tag_next = None, 0, False
    for line in section("COMMANDS"):
        if line.startswith(".RS"):
            depth += 1
        elif line.startswith(".RE"):
            depth -= 1
        elif depth == 0 and line.startswith(".TP"):
            tag_next = True
            continue
        elif tag_next and line.startswith(".B "):
            current = plain(line[3:]).strip()
            entries[current] = []
        if current is not None:
            entries[current].append(line)
        tag_next = False
    return {name: plain("\n".join(text)) for name, text in entries.items()}


def subcommands() -> Dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert len(actions) == 1, "expected one set of subcommands"
    return dict(actions[0].choices)


def long_options(parser: argparse.ArgumentParser) -> List[str]:
    return sorted({o for action in parser._actions for o in action.option_strings if o.startswith("--")})


def option_cases() -> List[Tuple[str, str]]:
    cases = [("(top level)", option) for option in long_options(build_parser())]
    for name, parser in sorted(subcommands().items()):
        cases += [(name, option) for option in long_options(parser)]
    return cases


@pytest.mark.parametrize("command", sorted(subcommands()))
def test_every_subcommand_has_an_entry_under_commands_and_in_the_synopsis(command: str) -> None:
    assert command in command_entries(), f"no .TP entry for {command} under COMMANDS in {PAGE.name}"
    synopsis = plain("\n".join(section("SYNOPSIS")))
    assert has_word(synopsis, command), f"{command} missing from the SYNOPSIS of {PAGE.name}"


@pytest.mark.parametrize(("command", "option"), option_cases())
def test_every_long_option_of_the_parser_is_in_the_man_page(command: str, option: str) -> None:
    assert has_word(plain(PAGE.read_text()), option), f"{command} {option} is not in {PAGE.name}"


def test_an_option_only_one_subcommand_takes_is_described_in_its_entry() -> None:
    per_command = {name: set(long_options(parser)) for name, parser in subcommands().items()}
    entries = command_entries()
    missing = []
    for name, options in sorted(per_command.items()):
        others = set().union(*(o for n, o in per_command.items() if n != name))
        missing += [f"{name} {o}" for o in sorted(options - others) if not has_word(entries.get(name, ""), o)]
    assert not missing, f"not described in their command's entry under COMMANDS: {missing}"


def test_title_line_carries_the_package_version() -> None:
    title = next(line for line in PAGE.read_text().splitlines() if line.startswith(".TH "))
    assert f'"certbot-mailstack {__version__}"' in title, title


@pytest.mark.skipif(shutil.which("man") is None, reason="man (man-db) is not installed")
def test_man_page_renders_without_warnings() -> None:
    env = {**os.environ, "MANWIDTH": "80", "LC_ALL": "C.UTF-8"}
    proc = subprocess.run(
        ["man", "--warnings", "-l", str(PAGE)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    # groff 1.23 (Debian 13) sets the NAME line with two spaces before the dash, 1.22 with one.
    assert "certbot-mailstack - serve the right certificate" in " ".join(proc.stdout.split())
