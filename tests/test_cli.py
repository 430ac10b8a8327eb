"""The command line: every subcommand has --help; errors give exit codes, not tracebacks."""

import subprocess
import sys

import pytest

from studykit.cli import COMMANDS, build_parser, main


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


def test_top_level_help_imports_no_subcommand_module():
    """The dispatcher imports only the subcommand being run: ``studykit --help`` loads
    none of the subcommand modules, no pandas and no analysis code (start-up time)."""
    code = (
        "import sys, contextlib, io\n"
        "from studykit.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "    main(['--help'])\n"
        "print(sorted(m for m in sys.modules if m.startswith(('studykit.', 'pandas', 'scipy'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    # (studykit.outdir: the Ctrl-C guard of every command, standard library only)
    assert out.stdout.strip() == "['studykit.cli', 'studykit.errors', 'studykit.outdir']"


def test_only_the_subcommand_run_is_registered(capsys):
    parser = build_parser("verify")
    assert parser.parse_args(["verify", "OUT"]).results == "OUT"
    # the other subcommands are listed (help line) without their arguments
    with pytest.raises(SystemExit):
        parser.parse_args(["fit", "p.yaml", "--data", "d"])
    assert "unrecognized arguments" in capsys.readouterr().err
    for name in COMMANDS:
        with pytest.raises(SystemExit) as exc:
            main(["--debug", name, "--help"])
        assert exc.value.code == 0
    assert "usage: studykit redcap" in capsys.readouterr().out
