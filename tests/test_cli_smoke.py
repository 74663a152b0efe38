import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from harness.cli import LibraryChoice, cli


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


def _walk(command, path=()):
    """(command path, command) for harness and every subcommand."""
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _walk(sub, path + (name,))


def test_every_choice_list_is_the_librarys_constant():
    from harness.baseline.export import FORMATS as EXPORT_FORMATS
    from harness.baseline.losses import MODELS
    from harness.baseline.models import WEIGHT_INITS
    from harness.grading.challenge import BACKENDS as CHALLENGE_BACKENDS, SPLITS
    from harness.grading.leaderboard import FORMATS as BOARD_FORMATS
    from harness.metrics.registry import PRESETS
    from harness.sandbox.backends import BACKENDS
    from harness.sandbox.session import DEVICES

    expected = {
        ("metrics", "list", "preset_name"): PRESETS,
        ("validate", "sandbox"): tuple(BACKENDS), ("validate", "device"): DEVICES,
        ("doctor", "backends"): CHALLENGE_BACKENDS,
        ("evaluate", "preset"): PRESETS, ("evaluate", "sandbox"): tuple(BACKENDS), ("evaluate", "device"): DEVICES,
        ("train", "model"): tuple(MODELS), ("train", "weight_init"): WEIGHT_INITS,
        ("train", "export_format"): EXPORT_FORMATS + ("none",),
        ("export", "export_format"): EXPORT_FORMATS,
        ("grade", "sandbox"): CHALLENGE_BACKENDS,
        ("leaderboard", "split"): SPLITS, ("leaderboard", "fmt"): BOARD_FORMATS,
    }
    choices = {path + (param.name,): param.type
               for path, command in _walk(cli) for param in command.params if isinstance(param.type, click.Choice)}
    assert {key: tuple(choice.choices) for key, choice in choices.items()} == \
        {key: tuple(value) for key, value in expected.items()}
    assert all(isinstance(choice, LibraryChoice) for choice in choices.values())  # read there, not copied


@pytest.mark.parametrize("args", [
    ["evaluate", "sub", "--param", "mig.num_train"],       # no value
    ["evaluate", "sub", "--param", "num_train=300"],       # no metric
    ["train", "--out", "run", "--param", "gamma"],          # no value
    ["train", "--out", "run", "--param", "=20"],            # no name
])
def test_a_bad_param_is_one_line_and_exit_2_in_every_command(tmp_path, monkeypatch, args):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"error: bad --param {args[-1]!r}: write ") and result.stderr.count("\n") == 1
    assert not (tmp_path / "run").exists() and not list(tmp_path.iterdir())  # refused before anything ran


@pytest.mark.parametrize("args", [["leaderboard", "--db", "x.db", "--format", "xml"], ["train", "--model", "vq_vae"],
                                  ["evaluate", "sub", "--no-such-option"], ["no-such-command"]])
def test_a_usage_error_is_one_line_and_exit_2(args):
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.output


def test_param_values_are_read_as_json_and_reach_the_metric(tmp_path):
    """300 is the integer dci.num_train needs (the metric refuses the text "300"), so the refusal that
    comes is the one of the estimator: both pairs reached dci, nested under its name."""
    from helpers_grading import make_submission

    sub = make_submission(tmp_path, "sub")

    def evaluate(*params):
        args = ["evaluate", str(sub), "--metric", "dci", "--out", str(tmp_path / "o")]
        return CliRunner().invoke(cli, args + [arg for p in params for arg in ("--param", p)])

    as_text = evaluate('dci.num_train="300"')
    assert as_text.exit_code == 2 and "num_train must be an integer, got '300'" in as_text.stderr, as_text.output
    as_number = evaluate("dci.num_train=300", "dci.estimator=no_such")
    assert as_number.exit_code == 2 and "estimator must be one of" in as_number.stderr, as_number.output
    assert as_number.stderr.count("\n") == 1 and not (tmp_path / "o").exists()


@pytest.mark.parametrize("command", ["validate", "evaluate"])
@pytest.mark.parametrize("spelling", ["--wall-seconds", "--time-limit"])
def test_the_wall_limit_reaches_the_sandbox(tmp_path, command, spelling):
    from helpers_grading import make_submission

    sub = make_submission(tmp_path, "sub")
    extra = ["--dataset", "dummy", "--metric", "mig", "--out", str(tmp_path / "o")] if command == "evaluate" else []
    result = CliRunner().invoke(cli, [command, str(sub), spelling, "0.01", *extra])
    assert "longer than the wall-clock limit (0.01 s)" in result.output, result.output
