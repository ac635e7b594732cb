"""The README's two set-up commands and CI stay in step."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    return re.findall(r"```bash\n(.+?)\n```", (ROOT / "README.md").read_text(), flags=re.S)


def test_readme_has_exactly_two_setup_commands_installing_cpu_torch_first():
    setup = readme_commands()[:2]
    assert len(setup) == 2
    for command in setup:
        assert "\n" not in command
        assert command.index("pip install torch==2.13.0") < command.index("pip install -e")
        assert command.startswith("python3 -m venv .venv")


def test_ci_runs_the_readme_test_command_verbatim():
    test_command = readme_commands()[1]
    assert "pytest" in test_command
    assert test_command in (ROOT / ".ci" / "run").read_text().splitlines()
