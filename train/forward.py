#!/usr/bin/env python3
"""The trainer's masked forward on an exported folder, for test/train.test.ts.

    /usr/bin/python3 train/forward.py DIR < request.json > logits.f32

request.json: {"ids": [[...], ...], "budgets": [[...], ...], "warmup": [w, ...]}
(one row per sequence, all the same length). Writes float32 logits, row-major
(sequences x positions x vocab), computed in float64 from the exported
weights exactly as stored (16-bit values widened)."""

import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import torch  # noqa: E402

import safetensors_io  # noqa: E402
from families import family_of  # noqa: E402


def main():
    folder = sys.argv[1]
    with open(os.path.join(folder, "config.json")) as f:
        cfg = json.load(f)
    fam = family_of(cfg, folder)
    model = fam.Model(fam.Config.from_hf(cfg, folder))
    single = os.path.join(folder, "model.safetensors")
    tensors = (safetensors_io.read(single) if os.path.isfile(single)
               else safetensors_io.read_sharded(os.path.join(folder, "model.safetensors.index.json")))
    fam.from_hf_state(model, tensors, folder)
    model.double().eval()
    req = json.load(sys.stdin)
    ids = torch.tensor(req["ids"], dtype=torch.long)
    budgets = torch.tensor(req["budgets"], dtype=torch.long)
    warmup = torch.tensor(req["warmup"], dtype=torch.long)
    with torch.no_grad():
        logits = model(ids, budgets, warmup)
    sys.stdout.buffer.write(logits.float().contiguous().numpy().tobytes())


if __name__ == "__main__":
    main()
