"""The `harness datasets` commands, through click and through a real subprocess."""

import subprocess
import sys

import numpy as np
from click.testing import CliRunner
from PIL import Image

from harness.cli import cli


def test_list_names_every_dataset():
    result = CliRunner().invoke(cli, ["datasets", "list"])
    assert result.exit_code == 0
    for name in ["dsprites", "color_dsprites", "noisy_dsprites", "scream_dsprites", "shapes3d", "dummy"]:
        assert name in result.output
    assert "shape=3, scale=6, orientation=40, posX=32, posY=32" in result.output


def test_show_writes_a_montage(tmp_path):
    out = tmp_path / "montage.png"
    result = CliRunner().invoke(cli, ["datasets", "show", "dummy", "--out", str(out)])
    assert result.exit_code == 0, result.output
    with Image.open(out) as img:
        pixels = np.asarray(img.convert("L"))
    assert img.format == "PNG" and pixels.shape[0] > 100 and pixels.std() > 10


def test_bad_input_is_one_line_exit_2(tmp_path):
    cases = [
        ["datasets", "show", "dsprite", "--out", str(tmp_path / "m.png")],
        ["datasets", "show", "dummy", "--out", str(tmp_path / "no" / "m.png")],
        ["datasets", "show", "dummy", "--out", str(tmp_path / "m.txt")],
        ["datasets", "export", "dummy", "--out", str(tmp_path / "x.h5"), "--subset", "1000"],
        ["datasets", "check", str(tmp_path / "missing.h5")],
    ]
    for args in cases[:-1]:
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 2, (args, result.output)
        assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    # and once through a real process: no traceback reaches the terminal
    out = subprocess.run([sys.executable, "-m", "harness", *cases[-1]], capture_output=True, text=True)
    assert out.returncode == 2 and out.stderr.startswith("error: no such file") and out.stderr.count("\n") == 1
    assert not (tmp_path / "x.h5").exists()
