"""Model families the trainer knows. A family is one module exposing
`Config` (from/to a Hugging Face config.json dict), `Model` (a torch module
with `forward(ids, budgets, warmup)` doing skip-aware masked compute),
`to_hf_state(model)` and `from_hf_state(model, tensors, where)`. Adding a
family is one more module and one line here."""

from . import opt

FAMILIES = {"opt": opt}


def family_of(config_dict, where):
    kind = config_dict.get("model_type")
    if kind not in FAMILIES:
        raise ValueError(f"{where}: model_type {kind!r} is not one the trainer knows ({', '.join(FAMILIES)})")
    return FAMILIES[kind]
