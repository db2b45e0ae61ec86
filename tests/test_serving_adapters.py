"""Adapter checks, reconcile, and the manager against a scripted server (serving/adapters.py)."""

from __future__ import annotations

import pytest

from fake_vllm import FakeVllm
from serving.adapters import AdapterError, AdapterManager, ModelStatus, ServerUnavailable, VllmAdmin, \
    check_adapter, reconcile, same_base_model
from serving_helpers import fake_adapter, fake_base_model, free_port, make_settings
from store.adapters import get_adapter, register_adapter
from store.db import connect


@pytest.fixture
def base(tmp_path):
    return fake_base_model(tmp_path / "models")


@pytest.fixture
def s(tmp_path, base):
    return make_settings(tmp_path / "data", base, max_lora_rank=16)


@pytest.fixture
def server():
    with FakeVllm(free_port()) as srv:
        yield srv


def register(s, name, path, rank=8):
    with connect(s.db_path) as db:
        register_adapter(db, name=name, family="f", version=1, base_model=s.base_model_path, path=str(path),
                         rank=rank, run_id=None, dataset_version_id=None, parent_id=None)


# ---------------------------------------------------------------- validation

def test_a_good_adapter_passes(s, base, tmp_path):
    config = check_adapter(s, "good-v1", fake_adapter(tmp_path / "a", base))
    assert config["r"] == 8


@pytest.mark.parametrize("name", ["../etc", "a/b", "Upper", "", "-x", "a..b", "x" * 70, "base"])
def test_bad_names_are_refused(s, base, tmp_path, name):
    with pytest.raises(AdapterError, match="name|base model"):
        check_adapter(s, name, fake_adapter(tmp_path / "a", base))


def test_missing_paths_are_refused_and_relative_ones_resolved(s, base, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fake_adapter(tmp_path / "rel", base)
    assert check_adapter(s, "a", "rel")["r"] == 8
    with pytest.raises(AdapterError, match="does not exist"):
        check_adapter(s, "a", "nothing/../../rel")
    with pytest.raises(AdapterError, match="does not exist"):
        check_adapter(s, "a", tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(AdapterError, match="adapter_config.json"):
        check_adapter(s, "a", tmp_path / "empty")


def test_missing_weights_are_refused(s, base, tmp_path):
    path = fake_adapter(tmp_path / "a", base)
    (path / "adapter_model.safetensors").unlink()
    with pytest.raises(AdapterError, match="adapter_model"):
        check_adapter(s, "a", path)


def test_modules_to_save_is_refused(s, base, tmp_path):
    with pytest.raises(AdapterError, match="modules_to_save"):
        check_adapter(s, "a", fake_adapter(tmp_path / "a", base, modules_to_save=["lm_head"]))


def test_rank_above_the_server_limit_is_refused_with_the_setting_to_change(s, base, tmp_path):
    with pytest.raises(AdapterError, match="rank 32.*TUNELOOP_MAX_LORA_RANK"):
        check_adapter(s, "a", fake_adapter(tmp_path / "a", base, rank=32))
    with pytest.raises(AdapterError, match="rank 64"):
        check_adapter(s, "b", fake_adapter(tmp_path / "b", base, rank=8, rank_pattern={"q_proj": 64}))


def test_other_peft_types_are_refused(s, base, tmp_path):
    with pytest.raises(AdapterError, match="IA3"):
        check_adapter(s, "a", fake_adapter(tmp_path / "a", base, peft_type="IA3"))


def test_wrong_base_model_is_refused(s, base, tmp_path):
    other = fake_base_model(tmp_path / "models", "OtherModel")
    with pytest.raises(AdapterError, match="trained on base model"):
        check_adapter(s, "a", fake_adapter(tmp_path / "a", other))


def test_same_base_by_resolved_path_or_hub_name(s, base, tmp_path):
    link = tmp_path / "link"
    link.symlink_to(base)
    assert same_base_model(str(link), s)
    assert same_base_model("SomeOrg/TinyBase", s)  # a hub id naming the same model
    assert not same_base_model("SomeOrg/Other", s)
    assert not same_base_model(None, s)


# ---------------------------------------------------------------- reconcile (pure)

def row(name, status="available", error=None):
    return {"name": name, "status": status, "meta": {"load_error": error} if error else {}}


def test_reconcile_server_is_the_truth_for_loaded():
    rows = [row("a"), row("b"), row("c", "archived"), row("d", error="boom"), row("e", error="old")]
    server = [{"id": "base"}, {"id": "a"}, {"id": "e"}, {"id": "external"}]
    got = {st.name: (st.kind, st.status, st.error, st.registered) for st in reconcile(rows, server, "base")}
    assert got == {
        "base": ("base", "loaded", "", True),
        "a": ("adapter", "loaded", "", True),
        "b": ("adapter", "available", "", True),
        "c": ("adapter", "archived", "", True),
        "d": ("adapter", "failed", "boom", True),
        "e": ("adapter", "loaded", "", True),  # loaded wins over an old error
        "external": ("adapter", "loaded", "", False),
    }


def test_reconcile_with_the_server_down():
    statuses = reconcile([row("a")], None, "base")
    assert [(st.name, st.status) for st in statuses] == [("base", "down"), ("a", "available")]
    assert not statuses[1].chat_ready and isinstance(statuses[0], ModelStatus)


# ---------------------------------------------------------------- manager against a scripted server

def test_load_unload_archive_restore_roundtrip(s, base, tmp_path, server):
    register(s, "good-v1", fake_adapter(tmp_path / "good", base))
    with AdapterManager(s, server.url) as m:
        assert m.status("good-v1").status == "available"
        m.load("good-v1")
        assert m.status("good-v1").status == "loaded"
        assert server.adapters == {"good-v1": str(tmp_path / "good")}
        m.load("good-v1")  # loading again is harmless (the server's 400 "already loaded")
        assert m.unload("good-v1") is True
        assert m.unload("good-v1") is False
        assert m.status("good-v1").status == "available"
        m.load("good-v1")
        m.archive("good-v1")
        assert m.status("good-v1").status == "archived" and "good-v1" not in server.adapters
        with pytest.raises(AdapterError, match="archived"):
            m.load("good-v1")
        m.restore("good-v1")
        assert m.status("good-v1").status == "loaded"


def test_a_refused_adapter_is_failed_with_its_error_and_never_reaches_the_server(s, base, tmp_path, server):
    register(s, "big-v1", fake_adapter(tmp_path / "big", base, rank=64), rank=64)
    with AdapterManager(s, server.url) as m:
        with pytest.raises(AdapterError, match="rank 64"):
            m.load("big-v1")
        st = m.status("big-v1")
        assert st.status == "failed" and "rank 64" in st.error
    assert not any(path == "/v1/load_lora_adapter" for _, path, _ in server.requests)
    with connect(s.db_path) as db:
        assert "rank 64" in get_adapter(db, "big-v1")["meta"]["load_error"]


def test_a_server_refusal_is_recorded_and_a_later_success_clears_it(s, base, tmp_path, server):
    register(s, "a-v1", fake_adapter(tmp_path / "a", base))
    server.refuse_loads = "CUDA out of memory"
    with AdapterManager(s, server.url) as m:
        with pytest.raises(AdapterError, match="refused adapter 'a-v1' \\(500\\): CUDA out of memory"):
            m.load("a-v1")
        assert (m.status("a-v1").status, m.status("a-v1").error) == \
            ("failed", "the model server refused adapter 'a-v1' (500): CUDA out of memory")
        server.refuse_loads = ""
        m.load("a-v1")
        assert (m.status("a-v1").status, m.status("a-v1").error) == ("loaded", "")
    with connect(s.db_path) as db:
        assert "load_error" not in get_adapter(db, "a-v1")["meta"]


def test_load_all_loads_every_non_archived_and_reports_failures(s, base, tmp_path, server):
    register(s, "a-v1", fake_adapter(tmp_path / "a", base))
    register(s, "b-v1", fake_adapter(tmp_path / "b", base))
    register(s, "gone-v1", tmp_path / "gone")
    register(s, "old-v1", fake_adapter(tmp_path / "old", base))
    with AdapterManager(s, server.url) as m:
        m.archive("old-v1")
        failures = m.load_all()
        assert set(failures) == {"gone-v1"} and "does not exist" in failures["gone-v1"]
        assert set(server.adapters) == {"a-v1", "b-v1"}
        server.adapters["old-v1"] = str(tmp_path / "old")  # archived elsewhere while still loaded
        assert m.unload_archived() == ["old-v1"]


def test_unknown_adapter_and_server_down(s, tmp_path):
    with AdapterManager(s, f"http://127.0.0.1:{free_port()}") as m:
        with pytest.raises(AdapterError, match="no adapter named"):
            m.load("nope")
        assert [st.status for st in m.statuses()] == ["down"]
        with pytest.raises(ServerUnavailable, match="tuneloop serve"):
            m.admin.models()


def test_admin_explains_a_server_without_runtime_loading(server):
    admin = VllmAdmin(server.url)
    server.RequestHandlerClass = type("NoLoad", (server.RequestHandlerClass,), {
        "do_POST": lambda self: self._json(404, {"detail": "Not Found"})})
    with pytest.raises(AdapterError, match="VLLM_ALLOW_RUNTIME_LORA_UPDATING"):
        admin.load("x", "/tmp")
    admin.close()
