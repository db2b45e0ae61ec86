"""Settings: environment variables with the TUNELOOP_ prefix, validated, with derived paths."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from store.settings import Settings


def test_reads_prefixed_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("TUNELOOP_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("TUNELOOP_PORT", "9000")
    monkeypatch.setenv("TUNELOOP_VLLM_URL", "http://gpu-box:8000")
    s = Settings(_env_file=None)
    assert s.port == 9000 and s.vllm_url == "http://gpu-box:8000"
    assert s.db_path == tmp_path / "tuneloop.db"
    assert s.base_model_path == str(tmp_path / "models" / "SmolLM2-135M-Instruct")
    assert s.served_base_name == "smollm2-135m-instruct"


def test_other_base_model_by_configuration(monkeypatch):
    monkeypatch.setenv("TUNELOOP_BASE_MODEL", "/srv/models/Qwen2.5-0.5B-Instruct/")
    s = Settings(_env_file=None)
    assert s.base_model_path == "/srv/models/Qwen2.5-0.5B-Instruct/"
    assert s.served_base_name == "qwen2.5-0.5b-instruct"


@pytest.mark.parametrize("var,value,match", [
    ("TUNELOOP_MAX_LORA_RANK", "12", "max_lora_rank must be one of"),
    ("TUNELOOP_PORT", "abc", "port"),
    ("TUNELOOP_MAX_CPU_LORAS", "1", "max_cpu_loras must be at least max_loras"),
])
def test_invalid_settings_name_the_field(monkeypatch, var, value, match):
    monkeypatch.setenv(var, value)
    with pytest.raises(ValidationError, match=match):
        Settings(_env_file=None)


def test_login_pairs(monkeypatch):
    monkeypatch.setenv("TUNELOOP_USERS", "ana:s3cret, ben:pw")
    assert Settings(_env_file=None).login_pairs() == [("ana", "s3cret"), ("ben", "pw")]
    monkeypatch.setenv("TUNELOOP_USERS", "ana")
    with pytest.raises(ValueError, match="name:password"):
        Settings(_env_file=None).login_pairs()
