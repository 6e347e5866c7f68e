"""Model families the trainer knows. A family is one module exposing
`Config` (`Config.from_hf(dict, where)`, `config.to_hf(extra)`,
`config.shape()` for the memory estimate, `config.max_sequence()`,
`config.describe()`), `Model` (a torch module with
`forward(ids, budgets, warmup)` doing skip.py's masked compute and a
`grad_checkpoint` switch), `to_hf_state(model)` and
`from_hf_state(model, tensors, where)`. Adding a family is one more module
and its model_type values here."""

from . import llama, opt

FAMILIES = {"opt": opt, "llama": llama, "mistral": llama, "qwen2": llama}


def family_of(config_dict, where):
    kind = config_dict.get("model_type")
    if kind not in FAMILIES:
        raise ValueError(f"{where}: model_type {kind!r} is not one the trainer knows ({', '.join(FAMILIES)})")
    return FAMILIES[kind]
