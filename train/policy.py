"""SkipDecode budget policies, as lib/generation/policy.ts computes them (same rounding,
same forSpeedup choice), and the per-sequence draw used in skip-aware
training."""

import math
from functools import lru_cache


def _round(x):
    # JavaScript's Math.round: halves go up
    return math.floor(x + 0.5)


def linear_at(step, num_layers, max_layers, min_layers, span):
    """lib/generation/policy.ts SkipPolicy.linear(...).layersAt(step)."""
    t = min(step, span) / span
    b = _round(min_layers + (max_layers - min_layers) * (1 - t))
    return min(max_layers, max(min_layers, b))


def _mean(num_layers, mx, mn, span):
    return sum(linear_at(i, num_layers, mx, mn, span) for i in range(span)) / span


@lru_cache(maxsize=None)
def for_speedup(speedup, num_layers, span, warmup):
    """(max_layers, min_layers) of SkipPolicy.forSpeedup(speedup, {numLayers, span, warmupLayers})."""
    lo = max(1, warmup)
    if speedup < 1 or speedup > num_layers / lo + 1e-9:
        raise ValueError(f"speedup must be in [1, {num_layers / lo:g}] for {num_layers} layers with "
                         f"{warmup} warm-up layer(s), got {speedup}")
    if speedup == 1:
        return num_layers, num_layers
    target = num_layers / speedup
    cands, best_err = [], math.inf
    for mx in range(lo, num_layers + 1):
        for mn in range(lo, mx + 1):
            err = abs(_mean(num_layers, mx, mn, span) - target)
            best_err = min(best_err, err)
            cands.append((err, mx, mn))
    cands = [c for c in cands if c[0] <= best_err + 0.25]
    want = min(num_layers, 1.5 * target)
    cands.sort(key=lambda c: (abs(c[1] - want), c[0], -c[2]))
    _, mx, mn = cands[0]
    return mx, mn


def sequence_budgets(rng, num_layers, seq_len, warmup, max_speedup, full_frac):
    """Draw one training sequence's budgets (a list of seq_len ints) the way
    generation assigns them: a context at full depth, then a generated part
    whose i-th position gets layersAt(i) of a linear policy chosen by
    forSpeedup for a drawn speedup and span. With probability full_frac (or
    when max_speedup is 1) the whole sequence runs at full depth."""
    L = num_layers
    if max_speedup <= 1 or rng.random() < full_frac:
        return [L] * seq_len, 1.0
    # speedup on a 0.25 grid in (1, max_speedup] (the grid keeps the forSpeedup cache small)
    steps = int(round((max_speedup - 1) / 0.25))
    s = 1 + 0.25 * int(rng.integers(1, steps + 1)) if steps >= 1 else max_speedup
    s = min(s, max_speedup)
    context = int(rng.integers(1, max(2, seq_len // 2) + 1))
    gen = seq_len - context
    if gen < 1:
        return [L] * seq_len, 1.0
    span = int(rng.integers(max(1, gen // 2), gen + 1))
    mx, mn = for_speedup(s, L, span, warmup)
    return [L] * context + [linear_at(i, L, mx, mn, span) for i in range(gen)], s
