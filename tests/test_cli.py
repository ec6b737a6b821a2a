import pytest

from lsap.cli.main import COMMANDS, main


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    assert "usage: lsap" in capsys.readouterr().out


def test_no_command_prints_help(capsys):
    assert main([]) == 2  # a usage error, like a bad flag
    assert "quickstart" in capsys.readouterr().out
