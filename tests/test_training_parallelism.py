"""Several GPUs on one machine: the DDP-or-FSDP rule, what it reads from a model folder, the FSDP command, and
the recipe's FSDP mode (one dtype per FSDP unit, the gathered adapter written by the first process).

accelerate refuses FSDP on CPUs (`--cpu` and `--use_fsdp` exclude each other, and its FSDP plugin refuses
sync_module_states on CPU), so no FSDP run happens here: the command is checked with accelerate's own parser
and the environment it gives the training processes.

Run: .venv/bin/python -m pytest tests/test_training_parallelism.py -q
"""

from __future__ import annotations

import json

import pytest
import torch

from store.settings import Settings
from training import launch, parallelism, ray_backend, recipe
from training.config import RunConfig
from training.parallelism import Plan
from training_support import make_tiny_model

GIB = 2**30


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny-llama")


# --- the rule (pure) ---

def test_one_gpu_or_none_is_one_process():
    for gpus in (0, 1):
        assert parallelism.choose(params=70 * 10**9, gpus=gpus, gpu_memory=80 * GIB, override="fsdp")[0] == "single"


@pytest.mark.parametrize("params,memory_gib,strategy", [
    (7 * 10**9, 80, "ddp"),      # 14 GB of bf16 weights: 16% of an 80 GiB GPU
    (70 * 10**9, 80, "fsdp"),    # 140 GB: more than the GPU
    (8 * 10**9, 24, "fsdp"),     # 16 GB: 62% of a 24 GiB GPU
    (135 * 10**6, 24, "ddp"),    # the default model
])
def test_fsdp_once_the_bf16_weights_would_take_over_the_share_of_one_gpu(params, memory_gib, strategy):
    assert parallelism.choose(params=params, gpus=4, gpu_memory=memory_gib * GIB)[0] == strategy


def test_the_boundary_is_the_share_of_one_gpu():
    memory = 80 * GIB
    at_limit = int(parallelism.WEIGHT_SHARE * memory) // parallelism.BF16_BYTES
    assert parallelism.choose(params=at_limit, gpus=2, gpu_memory=memory)[0] == "ddp"
    strategy, reason = parallelism.choose(params=at_limit + 1, gpus=2, gpu_memory=memory)
    assert strategy == "fsdp" and "40%" in reason


def test_the_override_wins_over_the_rule():
    assert parallelism.choose(params=135 * 10**6, gpus=2, gpu_memory=80 * GIB, override="fsdp")[0] == "fsdp"
    assert parallelism.choose(params=70 * 10**9, gpus=2, gpu_memory=80 * GIB, override="ddp")[0] == "ddp"
    with pytest.raises(ValueError, match="multi_gpu must be one of"):
        parallelism.choose(params=1, gpus=2, gpu_memory=GIB, override="zero3")


def test_unknown_size_or_memory_keeps_ddp():
    strategy, reason = parallelism.choose(params=70 * 10**9, gpus=2, gpu_memory=None)
    assert strategy == "ddp" and "memory is unknown" in reason
    strategy, reason = parallelism.choose(params=None, gpus=2, gpu_memory=80 * GIB)
    assert strategy == "ddp" and "size is unknown" in reason
    assert parallelism.choose(params=None, gpus=2, gpu_memory=None, override="fsdp")[0] == "fsdp"


def test_a_preference_phase_keeps_ddp_even_when_fsdp_is_asked_for():
    for override in ("auto", "fsdp"):
        assert parallelism.choose(params=70 * 10**9, gpus=4, gpu_memory=80 * GIB, override=override,
                                  preference=True)[0] == "ddp"


# --- what the rule reads from a model folder ---

def test_parameter_count_from_the_safetensors_headers_equals_the_models(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    for tied in (True, False):
        torch.manual_seed(0)
        model = LlamaForCausalLM(LlamaConfig(vocab_size=260, hidden_size=32, intermediate_size=64,
                                             num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                             tie_word_embeddings=tied))
        expected = sum(p.numel() for p in model.parameters())  # a tied head counted once, as it is saved
        one, sharded = tmp_path / f"one-{tied}", tmp_path / f"sharded-{tied}"
        model.save_pretrained(one)
        model.save_pretrained(sharded, max_shard_size="20KB")
        assert len(list(sharded.glob("*.safetensors"))) > 1
        assert parallelism.count_parameters(one) == expected
        assert parallelism.count_parameters(sharded) == expected
        # The same weights in another layout beside them are not counted twice.
        (one / "consolidated.safetensors").write_bytes((one / "model.safetensors").read_bytes())
        assert parallelism.count_parameters(one) == expected
        # Without the weights, config.json's estimate: exact for a Llama (no biases).
        config = json.loads((one / "config.json").read_text())
        assert parallelism.estimate_parameters(config) == expected


def test_parameter_count_falls_back_to_the_config_and_knows_nothing_of_a_hub_id(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "hidden_size": 4096, "intermediate_size": 14336,
        "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256,
        "tie_word_embeddings": False}))
    assert parallelism.count_parameters(tmp_path) == 8_030_261_248  # Llama 3.1 8B
    (tmp_path / "model.safetensors").write_bytes(b"\xff" * 16)  # not a safetensors file: the estimate again
    assert parallelism.count_parameters(tmp_path) == 8_030_261_248
    assert parallelism.count_parameters("Qwen/Qwen2.5-7B-Instruct") is None
    assert parallelism.estimate_parameters({"architectures": ["LlamaForCausalLM"]}) is None


def test_decoder_layer_class_from_the_architecture():
    assert parallelism.decoder_layer_class({"architectures": ["LlamaForCausalLM"]}) == "LlamaDecoderLayer"
    assert parallelism.decoder_layer_class({"architectures": ["Qwen2ForCausalLM"]}) == "Qwen2DecoderLayer"
    assert parallelism.decoder_layer_class({"architectures": ["GPT2LMHeadModel"]}) == "GPT2Block"
    assert parallelism.decoder_layer_class({"architectures": ["BertForMaskedLM"]}) is None
    assert parallelism.decoder_layer_class({}) is None


@pytest.mark.parametrize("arch", ["LlamaForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM", "MistralForCausalLM",
                                  "Gemma2ForCausalLM", "Phi3ForCausalLM", "GPT2LMHeadModel", "GPTNeoXForCausalLM",
                                  "GPTJForCausalLM", "BloomForCausalLM"])
def test_the_derived_class_is_the_one_transformers_keeps_whole(arch):
    """FSDP wraps the class the model itself names as its unsplittable block (accelerate's and peft's default)."""
    import transformers

    assert parallelism.decoder_layer_class({"architectures": [arch]}) in getattr(transformers, arch)._no_split_modules


def test_plan_for_a_model_folder(tiny_model):
    fsdp = parallelism.plan_for(tiny_model, gpus=2, gpu_memory=1000)
    assert (fsdp.strategy, fsdp.layer_cls) == ("fsdp", "LlamaDecoderLayer")
    ddp = parallelism.plan_for(tiny_model, gpus=2, gpu_memory=80 * GIB)
    assert (ddp.strategy, ddp.layer_cls) == ("ddp", None)
    assert parallelism.plan_for(tiny_model, gpus=1, gpu_memory=None).strategy == "single"


# --- the command ---

def _fsdp_plan(layer_cls="LlamaDecoderLayer") -> Plan:
    return Plan("fsdp", "FSDP: test", layer_cls)


def test_accelerate_reads_the_fsdp_command_as_meant(monkeypatch):
    """accelerate's own parser and the environment it would give each training process (no GPU needed)."""
    from accelerate.commands.launch import launch_command_parser
    from accelerate.utils.launch import prepare_multi_gpu_env

    cmd = launch.launch_command(3, data_dir="/d", gpus=4, plan=_fsdp_plan(), python="py", main_process_port=29611)
    assert cmd[:3] == ["py", "-m", "accelerate.commands.launch"] and "--multi_gpu" not in cmd
    args = launch_command_parser().parse_args(cmd[3:])
    assert (args.use_fsdp, args.multi_gpu, args.num_processes, args.module) == (True, False, 4, True)
    assert (args.training_script, args.training_script_args) == ("training.worker", ["3", "--data-dir", "/d"])
    env = prepare_multi_gpu_env(args)
    assert {k: env[k] for k in ("ACCELERATE_USE_FSDP", "FSDP_VERSION", "FSDP_SHARDING_STRATEGY",
                                "FSDP_AUTO_WRAP_POLICY", "FSDP_TRANSFORMER_CLS_TO_WRAP", "FSDP_USE_ORIG_PARAMS",
                                "FSDP_CPU_RAM_EFFICIENT_LOADING", "FSDP_SYNC_MODULE_STATES",
                                "FSDP_STATE_DICT_TYPE")} == {
        "ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "1", "FSDP_SHARDING_STRATEGY": "FULL_SHARD",
        "FSDP_AUTO_WRAP_POLICY": "TRANSFORMER_BASED_WRAP", "FSDP_TRANSFORMER_CLS_TO_WRAP": "LlamaDecoderLayer",
        "FSDP_USE_ORIG_PARAMS": "true", "FSDP_CPU_RAM_EFFICIENT_LOADING": "true", "FSDP_SYNC_MODULE_STATES": "true",
        "FSDP_STATE_DICT_TYPE": "FULL_STATE_DICT"}
    assert args.main_process_port == 29611
    # The recipe sees the FSDP mode in the environment accelerate gives it.
    assert not recipe.fsdp_enabled()
    monkeypatch.setenv("ACCELERATE_USE_FSDP", env["ACCELERATE_USE_FSDP"])
    assert recipe.fsdp_enabled()


def test_without_a_layer_class_accelerate_wraps_the_models_own_blocks():
    from accelerate.commands.launch import launch_command_parser
    from accelerate.utils.launch import prepare_multi_gpu_env

    cmd = launch.launch_command(3, data_dir="/d", gpus=2, plan=_fsdp_plan(None), python="py")
    env = prepare_multi_gpu_env(launch_command_parser().parse_args(cmd[3:]))
    assert env["ACCELERATE_USE_FSDP"] == "true" and "FSDP_TRANSFORMER_CLS_TO_WRAP" not in env


def test_ddp_stays_as_it_was():
    ddp = launch.launch_command(7, data_dir="/data", gpus=4, plan=Plan("ddp", "DDP: test"), python="/py")
    assert ddp == launch.launch_command(7, data_dir="/data", gpus=4, python="/py")
    assert ddp[3:5] == ["--multi_gpu", "--num_machines"] and "--use_fsdp" not in ddp
    assert launch.launch_command(7, data_dir="/data", gpus=1, plan=_fsdp_plan(), python="/py") == [
        "/py", "-m", "training.worker", "7", "--data-dir", "/data"]


def test_a_local_run_and_a_ray_job_decide_by_the_same_rule(tiny_model, tmp_path):
    sft = {"id": 5, "config": RunConfig(base_model=str(tiny_model)).to_dict()}
    dpo = {"id": 6, "config": RunConfig(base_model=str(tiny_model), method="sft+dpo").to_dict()}
    s = Settings(_env_file=None, data_dir=tmp_path, ray_num_gpus=4.0, ray_gpu_memory_gib=1e-6)
    assert launch.run_plan(s, sft, gpus=4, gpu_memory=1000).strategy == "fsdp"
    assert launch.run_plan(s, dpo, gpus=4, gpu_memory=1000).strategy == "ddp"
    assert launch.run_plan(s.model_copy(update={"multi_gpu": "ddp"}), sft, gpus=4, gpu_memory=1000).strategy == "ddp"
    gpus, plan = ray_backend.job_plan(s, sft)
    assert (gpus, plan.strategy, plan.layer_cls) == (4, "fsdp", "LlamaDecoderLayer")  # a whole count for accelerate
    entry = ray_backend.job_entrypoint(5, gpus=gpus, plan=plan)
    assert entry.startswith("python -m accelerate.commands.launch --use_fsdp --num_machines 1 --num_processes 4 ")
    assert "--fsdp_transformer_layer_cls_to_wrap LlamaDecoderLayer" in entry
    assert entry.endswith("--module training.worker 5 --job-bundle bundle.json")
    big = s.model_copy(update={"ray_gpu_memory_gib": 80.0})
    assert ray_backend.job_plan(big, sft)[1].strategy == "ddp"


def test_settings_read_the_override_and_the_workers_gpu_memory(monkeypatch):
    from pydantic import ValidationError

    s = Settings(_env_file=None)
    assert (s.multi_gpu, s.ray_gpu_memory_gib) == ("auto", 80.0)
    monkeypatch.setenv("TUNELOOP_MULTI_GPU", "fsdp")
    monkeypatch.setenv("TUNELOOP_RAY_GPU_MEMORY_GIB", "40")
    s = Settings(_env_file=None)
    assert (s.multi_gpu, s.ray_gpu_memory_gib) == ("fsdp", 40.0)
    monkeypatch.setenv("TUNELOOP_MULTI_GPU", "zero3")
    with pytest.raises(ValidationError, match="multi_gpu"):
        Settings(_env_file=None)


# --- the recipe under FSDP ---

def _bf16_model(monkeypatch, tiny_model):
    """The model as load_model builds it on a bf16 GPU (CPU here: the dtype rule is what is checked)."""
    monkeypatch.setattr(recipe, "gpu_speedups", lambda device, bf16=None: recipe.GpuSpeedups(torch.bfloat16, "sdpa",
                                                                                           False))
    return recipe.load_model(RunConfig(base_model=str(tiny_model), lora_rank=8, lora_alpha=16))


def test_under_fsdp_every_weight_starts_in_one_dtype(monkeypatch, tiny_model):
    """FSDP flattens each unit's weights into one tensor of one dtype: LoRA weights in the base's bf16, not fp32."""
    ddp = _bf16_model(monkeypatch, tiny_model)
    assert {p.dtype for p in ddp.parameters() if p.requires_grad} == {torch.float32}  # peft's fp32 LoRA weights
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    fsdp = _bf16_model(monkeypatch, tiny_model)
    assert {p.dtype for p in fsdp.parameters()} == {torch.bfloat16}
    assert any(p.requires_grad for p in fsdp.parameters())


def test_only_the_first_process_keeps_the_gathered_adapter(tiny_model):
    model = recipe.load_model(RunConfig(base_model=str(tiny_model), lora_rank=8, lora_alpha=16))
    full = model.state_dict()

    class Accelerator:
        is_main_process = False

        def get_state_dict(self, wrapped):
            assert wrapped == "the FSDP-wrapped model"
            return full

    class Trainer:
        accelerator, model = Accelerator(), "the FSDP-wrapped model"

    trainer = Trainer()
    recipe.gather_adapter(model, trainer)
    assert getattr(model, recipe.GATHERED_ADAPTER, None) is None
    trainer.accelerator.is_main_process = True
    recipe.gather_adapter(model, trainer)
    kept = getattr(model, recipe.GATHERED_ADAPTER)
    assert kept and set(kept) == {k for k in full if "lora_" in k} and len(kept) < len(full)


def test_the_adapter_written_under_fsdp_is_the_gathered_one(monkeypatch, tiny_model, tmp_path):
    from safetensors.torch import load_file

    plain = recipe.load_model(RunConfig(base_model=str(tiny_model), lora_rank=8, lora_alpha=16))
    own = load_file(recipe.write_adapter(plain, str(tiny_model), tmp_path / "plain") / "adapter_model.safetensors")
    lora_a = {k: v for k, v in plain.state_dict().items() if "lora_A" in k}
    assert len(own) == 2 * len(lora_a)
    assert all(torch.equal(own[k.replace(".default", "")], v) for k, v in lora_a.items())  # its own weights
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    model = recipe.load_model(RunConfig(base_model=str(tiny_model), lora_rank=8, lora_alpha=16))
    with pytest.raises(RuntimeError, match="gathers the sharded adapter"):
        recipe.write_adapter(model, str(tiny_model), tmp_path / "refused")
    # What FSDP's full state dict holds (the model's own names), with values the model's shards do not have.
    gathered = {k: torch.full_like(v, 0.5) for k, v in model.state_dict().items() if "lora_" in k}
    setattr(model, recipe.GATHERED_ADAPTER, gathered)
    out = recipe.write_adapter(model, str(tiny_model), tmp_path / "adapter")
    saved = load_file(out / "adapter_model.safetensors")
    assert len(saved) == len(gathered) and all(torch.all(v == 0.5) for v in saved.values())
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == str(tiny_model)
