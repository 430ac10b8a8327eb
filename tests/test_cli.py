"""The command line: every subcommand has --help; errors give exit codes, not tracebacks."""

import subprocess
import sys

import pytest

from studykit.cli import COMMANDS, main


@pytest.mark.parametrize("command", COMMANDS)
def test_help_for_each_subcommand(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    assert command in capsys.readouterr().out


def test_no_command_prints_help_and_exits_2(capsys):
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().out


def test_python_dash_m_entry_point():
    out = subprocess.run(
        [sys.executable, "-m", "studykit", "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.startswith("studykit ")
