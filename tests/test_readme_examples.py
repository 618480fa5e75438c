"""The README's commands work as written from a clone: they go through scripts/, never a bare interpreter.

A bare `python -m marstek_webasto_addon` fails on a fresh clone (the dependencies live in .venv), so every
command in README.md must go through `scripts/mwa` (which creates .venv first), and `.venv/bin/...` may
only follow `scripts/bootstrap` in the same block. A few of the examples are run here through the script.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from .conftest import free_port

pytestmark = pytest.mark.timeout(120)
ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
MWA = ROOT / "scripts" / "mwa"


@dataclass(frozen=True)
class Command:
    text: str
    block: int  # the fenced block it is in; -1 for inline code in the prose
    line: int


def readme_commands(text: str) -> list[Command]:
    """Each shell command in README.md: the lines of its sh blocks (continuations joined, heredoc bodies
    left out) and the inline code spans in the prose that start like a command."""
    commands: list[Command] = []
    lines = text.splitlines()
    block, in_block, heredoc, pending = 0, False, None, ""
    for number, line in enumerate(lines, start=1):
        if line.startswith("```"):
            in_block = not in_block and line.strip() in ("```sh", "```bash", "```shell")
            block += 1
            continue
        if not in_block:
            for span in re.findall(r"`([^`]+)`", line):
                if re.match(r"(scripts/\S|\.venv/bin/|python3? -m )", span):
                    commands.append(Command(span, -1, number))
            continue
        if heredoc is not None:
            heredoc = None if line.strip() == heredoc else heredoc
            continue
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1]
            continue
        command = pending + line
        pending = ""
        commands.append(Command(command, block, number))
        marker = re.search(r"<<-?\s*'?(\w+)'?", command)
        heredoc = marker.group(1) if marker else None
    return commands


COMMANDS = readme_commands(README.read_text())


def test_the_readme_commands_are_found() -> None:
    texts = [c.text for c in COMMANDS]
    assert any(t.startswith("scripts/mwa run --options options.json") for t in texts)
    assert any(t.startswith("scripts/demo") for t in texts)
    assert "scripts/mwa --help" in texts


def test_no_readme_command_runs_the_project_with_a_bare_interpreter() -> None:
    bare = [
        f"README.md:{c.line}: {c.text}"
        for c in COMMANDS
        if re.search(r"(^|[\s|;&(])python3?\s+-m\s+(marstek_webasto_addon|bench)\b", c.text)
    ]
    assert bare == [], "use scripts/mwa (it creates .venv on a fresh clone):\n" + "\n".join(bare)


def test_the_command_line_is_always_scripts_mwa() -> None:
    other = [
        f"README.md:{c.line}: {c.text}"
        for c in COMMANDS
        if re.search(r"-m\s+marstek_webasto_addon\b", c.text) or "marstek-webasto-addon" in c.text
    ]
    assert other == [], "\n".join(other)


def test_venv_commands_follow_the_bootstrap_in_their_block() -> None:
    bootstrapped = {c.block for c in COMMANDS if c.text.split()[0] == "scripts/bootstrap"}
    early = [
        f"README.md:{c.line}: {c.text}"
        for c in COMMANDS
        if ".venv/" in c.text and c.block not in bootstrapped and not c.text.startswith("scripts/")
    ]
    assert early == [], "a fresh clone has no .venv yet; run scripts/bootstrap first:\n" + "\n".join(early)


def test_every_script_the_readme_names_exists_and_is_executable() -> None:
    named = {
        word for c in COMMANDS for word in shlex.split(c.text, comments=True) if word.startswith("scripts/")
    }
    assert {"scripts/mwa", "scripts/demo", "scripts/test", "scripts/bootstrap"} <= named
    for name in named:
        assert os.access(ROOT / name, os.X_OK), name


# A few examples, run through the script ---------------------------------------------------------------


def script_env() -> dict[str, str]:
    """The script checks the virtual environment these tests run in: its bootstrap is then a no-op, and
    the examples run the code under test rather than another copy."""
    if not (Path(sys.prefix) / ".installed").exists():
        pytest.skip("not running in a virtual environment made by scripts/bootstrap")
    hidden = ("SUPERVISOR_TOKEN", "MWA_MQTT_HOST", "MWA_PROG")
    env = {k: v for k, v in os.environ.items() if k not in hidden}
    return env | {"VENV": sys.prefix, "PYTHON": sys.executable}


def as_written(command: str, **replace: str) -> list[str]:
    """A README command as an argument list, with scripts/mwa found from any folder."""
    for old, new in replace.items():
        command = command.replace(old, new)
    words = shlex.split(command, comments=True)
    while words and words[-1] == "&":
        words.pop()
    assert words[0] == "scripts/mwa"
    return [str(MWA), *words[1:]]


def readme_line(prefix: str) -> str:
    found = [c.text for c in COMMANDS if c.text.startswith(prefix)]
    assert len(found) == 1, (prefix, found)
    return found[0]


def test_help_names_the_script_so_its_usage_can_be_copied() -> None:
    result = subprocess.run(
        as_written("scripts/mwa --help"),
        cwd=ROOT,
        env=script_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: {MWA} ")
    for command in ("simulate", "probe", "discover", "run", "check-options", "replay", "demo"):
        assert command in result.stdout


def test_the_bridge_example_options_pass_check_options_from_the_callers_folder(tmp_path: Path) -> None:
    text = README.read_text()
    heredoc = re.search(r"cat > options\.json <<'JSON'\n(.*?)\nJSON\n", text, re.S)
    assert heredoc is not None
    (tmp_path / "options.json").write_text(heredoc.group(1))
    command = as_written(readme_line("scripts/mwa check-options --options options.json"))
    env = script_env()
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "options OK: 2 batteries, 1 wallbox"
    # the same file without its broker: the answer `run` would give too
    options = json.loads(heredoc.group(1))
    del options["mqtt"]
    (tmp_path / "options.json").write_text(json.dumps(options))
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "error: options: mqtt.host: required when not running as a Home Assistant add-on" in result.stderr


def test_simulate_and_probe_as_in_the_readme() -> None:
    port = str(free_port())  # the README's 30000, on a port no one else here uses
    env = script_env()
    simulate = subprocess.Popen(
        as_written(readme_line("scripts/mwa simulate marstek --count 3"), **{"30000": port}),
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert simulate.stdout is not None
        lines = [simulate.stdout.readline() for _ in range(4)]
        assert "3 batteries running" in lines[-1], lines
        probe = subprocess.run(
            as_written(readme_line("scripts/mwa probe marstek 127.0.0.11:"), **{"30000": port}),
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        simulate.terminate()
        simulate.wait(10)
    assert probe.returncode == 0, probe.stderr
    battery = json.loads(probe.stdout)  # nothing but JSON on stdout, through the script too
    assert battery["model"] == "Venus E 3.0"
    assert battery["device"]["firmware"] == 150
