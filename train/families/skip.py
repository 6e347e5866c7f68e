"""SkipDecode's masked forward, shared by the family modules.

Skipping (docs/DESIGN.md "The method, precisely"): a position with budget b
of L layers and w warm-up layers computes layers 0..w-1 and L-(b-w)..L-1
(all of them when b = L). Budgets along a sequence are non-increasing, so a
position that skips layer l is only ever attended to at layer l by later
positions that skip it too. An ordinary causal forward per layer followed by
h = where(computes(l, pos), block(h), h) is therefore exactly what the
engine computes: the keys/values a computing query reads were all computed.
"""

import torch
from torch.utils.checkpoint import checkpoint


def computes(num_layers, budgets, warmup):
    """Bool mask (L, B, T): does position (b, t) compute layer l?
    budgets (B, T) int, warmup (B,) or int."""
    L = num_layers
    layer = torch.arange(L).view(L, 1, 1)
    b = budgets.unsqueeze(0)
    w = warmup.view(1, -1, 1) if torch.is_tensor(warmup) else warmup
    return (b >= L) | (layer < w) | (layer >= L - (b - w))


def run_layers(layers, h, budgets, warmup, grad_checkpoint, *args):
    """h through every block with the masked-forward rule; `args` go to each
    block after h. grad_checkpoint: keep only each block's input for the
    backward pass and recompute the block there (less memory, one more
    forward)."""
    L = len(layers)
    mask = None if budgets is None else computes(L, budgets.cpu(), warmup).to(h.device)
    for l, blk in enumerate(layers):
        if grad_checkpoint and torch.is_grad_enabled():
            y = checkpoint(blk, h, *args, use_reentrant=False)
        else:
            y = blk(h, *args)
        h = y if mask is None else torch.where(mask[l].unsqueeze(-1), y, h)
    return h
