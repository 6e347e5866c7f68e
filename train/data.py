"""Training and held-out windows from a token file (tokens.py).

Two layouts, as the token file's `kind` says:

- "text" (the Brown corpus): one stream per split without BOS or EOS. A
  window is [BOS] + T-1 consecutive tokens (T tokens when the model adds no
  BOS), every position after the BOS a loss target -- the windows `skipdecode
  eval` cuts, so the trainer's held-out perplexity is the engine's.
- "documents" (--data): documents packed end to end, each already carrying
  its BOS and EOS (tokenize.ts); a window is T consecutive tokens of that
  stream, which may span a document boundary (attention is not masked there:
  the usual packing), and only the positions the loss mask marks are scored.

Training windows start at random offsets drawn from the step's generator;
held-out windows are consecutive and non-overlapping.
"""

import numpy as np
import torch

import policy


class Data:
    def __init__(self, tok, seq):
        self.kind = tok["kind"]
        self.bos = tok["bos_id"] if tok["adds_bos"] else None
        self.seq = seq
        # uint32 ids and uint8 masks, mapped from the token file; windows are copied out per batch
        self.train_ids, self.train_mask = tok["train"]["ids"], tok["train"]["mask"]
        self.held_ids, self.held_mask = tok["heldout"]["ids"], tok["heldout"]["mask"]
        self.per = seq - 1 if self.kind == "text" and self.bos is not None else seq
        if len(self.train_ids) < self.per + (self.kind == "text"):
            raise ValueError(f"the training split has {len(self.train_ids)} tokens, fewer than one --seq {seq} window")
        if len(self.held_ids) < self.per:
            raise ValueError(f"the held-out split has {len(self.held_ids)} tokens, fewer than one window of {self.per}")

    @property
    def masked(self):
        """Whether the loss needs the mask (documents); text windows score every target."""
        return self.kind == "documents"

    def batch(self, rng, n, num_layers, a):
        """(tokens (n,T), loss mask of the targets (n,T-1) or None, budgets (n,T)) for one step."""
        T = self.seq
        last = len(self.train_ids) - self.per if self.kind == "text" else len(self.train_ids) - T + 1
        starts = rng.integers(0, last, size=n)
        x = np.empty((n, T), dtype=np.int64)
        mask = None if not self.masked else np.empty((n, T - 1), dtype=bool)
        for i, s in enumerate(starts):
            if self.kind == "text" and self.bos is not None:
                x[i, 0] = self.bos
                x[i, 1:] = self.train_ids[s:s + T - 1]
            else:
                x[i] = self.train_ids[s:s + T]
            if mask is not None:
                mask[i] = self.train_mask[s + 1:s + T]
        budgets = []
        for _ in range(n):
            if a.policy == "skip":
                b, _ = policy.sequence_budgets(rng, num_layers, T, a.warmup_layers, a.max_speedup, a.full_frac)
            else:
                b = [num_layers] * T
            budgets.append(b)
        return (torch.from_numpy(x), None if mask is None else torch.from_numpy(mask),
                torch.tensor(budgets, dtype=torch.long))

    def heldout(self, n=None):
        """[(window ids, scored-target mask or None)]: consecutive windows of
        the held-out split, at most n (None: all)."""
        k = len(self.held_ids) // self.per
        if n is not None:
            k = min(k, n)
        out = []
        for i in range(k):
            ids = self.held_ids[i * self.per:(i + 1) * self.per]
            if self.kind == "text" and self.bos is not None:
                ids = np.concatenate([[self.bos], ids])
            mask = self.held_mask[i * self.per + 1:(i + 1) * self.per].astype(bool) if self.masked else None
            out.append((np.asarray(ids, dtype=np.int64), mask))
        return out
