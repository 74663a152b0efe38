"""Challenge files: the shipped example loads; every problem names its line."""

from pathlib import Path

import pytest

from harness.errors import InputError
from harness.grading import load_challenge, parse_challenge

REPO = Path(__file__).resolve().parents[1]

GOOD = """name = "c"
[splits.public]
datasets = ["dummy"]
[ranking]
values = ["mig.discrete_mig"]
"""


def test_example_challenge_loads():
    c = load_challenge(REPO / "examples" / "challenge.toml")
    assert c.splits == ["public", "private"]
    assert c.ranking_values[0] == "factor_vae.eval_accuracy"
    assert c.metric_params["factor_vae"]["num_train"] == 1000
    assert (c.limits.wall_seconds, c.limits.memory_mb, c.limits.threads) == (1800, 4096, 2)


def test_defaults_and_config_hash():
    c = parse_challenge(GOOD)
    assert (c.preset, c.seed, c.backend, c.max_attempts) == ("challenge", 0, "process", 3)
    assert c.config_hash() == parse_challenge(GOOD + "[grading]\nmax_attempts = 5\n").config_hash()
    assert c.config_hash() != parse_challenge("seed = 1\n" + GOOD).config_hash()


def test_relative_dataset_paths_resolve_against_the_file(tmp_path):
    (tmp_path / "held").mkdir()
    (tmp_path / "held" / "x.h5").write_bytes(b"")
    f = tmp_path / "c.toml"
    f.write_text(GOOD + '[splits.private]\ndatasets = ["held/x.h5"]\n')
    assert load_challenge(f).datasets["private"] == [str((tmp_path / "held" / "x.h5").resolve())]


@pytest.mark.parametrize("text, line, words", [
    ('name = "c"\n[splits.public\ndatasets = ["dummy"]\n', 2, "line 2"),
    (GOOD + "[limits]\nthreads = \"two\"\n", 7, "[limits] threads: must be an integer"),
    (GOOD + "[limits]\nwal_seconds = 3\n", 7, "[limits] wal_seconds: unknown key"),
    (GOOD + "[limits]\nmemory_mb = -1\n", 7, "must be positive"),
    ('name = "c"\n[splits.public]\ndatasets = ["nowhere.h5"]\n', 3, "'nowhere.h5' is neither a known dataset"),
    ('name = "c"\n[splits.public]\ndatasets = []\n', 3, "non-empty list"),
    ('name = "c"\n[splits.private]\ndatasets = ["dummy"]\n', None, "[splits.public] table is required"),
    (GOOD.replace('"mig.discrete_mig"', '"mig"'), 5, "not of the form"),
    (GOOD + "[sandbox]\nbackend = \"vm\"\n", 7, "unknown backend 'vm'"),
    (GOOD + "[ranking.extra]\n", 6, "[ranking] extra: unknown key"),
    ("colour = 1\n" + GOOD, 1, "colour: unknown key"),
    (GOOD.replace("[ranking]", "[ranking]\nmethod = \"elo\""), 5, "unknown method 'elo'"),
    (GOOD + "[grading]\nmax_attempts = true\n", 7, "must be an integer"),
])
def test_problems_name_the_line(text, line, words):
    with pytest.raises(InputError) as info:
        parse_challenge(text, path="ch.toml")
    message = str(info.value)
    assert message.startswith("ch.toml: ")
    assert words in message
    if line is not None:
        assert f"line {line}:" in message
    assert "\n" not in message


def test_missing_file():
    with pytest.raises(InputError, match="challenge file not found"):
        load_challenge("/nonexistent/c.toml")


def test_metric_names_values_and_params_checked_against_the_registry():
    from harness import metrics

    assert "mig" in metrics.names()
    cases = [
        (GOOD.replace('"mig.discrete_mig"', '"mig.bogus"'), 5, "'mig.bogus' is not a value of metric 'mig'"),
        (GOOD.replace('"mig.discrete_mig"', '"dci.disentanglement"').replace("[ranking]", "[metrics]\nnames = [\"mig\"]\n[ranking]"),
         7, "metric 'dci' is not among the graded metrics"),
        (GOOD + "[metrics.params.factor_vae]\nnum_trian = 5\n", 7, "num_trian: unknown parameter of factor_vae"),
        (GOOD + "[metrics]\npreset = \"fancy\"\n", 7, "unknown preset 'fancy'"),
        (GOOD + "[metrics]\nnames = [\"migg\"]\n", 7, "unknown metric 'migg'"),
    ]
    for text, line, words in cases:
        with pytest.raises(InputError) as info:
            parse_challenge(text, path="ch.toml")
        assert f"line {line}:" in str(info.value) and words in str(info.value), str(info.value)
