"""What the family modules share besides the masked forward (skip.py):
Hugging Face state-dict names and the initialisation of a model trained from
scratch."""

import math

import torch.nn as nn


def init_weights(model, residual_projections, num_layers):
    """GPT-2's initialisation: N(0, 0.02) for linear and embedding weights,
    zero biases, and N(0, 0.02 / sqrt(2 L)) for the projections that write
    into the residual stream."""

    def init(m):
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, 0.0, 0.02)

    model.apply(init)
    for lin in residual_projections:
        nn.init.normal_(lin.weight, 0.0, 0.02 / math.sqrt(2 * num_layers))


def to_hf_state(model, prefix):
    """{HF name: tensor}: `prefix` before every name but the head's; a tied
    head is not written (config.json says tied)."""
    return {k if k.startswith("lm_head.") else prefix + k: v for k, v in model.state_dict().items()}


def from_hf_state(model, tensors, prefixes, where):
    """Load HF tensors into `model`, their names under the first of `prefixes`
    whose token embedding is present (else the last); every missing or
    misshapen tensor is named."""
    prefix = next((p for p in prefixes if p + "embed_tokens.weight" in tensors), prefixes[-1])
    got, problems = {}, []
    for k, v in model.state_dict().items():
        name = k if k.startswith("lm_head.") else prefix + k
        t = tensors.get(name)
        if t is None:
            hint = " (config.json says tie_word_embeddings is false)" if k == "lm_head.weight" else ""
            problems.append(f"missing tensor {name}{hint}")
        elif tuple(t.shape) != tuple(v.shape):
            problems.append(f"tensor {name} has shape {list(t.shape)}, config.json implies {list(v.shape)}")
        else:
            got[k] = t
    if problems:
        raise ValueError(f"{where}: " + "; ".join(problems[:5]) + (" …" if len(problems) > 5 else ""))
    model.load_state_dict(got)
