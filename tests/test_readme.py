"""README's Quick start is what CI runs: the two commands appear verbatim in .ci/run."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def quickstart_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line for line in block.splitlines() if line.strip()]


def test_quickstart_has_two_commands_and_ci_runs_them_verbatim():
    commands = quickstart_commands()
    assert len(commands) == 2
    install, tests = commands
    assert "torch==2.13.0" in install and "neuron-tui collect" in install
    assert "pytest" in tests
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert install in ci and tests in ci
