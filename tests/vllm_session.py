"""One real vLLM server per test session, on the default model with one tiny trained adapter.

tests/conftest.py imports the fixture, and only it may: a session fixture imported into two test modules
is two fixtures to pytest, each started once (two vLLM servers). So every module that asks for
`vllm_stack` shares one server, and the suite starts vLLM once for them (about a minute on 2 cores). The adapter ("zorblax-v1", see
helpers_adapters) is trained before vLLM starts so the two never share the cores, registered, and
loaded at start.
"""

from __future__ import annotations

import pytest

from helpers_adapters import register, train_tiny_adapter
from serving_helpers import free_port, wait_for

SESSION_BASE = "smollm2-135m-instruct"
SESSION_ADAPTER = "zorblax-v1"
SESSION_KEY = "session-key"


@pytest.fixture(scope="session")
def vllm_stack(default_model_dir, tmp_path_factory):
    from serving.service import Serving
    from store.db import connect
    from store.settings import Settings

    data = tmp_path_factory.mktemp("vllm-session")
    s = Settings(_env_file=None, data_dir=data, base_model=str(default_model_dir), base_model_name=SESSION_BASE,
                 vllm_port=free_port(), api_key=SESSION_KEY)
    adapter_dir = train_tiny_adapter(default_model_dir, s.adapters_dir / SESSION_ADAPTER, rank=8)
    with connect(s.db_path) as db:
        register(db, s, SESSION_ADAPTER, adapter_dir)
    serving = Serving(s, poll_s=1.0)
    serving.start()
    try:
        assert wait_for(lambda: any(m.name == SESSION_ADAPTER and m.status == "loaded" for m in serving.models()),
                        120, 0.5)
        yield {"settings": s, "serving": serving, "base": SESSION_BASE, "adapter": SESSION_ADAPTER}
    finally:
        serving.stop()
