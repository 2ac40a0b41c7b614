"""Settings come from the environment with the documented defaults."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from service.config import Settings, SettingsError


def test_defaults_put_sqlite_and_datasets_under_the_data_dir(tmp_path: Path):
    settings = Settings.from_env({"UNITSCOPE_DATA_DIR": str(tmp_path), "UNITSCOPE_ASSETS": str(tmp_path / "assets")})
    assert settings.database_url == f"sqlite:///{tmp_path / 'unitscope.db'}"
    assert settings.redis_url is None
    assert settings.dataset_roots == (tmp_path / "datasets", tmp_path / "assets")
    assert settings.api_keys == frozenset()


def test_dataset_roots_split_on_pathsep_and_keys_on_commas(tmp_path: Path):
    env = {
        "UNITSCOPE_DATA_DIR": str(tmp_path),
        "UNITSCOPE_DATASET_ROOTS": os.pathsep.join([str(tmp_path / "x"), str(tmp_path / "y")]),
        "UNITSCOPE_API_KEYS": " k1, k2 ,,",
        "REDIS_URL": "redis://127.0.0.1:6379/2",
    }
    settings = Settings.from_env(env)
    assert settings.dataset_roots == (tmp_path / "x", tmp_path / "y")
    assert settings.api_keys == {"k1", "k2"}
    assert settings.redis_url == "redis://127.0.0.1:6379/2"


@pytest.mark.parametrize("value", ["soon", "0", "-5"])
def test_bad_numbers_are_a_clear_settings_error(value):
    with pytest.raises(SettingsError, match="UNITSCOPE_BATCH_SIZE"):
        Settings.from_env({"UNITSCOPE_BATCH_SIZE": value})
