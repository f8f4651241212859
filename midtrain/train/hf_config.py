"""litgpt model configs as Hugging Face ``config.json`` (pure logic, no torch): the architectures midtrain
exports and branches from, and the check that a Hugging Face folder holds the configured model.

Supported: GPT-NeoX (Pythia: ``GPTNeoXForCausalLM``) and Llama (``LlamaForCausalLM``: Llama 2, Llama 3.x with its
RoPE scaling, TinyLlama, SmolLM, and any litgpt config of that shape). Each writes both the legacy RoPE keys
(``rotary_pct``, ``rope_theta``) that ``transformers`` 4 reads and the ``rope_parameters`` that 5 reads.
"""

from __future__ import annotations

from collections.abc import Mapping

from midtrain.errors import ConfigError

NEOX, LLAMA = "gpt_neox", "llama"
LLAMA3_ROPE = {"factor", "low_freq_factor", "high_freq_factor", "original_max_seq_len"}
"""litgpt's ``rope_adjustments`` of Llama 3.1/3.2, which ``transformers`` calls the ``llama3`` RoPE type."""


def family(config, flag: str) -> str:
    """Which Hugging Face architecture a litgpt ``Config`` is, or a ConfigError saying why it has none."""
    problems = []
    if config.mlp_class_name == "GptNeoxMLP" and config.norm_class_name == "LayerNorm":
        if not config.bias:
            problems.append("bias false (GPT-NeoX has biases)")
        if config.n_query_groups != config.n_head:
            problems.append("grouped-query attention (GPT-NeoX has none)")
        name = NEOX
    elif config.mlp_class_name == "LLaMAMLP" and config.norm_class_name == "RMSNorm":
        if config.rotary_percentage != 1.0:
            problems.append(f"rotary_percentage {config.rotary_percentage} (Llama rotates whole heads)")
        if config.parallel_residual:
            problems.append("parallel_residual (Llama is sequential)")
        if config.rope_adjustments and set(config.rope_adjustments) != LLAMA3_ROPE:
            problems.append(f"rope_adjustments {config.rope_adjustments} (only Llama 3's RoPE scaling is exported)")
        if config.attn_bias:
            problems.append("attn_bias (query/key/value biases without an output bias, as Qwen2 has)")
        name = LLAMA
    else:
        raise ConfigError(f"{flag}: the model ({config.name}: {config.mlp_class_name}, {config.norm_class_name}) has "
                          "no Hugging Face conversion in midtrain: GPT-NeoX (Pythia) and Llama-shaped models are "
                          "exported. Convert others with litgpt's convert_from_litgpt.")
    for unsupported in ("sliding_window_size", "attention_logit_softcapping", "final_logit_softcapping"):
        if getattr(config, unsupported, None):
            problems.append(f"{unsupported} {getattr(config, unsupported)}")
    if config.norm_qk or config.scale_embeddings or config.post_attention_norm or config.post_mlp_norm:
        problems.append("norm_qk, scale_embeddings or post-norms")
    if config.shared_attention_norm or config.lm_head_bias:
        problems.append("a shared attention norm or an output bias (Falcon, Phi)")
    if problems:
        raise ConfigError(f"{flag}: the model ({config.name}) is {name}-shaped but has {'; '.join(problems)}, which "
                          f"the {name} architecture of transformers cannot express. Export is refused rather than "
                          "written wrong.")
    return name


def hf_config(config, bos_id: int | None, eos_id: int | None) -> dict:
    """``config.json`` for the model (float32 weights)."""
    kind = family(config, "export")
    rope = {"rope_type": "default", "rope_theta": float(config.rope_base),
            "partial_rotary_factor": float(config.rotary_percentage)}
    common = {"vocab_size": config.padded_vocab_size, "hidden_size": config.n_embd,
              "num_hidden_layers": config.n_layer, "num_attention_heads": config.n_head,
              "intermediate_size": config.intermediate_size, "max_position_embeddings": config.block_size,
              "bos_token_id": bos_id, "eos_token_id": eos_id, "tie_word_embeddings": False, "torch_dtype": "float32",
              "rope_parameters": rope, "rope_theta": float(config.rope_base), "use_cache": True}
    if kind == NEOX:
        act = "gelu_new" if config.gelu_approximate == "tanh" else "gelu"
        return {"architectures": ["GPTNeoXForCausalLM"], "model_type": NEOX, **common, "hidden_act": act,
                "layer_norm_eps": config.norm_eps, "use_parallel_residual": config.parallel_residual,
                "rotary_pct": config.rotary_percentage, "rotary_emb_base": config.rope_base,
                "attention_bias": True}
    if config.rope_adjustments:
        a = config.rope_adjustments
        scaling = {"rope_type": "llama3", "factor": float(a["factor"]), "low_freq_factor": float(a["low_freq_factor"]),
                   "high_freq_factor": float(a["high_freq_factor"]),
                   "original_max_position_embeddings": int(a["original_max_seq_len"])}
        common.update(rope_parameters={**scaling, "rope_theta": float(config.rope_base)}, rope_scaling=scaling)
    return {"architectures": ["LlamaForCausalLM"], "model_type": LLAMA, **common, "hidden_act": "silu",
            "rms_norm_eps": config.norm_eps, "num_key_value_heads": config.n_query_groups,
            "head_dim": config.head_size, "attention_bias": bool(config.bias), "mlp_bias": bool(config.bias)}


def _rope(hf: Mapping) -> tuple[float | None, float | None]:
    """(theta, rotary fraction) from either spelling."""
    params = hf.get("rope_parameters") or {}
    if isinstance(params, Mapping) and "rope_theta" not in params and params:  # per-layer-type form
        params = next(iter(params.values())) if isinstance(next(iter(params.values())), Mapping) else {}
    theta = params.get("rope_theta", hf.get("rope_theta", hf.get("rotary_emb_base")))
    fraction = params.get("partial_rotary_factor", hf.get("partial_rotary_factor", hf.get("rotary_pct")))
    return theta, fraction


def check_hf_config(hf: Mapping, config, flag: str) -> None:
    """Refuse a Hugging Face folder whose ``config.json`` is another model than the configured one, naming the
    fields that differ (the weights would not fit, or compute something else)."""
    kind = family(config, flag)
    if hf.get("model_type") != kind:
        raise ConfigError(f"{flag}: its config.json is a {hf.get('model_type')!r} model, but the configured model "
                          f"({config.name}) is {kind}. Set --model_name (or --model_config) to the model the folder "
                          "holds.")
    theta, fraction = _rope(hf)
    expected = {"hidden_size": config.n_embd, "num_hidden_layers": config.n_layer,
                "num_attention_heads": config.n_head, "intermediate_size": config.intermediate_size,
                "rope theta": float(config.rope_base)}
    found = {"hidden_size": hf.get("hidden_size"), "num_hidden_layers": hf.get("num_hidden_layers"),
             "num_attention_heads": hf.get("num_attention_heads"), "intermediate_size": hf.get("intermediate_size"),
             "rope theta": None if theta is None else float(theta)}
    if kind == NEOX:
        expected.update({"rotary fraction": config.rotary_percentage,
                         "use_parallel_residual": config.parallel_residual})
        found.update({"rotary fraction": fraction, "use_parallel_residual": hf.get("use_parallel_residual", True)})
    else:
        expected["num_key_value_heads"] = config.n_query_groups
        found["num_key_value_heads"] = hf.get("num_key_value_heads", hf.get("num_attention_heads"))
    vocab = hf.get("vocab_size")
    if vocab is not None and not config.vocab_size <= vocab <= config.padded_vocab_size:
        expected["vocab_size"], found["vocab_size"] = config.padded_vocab_size, vocab
    differing = [f"{k} {found[k]!r} (config {expected[k]!r})" for k in expected if found.get(k) != expected[k]]
    if differing:
        raise ConfigError(f"{flag}: the folder's config.json does not match the configured model ({config.name}): "
                          f"{'; '.join(differing)}. Set --model_name (or --model_config) to the model it holds.")
