"""The vLLM command line and environment built from settings (serving/vllm_args.py)."""

from __future__ import annotations

import sys

import pytest

from serving.vllm_args import build_vllm_command, cpu_has_native_bf16, resolve_target, server_url
from serving_helpers import make_settings


def flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


@pytest.fixture
def s(tmp_path):
    return make_settings(tmp_path / "data", tmp_path / "model", max_loras=2, max_cpu_loras=8, max_lora_rank=32,
                         max_model_len=1024, kv_cache_gib=3, vllm_port=9001)


def test_cpu_command_has_model_lora_limits_and_loopback(s, tmp_path):
    cmd = build_vllm_command(s, target="cpu")
    argv = cmd.argv
    assert argv[:3] == [sys.executable, "-m", "vllm.entrypoints.openai.api_server"]
    assert flag(argv, "--model") == str(tmp_path / "model")
    assert flag(argv, "--served-model-name") == "base"
    assert flag(argv, "--host") == "127.0.0.1"
    assert flag(argv, "--port") == "9001"
    assert "--enable-lora" in argv
    assert (flag(argv, "--max-loras"), flag(argv, "--max-cpu-loras"), flag(argv, "--max-lora-rank")) == ("2", "8", "32")
    assert flag(argv, "--max-model-len") == "1024"
    assert "--tensor-parallel-size" not in argv and "--lora-modules" not in argv
    assert cmd.env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    assert cmd.env["VLLM_CPU_KVCACHE_SPACE"] == "3"
    assert cmd.url == "http://127.0.0.1:9001"
    assert "VLLM_CPU_KVCACHE_SPACE=3" in cmd.shell()


def test_reserved_cores_setting_reaches_the_environment(tmp_path):
    s = make_settings(tmp_path / "d", tmp_path / "m", vllm_cpu_reserved_cores=0)
    assert build_vllm_command(s, target="cpu").env["VLLM_CPU_NUM_OF_RESERVED_CPU"] == "0"
    s = make_settings(tmp_path / "d", tmp_path / "m", vllm_cpu_reserved_cores=None)
    assert "VLLM_CPU_NUM_OF_RESERVED_CPU" not in build_vllm_command(s, target="cpu").env


def test_gpu_command_has_tensor_parallel_and_no_cpu_env(tmp_path):
    s = make_settings(tmp_path / "d", tmp_path / "m", tensor_parallel_size=2, gpu_memory_utilization=0.5)
    cmd = build_vllm_command(s, target="gpu", port=9100, python="/usr/bin/python3")
    assert cmd.argv[0] == "/usr/bin/python3"
    assert flag(cmd.argv, "--tensor-parallel-size") == "2"
    assert flag(cmd.argv, "--gpu-memory-utilization") == "0.5"
    assert flag(cmd.argv, "--port") == "9100"
    assert not any(k.startswith("VLLM_CPU") for k in cmd.env)


def test_served_name_defaults_to_the_model_folder(tmp_path):
    s = make_settings(tmp_path / "d", tmp_path / "SmolLM2-135M-Instruct", base_model_name="")
    assert flag(build_vllm_command(s).argv, "--served-model-name") == "smollm2-135m-instruct"


def test_max_cpu_loras_never_below_max_loras(tmp_path):
    s = make_settings(tmp_path / "d", tmp_path / "m", max_loras=4, max_cpu_loras=4)
    assert flag(build_vllm_command(s).argv, "--max-cpu-loras") == "4"


def test_server_url_local_or_external(tmp_path):
    assert server_url(make_settings(tmp_path, tmp_path, vllm_port=8123)) == "http://127.0.0.1:8123"
    assert server_url(make_settings(tmp_path, tmp_path, vllm_url="http://gpu:8000/v1/")) == "http://gpu:8000"


def test_target_explicit_or_installed_build(tmp_path):
    assert resolve_target(make_settings(tmp_path, tmp_path, vllm_target="gpu")) == "gpu"
    assert resolve_target(make_settings(tmp_path, tmp_path)) == "cpu"  # vllm-cpu is what this venv has


def test_dtype_float32_on_cpus_without_native_bf16_unless_set(tmp_path):
    s = make_settings(tmp_path / "d", tmp_path / "m")
    assert flag(build_vllm_command(s, target="cpu", native_bf16=False).argv, "--dtype") == "float32"
    assert "--dtype" not in build_vllm_command(s, target="cpu", native_bf16=True).argv
    assert "--dtype" not in build_vllm_command(s, target="gpu", native_bf16=False).argv
    s = make_settings(tmp_path / "d", tmp_path / "m", vllm_dtype="bfloat16")
    assert flag(build_vllm_command(s, target="cpu", native_bf16=False).argv, "--dtype") == "bfloat16"


def test_native_bf16_from_cpu_flags():
    assert not cpu_has_native_bf16("processor : 0\nflags : fpu sse avx2 fma\n")
    assert cpu_has_native_bf16("flags : avx2 avx512f avx512_bf16\n")
    assert cpu_has_native_bf16("flags : avx2 amx_bf16 amx_tile\n")
