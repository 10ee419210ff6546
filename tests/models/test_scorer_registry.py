import subprocess
import sys

import pytest

from llmrec.errors import ConfigError
from llmrec.models import EASE, SCORERS, ItemKNN, available_scorers, get_scorer, scorer_class, tuning_configs


def test_available_scorers_lists_the_baselines() -> None:
    names = available_scorers()
    assert names == sorted(names)
    assert {"popular", "itemknn", "ease", "als", "bpr"} <= set(names)
    assert set(names) == set(SCORERS)


def test_get_scorer_builds_configured_unfitted_scorer() -> None:
    scorer = get_scorer("ease", l2_reg=42.0)
    assert isinstance(scorer, EASE)
    assert scorer.config.l2_reg == 42.0
    assert "l2_reg=42.0" in repr(scorer)
    assert scorer_class("itemknn") is ItemKNN


def test_unknown_name_lists_valid_names_and_suggests() -> None:
    with pytest.raises(ConfigError) as info:
        get_scorer("eas")
    message = str(info.value)
    for name in available_scorers():
        assert name in message
    assert "Did you mean 'ease'?" in message


def test_invalid_config_value_is_config_error() -> None:
    with pytest.raises(ConfigError, match="k_neighbors"):
        get_scorer("itemknn", k_neighbors=0)
    with pytest.raises(ConfigError, match="l2_reg"):
        get_scorer("ease", l2_reg=-1.0)
    with pytest.raises(ConfigError, match="not both"):
        EASE(EASE.config_class(), l2_reg=1.0)


def test_config_is_frozen() -> None:
    scorer = get_scorer("als")
    with pytest.raises(ValueError, match="frozen"):
        scorer.config.factors = 3  # type: ignore[misc]


def test_tuning_configs_expands_the_grid() -> None:
    assert tuning_configs("popular") == [{}]
    assert tuning_configs("ease") == [{"l2_reg": v} for v in EASE.tuning_grid["l2_reg"]]
    als = tuning_configs("als")
    assert len(als) == 4
    assert len({tuple(sorted(c.items())) for c in als}) == 4
    with pytest.raises(ConfigError):
        tuning_configs("nope")


@pytest.mark.slow  # over 1 s in CI: outside the fast lane (make test-fast)
def test_importing_the_registry_does_not_import_implicit() -> None:
    code = "import sys, llmrec.models.registry; print('implicit' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
