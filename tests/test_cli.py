import subprocess
import sys

from dagan_jax import cli


def test_help_lists_every_command():
  proc = subprocess.run([sys.executable, "-m", "dagan_jax.cli", "--help"],
                        capture_output=True, text=True, check=True)
  assert "usage: dagan-jax" in proc.stdout
  for name in cli.COMMANDS:
    assert name in proc.stdout


def test_every_command_has_help():
  for name in cli.COMMANDS:
    proc = subprocess.run([sys.executable, "-m", "dagan_jax.cli", name, "--help"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, (name, proc.stderr)
    assert f"dagan-jax {name}" in proc.stdout


def test_no_command_prints_help(capsys):
  assert cli.main([]) == 0
  assert "usage: dagan-jax" in capsys.readouterr().out
