"""The dataset registry: built-ins always present, duplicates refused, options checked by signature."""

import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from harness import datasets
from harness.cli import cli
from harness.datasets import GridDataset
from harness.datasets.registry import BUILTINS
from harness.errors import InputError


class Bands(GridDataset):
    """A user's dataset: two factors, one band of pixels each."""

    name = "bands"
    factor_names = ["left", "right"]
    factor_sizes = [3, 4]
    observation_shape = (4, 4, 1)

    def __init__(self, level: int = 255):
        self.level = level

    def render(self, factors, rng=None):
        out = np.zeros((len(factors), 4, 4, 1), dtype=np.uint8)
        out[:, :, 0, 0] = (factors[:, 0, None] * self.level // 2).astype(np.uint8)
        out[:, :, 3, 0] = (factors[:, 1, None] * self.level // 3).astype(np.uint8)
        return out


class NeverBuilt(Bands):
    """Declares its factors as class attributes but cannot be built: `list` must not try."""

    name = "never_built"

    def __init__(self):
        raise RuntimeError("listing datasets must not build one")


def test_register_keeps_the_builtins():
    datasets.register("reg_bands", Bands)
    assert set(BUILTINS) | {"reg_bands"} <= set(datasets.names())
    assert datasets.load("dummy").observations([0]).shape == (1, 16, 16, 1)
    ds = datasets.load("reg_bands", level=90)
    assert ds.observations([11])[0, 0, :, 0].tolist() == [90, 0, 0, 90]  # (2, 3): 2 * 90 // 2, 3 * 90 // 3


def test_duplicates_refused_unless_replace():
    datasets.register("reg_dup", Bands)
    with pytest.raises(ValueError, match="already registered"):
        datasets.register("reg_dup", NeverBuilt)
    with pytest.raises(ValueError, match="'dsprites' is already registered"):
        datasets.register("dsprites", Bands)
    assert isinstance(datasets.load("reg_dup"), Bands)
    datasets.register("reg_dup", "harness.datasets.dummy:Dummy", replace=True)
    assert datasets.load("reg_dup").name == "dummy"


@pytest.mark.parametrize("name", ["", " padded", "my/data", "held_out.h5", "x.NPZ"])
def test_bad_names_refused(name):
    with pytest.raises(ValueError):
        datasets.register(name, Bands)


def test_bad_factories_refused():
    for factory in [42, "harness.datasets.dummy", "harness.datasets.dummy:"]:
        with pytest.raises(ValueError, match="factory"):
            datasets.register("reg_bad_factory", factory)
    assert "reg_bad_factory" not in datasets.names()


def test_unknown_option_names_dataset_option_and_accepted_ones():
    with pytest.raises(InputError) as err:
        datasets.load("xysquares", gridspacing=4)
    message = str(err.value)
    assert "'xysquares'" in message and "'gridspacing'" in message
    assert "grid_spacing" in message and "square_size" in message and "\n" not in message
    with pytest.raises(InputError, match="'dsprites': unknown option 'texture'; it takes no options"):
        datasets.load("dsprites", texture="scream.jpg")
    assert datasets.load("xysquares", grid_spacing=4).factor_sizes == [15] * 6


def test_missing_required_option():
    def from_folder(folder, size=3):
        return Bands()

    datasets.register("reg_folder", from_folder)
    expected = "'reg_folder': missing required option 'folder'; accepted options: folder, size"
    with pytest.raises(InputError, match=expected):
        datasets.load("reg_folder")
    assert isinstance(datasets.load("reg_folder", folder="x"), Bands)


def test_type_error_inside_a_factory_is_a_bug_not_a_bad_option():
    def broken(level=None):
        return Bands() if level is None else len(level)  # TypeError raised by the factory's own code

    datasets.register("reg_broken", broken)
    with pytest.raises(TypeError) as err:
        datasets.load("reg_broken", level=3)
    assert not isinstance(err.value, InputError) and "len()" in str(err.value)


def test_var_keyword_factory_takes_any_option():
    seen = {}

    def anything(**options):
        seen.update(options)
        return Bands()

    datasets.register("reg_anything", anything)
    datasets.load("reg_anything", colour="red", size=2)
    assert seen == {"colour": "red", "size": 2}


def test_names_imports_no_dataset_module():
    code = (
        "import sys; from harness import datasets; n = datasets.names(); "
        "mods = [m for m in sys.modules if m.startswith('harness.datasets.') and m not in "
        "('harness.datasets.base', 'harness.datasets.registry')]; print(len(n), mods)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == f"{len(BUILTINS)} []"


def test_describe_reads_class_attributes_without_building():
    datasets.register("reg_never_built", NeverBuilt)
    info = datasets.describe("reg_never_built")
    assert info.factor_sizes == (3, 4) and info.num_observations == 12 and info.observation_shape == (4, 4, 1)
    with pytest.raises(RuntimeError):
        datasets.load("reg_never_built")
    # a plain function declares nothing: it is called (without options) and its result read
    datasets.register("reg_function", lambda: Bands())
    assert datasets.describe("reg_function").factor_names == ("left", "right")
    with pytest.raises(InputError, match="unknown dataset 'reg_nowhere'"):
        datasets.describe("reg_nowhere")


def test_cli_list_shows_every_dataset_without_building_any():
    datasets.register("reg_listed_only", NeverBuilt)
    result = CliRunner().invoke(cli, ["datasets", "list"])
    assert result.exit_code == 0, result.output
    for name in [*BUILTINS, "reg_listed_only"]:
        assert f"\n{name} " in f"\n{result.output}"
    assert "x_R=8, y_R=8, x_G=8, y_G=8, x_B=8, y_B=8" in result.output
    assert "245,760 images 64x64x1  stochastic    scale=6, orientation=40, posX=32, posY=32" in result.output


def test_unknown_name_and_file_dispatch_unchanged(tmp_path):
    with pytest.raises(InputError) as err:
        datasets.load("xysquare")
    assert "xysquares" in str(err.value) and ".h5" in str(err.value)
    with pytest.raises(InputError, match="not found|no such|does not exist"):
        datasets.load(tmp_path / "missing.h5")


def test_cli_list_survives_a_dataset_it_cannot_describe():
    datasets.register("reg_needs_folder", lambda folder: Bands())
    result = CliRunner().invoke(cli, ["datasets", "list"])
    assert result.exit_code == 0, result.output
    assert "reg_needs_folder (not described: dataset 'reg_needs_folder': missing required option 'folder'" \
        in result.output
    assert "\nxysquares " in result.output
