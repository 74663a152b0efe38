import subprocess
import sys

from click.testing import CliRunner

from harness.cli import cli


def test_version():
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert "harness" in result.output


def test_python_dash_m():
    out = subprocess.run([sys.executable, "-m", "harness", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    assert "Usage" in out.stdout


def test_limit_options_are_spelled_alike_in_validate_and_evaluate_with_the_old_names_as_aliases(tmp_path):
    from click.testing import CliRunner

    from harness.cli import cli

    runner = CliRunner()
    for command in ("validate", "evaluate"):
        text = runner.invoke(cli, [command, "--help"]).output
        assert "--wall-seconds" in text and "--memory-mb" in text
        assert "--time-limit" not in text and "--memory-limit" not in text  # hidden aliases
    clash = runner.invoke(cli, ["evaluate", str(tmp_path), "--wall-seconds", "40", "--time-limit", "30"])
    assert clash.exit_code == 2 and "given twice with different values" in clash.output
    # the old names still parse: the empty folder then fails as a submission (exit 1), not as options (2)
    alias = runner.invoke(cli, ["validate", str(tmp_path), "--time-limit", "30", "--memory-limit", "1024"])
    assert alias.exit_code == 1 and "INVALID (invalid_submission)" in alias.output, alias.output
