#!/usr/bin/env python3
"""torch_peer.py — the PyTorch peer of cuda/dev/gpu_bench.c (run by bench/gpu.sh).

Greedy, KV-cached decode tokens/s of OPT-shaped random fp16 models at batch 1, 8
and 32, full decoding: the same work gpu_bench times (prompt of 32 tokens, </s>
then random ids, prefilled untimed; then N = 64 decode steps timed, each step's
argmax fed back as the next token). One warm-up run per cell, then --reps runs;
median ± std. Every model gets random weights made on the device (no files).

Implementations (--impls; default "hf,plain" where transformers imports, else "plain"):
  static transformers' generate() with cache_implementation="static", which
         compiles the forward pass (torch.compile; the first call takes about a
         minute per batch size) — the fastest PyTorch path on that machine. OPT
         has no static cache there, so the model is LlamaForCausalLM with the
         OPT shape's layers, hidden size, heads and vocabulary and intermediate
         size 2·ffn/3 (three MLP matrices holding the bytes of OPT's two): the
         same weight bytes per step. Decode time = time(generate N+1 tokens) −
         time(generate 1 token): the N decode steps, prefill excluded.
  hf     transformers' OPTForCausalLM built from an OPTConfig (pre-LN, tied head,
         default attention implementation), fp16: per step model.model(ids,
         past_key_values=cache) and lm_head on the last position, argmax.
  plain  a plain PyTorch OPT decoder (pre-LN, learned positions with offset 2,
         tied head) with a preallocated KV cache: F.layer_norm, one fused QKV
         F.linear, F.scaled_dot_product_attention, eager (no CUDA graphs, no compile).

  python3 bench/torch_peer.py [--models 125m,1.3b,6.7b] [--batches 1,8,32] [--prompt 32] [--new 64]
                              [--reps 3] [--impls hf,plain] [--budget-s 80] [--out FILE.json]
                              [--compare gpu_bench.json] [--quick] [--device cuda] [--dtype float16]

--budget-s is checked before every run: cells that would not fit are skipped and
listed. --compare prints gpu_bench's tokens/s next to these.
"""
import argparse
import json
import statistics
import sys
import time

import torch
import torch.nn.functional as F

SHAPES = {  # key: (name, layers, hidden, heads, ffn)
    "125m": ("opt-125m", 12, 768, 12, 3072),
    "1.3b": ("opt-1.3b", 24, 2048, 32, 8192),
    "6.7b": ("opt-6.7b", 32, 4096, 32, 16384),
    "tiny": ("tiny", 2, 64, 4, 128),  # for checking this script on a CPU
}
VOCAB, MAX_POS = 50272, 2048


class PlainOPT:
    """OPT decoder (pre-LN, final LN, tied head) with a preallocated KV cache."""

    def __init__(self, L, d, H, f, dev, dt):
        self.L, self.d, self.H, self.hd = L, d, H, d // H

        def u(shape, scale, shift=0.0):
            return torch.empty(shape, device=dev, dtype=dt).uniform_(-scale, scale).add_(shift)

        sd, sf = (3.0 / d) ** 0.5, (3.0 / f) ** 0.5
        self.embed = u((VOCAB, d), 1.0)
        self.pos = u((MAX_POS + 2, d), 0.5)
        self.lnf = (u((d,), 0.2, 1.0), u((d,), 0.1))
        self.layers = [
            dict(ln1=(u((d,), 0.2, 1.0), u((d,), 0.1)), qkv=(u((3 * d, d), sd), u((3 * d,), 0.1)),
                 o=(u((d, d), sd), u((d,), 0.1)), ln2=(u((d,), 0.2, 1.0), u((d,), 0.1)),
                 fc1=(u((f, d), sd), u((f,), 0.1)), fc2=(u((d, f), sf), u((d,), 0.1)))
            for _ in range(L)
        ]
        self.dev, self.dt = dev, dt

    def cache(self, B, S):
        shape = (self.L, B, self.H, S, self.hd)
        return (torch.empty(shape, device=self.dev, dtype=self.dt), torch.empty(shape, device=self.dev, dtype=self.dt))

    def forward(self, ids, pos0, cache):
        """ids [B, T] at positions pos0..pos0+T-1 -> logits of the last position [B, V]."""
        kc, vc = cache
        B, T = ids.shape
        d, H, hd = self.d, self.H, self.hd
        x = self.embed[ids] + self.pos[pos0 + 2 : pos0 + 2 + T]  # [B, T, d]
        for l, w in enumerate(self.layers):
            h = F.layer_norm(x, (d,), *w["ln1"])
            q, k, v = F.linear(h, *w["qkv"]).view(B, T, 3, H, hd).permute(2, 0, 3, 1, 4)  # each [B, H, T, hd]
            kc[l, :, :, pos0 : pos0 + T] = k
            vc[l, :, :, pos0 : pos0 + T] = v
            a = F.scaled_dot_product_attention(q, kc[l, :, :, : pos0 + T], vc[l, :, :, : pos0 + T], is_causal=T > 1)
            x = x + F.linear(a.transpose(1, 2).reshape(B, T, d), *w["o"])
            h = F.layer_norm(x, (d,), *w["ln2"])
            x = x + F.linear(F.relu(F.linear(h, *w["fc1"])), *w["fc2"])
        return F.linear(F.layer_norm(x[:, -1], (d,), *self.lnf), self.embed)


def plain_runner(model, B, P, N):
    cache = model.cache(B, P + N + 8)

    def prefill(ids):
        return model.forward(ids, 0, cache).argmax(-1, keepdim=True)

    def step(nxt, i):
        return model.forward(nxt, P + i, cache).argmax(-1, keepdim=True)

    return prefill, step


def build_hf(L, d, H, f, dev, dt):
    from transformers import OPTConfig, OPTForCausalLM

    cfg = OPTConfig(vocab_size=VOCAB, hidden_size=d, num_hidden_layers=L, ffn_dim=f, num_attention_heads=H,
                    max_position_embeddings=MAX_POS, word_embed_proj_dim=d, do_layer_norm_before=True, dropout=0.0,
                    attention_dropout=0.0, activation_dropout=0.0, pad_token_id=1, bos_token_id=2, eos_token_id=2)
    prev = torch.get_default_dtype()
    torch.set_default_dtype(dt)
    try:
        with torch.device(dev):  # init on the device: seconds, not minutes, for 6.7B
            model = OPTForCausalLM(cfg)
    finally:
        torch.set_default_dtype(prev)
    return model.to(device=dev, dtype=dt).eval()


def hf_runner(model, B, P, N):
    state = {}

    def head(out):
        state["cache"] = out.past_key_values
        return model.lm_head(out.last_hidden_state[:, -1]).argmax(-1, keepdim=True)

    def prefill(ids):
        return head(model.model(input_ids=ids, use_cache=True))

    def step(nxt, i):
        return head(model.model(input_ids=nxt, past_key_values=state["cache"], use_cache=True))

    return prefill, step


def build_static(L, d, H, f, dev, dt):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=d, intermediate_size=(2 * f) // 3, num_hidden_layers=L,
                      num_attention_heads=H, num_key_value_heads=H, max_position_embeddings=MAX_POS,
                      tie_word_embeddings=True, bos_token_id=2, eos_token_id=2, pad_token_id=1)
    prev = torch.get_default_dtype()
    torch.set_default_dtype(dt)
    try:
        with torch.device(dev):
            model = LlamaForCausalLM(cfg)
    finally:
        torch.set_default_dtype(prev)
    return model.to(device=dev, dtype=dt).eval()


def static_decode_s(model, ids, N):
    """Seconds of N decode steps of generate() with a static (compiled) cache."""
    def gen(n):
        sync(str(ids.device))
        t = time.perf_counter()
        model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n, do_sample=False,
                       cache_implementation="static", pad_token_id=1)
        sync(str(ids.device))
        return time.perf_counter() - t
    return gen(N + 1) - gen(1)


def sync(dev):
    if dev.startswith("cuda"):
        torch.cuda.synchronize()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="125m,1.3b,6.7b")
    ap.add_argument("--batches", default="1,8,32")
    ap.add_argument("--prompt", type=int, default=None)
    ap.add_argument("--new", type=int, default=None)
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--impls", default=None)
    ap.add_argument("--budget-s", type=float, default=None)
    ap.add_argument("--out", default=None)
    ap.add_argument("--compare", default=None, help="gpu_bench JSON to print side by side")
    ap.add_argument("--quick", action="store_true", help="prompt 16, 32 new tokens, 1 rep, budget 40 s")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="float16", choices=["float16", "bfloat16", "float32"])
    a = ap.parse_args()
    P = a.prompt or (16 if a.quick else 32)
    N = a.new or (32 if a.quick else 64)
    reps = a.reps or (1 if a.quick else 3)
    budget = a.budget_s or (40.0 if a.quick else 80.0)
    t_start = time.perf_counter()
    deadline = t_start + budget
    dev, dt = a.device, getattr(torch, a.dtype)
    if dev.startswith("cuda") and not torch.cuda.is_available():
        print("torch_peer: torch sees no CUDA device", file=sys.stderr)
        return 2
    impls = a.impls
    if impls is None:
        try:
            import transformers  # noqa: F401

            impls = "hf,plain"
        except Exception as e:  # noqa: BLE001
            print(f"torch_peer: transformers does not import ({e}); plain PyTorch only")
            impls = "plain"
    impls = [x.strip() for x in impls.split(",") if x.strip()]
    batches = [int(x) for x in a.batches.split(",")]
    name = torch.cuda.get_device_name(0) if dev.startswith("cuda") else dev
    print(f"# torch_peer: {name}, torch {torch.__version__}, {a.dtype}; prompt {P}, {N} decode steps timed, greedy, "
          f"full decoding; {reps} rep(s) after a warm-up, median ± std; budget {budget:.0f} s\n")
    results, skipped = [], []
    torch.manual_seed(0)
    for key in [k.strip() for k in a.models.split(",")]:
        mname, L, d, H, f = SHAPES[key]
        for impl in impls:
            if time.perf_counter() > deadline - 5:
                skipped.append(f"{mname} {impl}: time budget")
                continue
            t0 = time.perf_counter()
            try:
                builders = {"hf": build_hf, "static": build_static}
                model = builders[impl](L, d, H, f, dev, dt) if impl in builders else PlainOPT(L, d, H, f, dev, dt)
            except Exception as e:  # noqa: BLE001
                print(f"{mname} {impl}: could not build the model: {type(e).__name__}: {e}")
                skipped.append(f"{mname} {impl}: build failed")
                continue
            sync(dev)
            print(f"{mname} {impl}: built in {time.perf_counter() - t0:.1f} s")
            for B in batches:
                runner = hf_runner if impl == "hf" else plain_runner
                g = torch.Generator(device="cpu").manual_seed(B)
                ids = torch.randint(4, 50000, (B, P), generator=g)
                ids[:, 0] = 2
                ids = ids.to(dev)
                times, run_s = [], None
                try:
                    with torch.inference_mode():
                        for r in range(reps + 1):
                            if run_s is not None and time.perf_counter() + run_s > deadline:
                                break
                            if impl == "static":  # the first run compiles
                                run_s = static_decode_s(model, ids, N)
                                if r > 0:
                                    times.append(run_s)
                                continue
                            prefill, step = runner(model, B, P, N)
                            nxt = prefill(ids)
                            sync(dev)
                            t1 = time.perf_counter()
                            for i in range(N):
                                nxt = step(nxt, i)
                            sync(dev)
                            run_s = time.perf_counter() - t1
                            if r > 0:
                                times.append(run_s)
                except Exception as e:  # noqa: BLE001
                    print(f"{mname} {impl} batch {B}: {type(e).__name__}: {e}")
                    skipped.append(f"{mname} {impl} batch {B}: error")
                    continue
                if not times:
                    skipped.append(f"{mname} {impl} batch {B}: time budget")
                    continue
                tps = [B * N / t for t in times]
                med = statistics.median(tps)
                std = statistics.stdev(tps) if len(tps) > 1 else 0.0
                results.append(dict(model=mname, impl=impl, batch=B, decodeTokS=med, decodeStd=std,
                                    msPerStep=B * 1e3 / med, reps=len(times)))
                print(f"  batch {B:2d}: {med:10.1f} ± {std:6.1f} tok/s  ({B * 1e3 / med:.3f} ms/step, {len(times)} reps)")
            prefill = step = runner = None  # the closures hold the model
            del model
            if dev.startswith("cuda"):
                torch.cuda.empty_cache()
    elapsed = time.perf_counter() - t_start
    print("\n| model | impl | batch | decode tok/s | ms/step |\n|---|---|---:|---:|---:|")
    for r in results:
        print(f"| {r['model']} | {r['impl']} | {r['batch']} | {r['decodeTokS']:.1f} ± {r['decodeStd']:.1f} | {r['msPerStep']:.3f} |")
    print(f"\ntorch_peer: {len(results)} rows in {elapsed:.1f} s" + (f"; skipped: {'; '.join(skipped)}" if skipped else ""))
    if a.out:
        with open(a.out, "w") as fh:
            json.dump(dict(bench="torch_peer", device=name, torch=torch.__version__, dtype=a.dtype, prompt=P, newTokens=N,
                           reps=reps, elapsedS=elapsed, skipped=skipped, results=results), fh, indent=2)
        print(f"wrote {a.out}")
    if a.compare:
        compare(a.compare, results)
    return 0


def compare(path, results):
    """gpu_bench's tokens/s (full and each speedup) next to the torch peers' (full)."""
    try:
        with open(path) as fh:
            g = json.load(fh)
    except Exception as e:  # noqa: BLE001
        print(f"\n(no comparison: cannot read {path}: {e})")
        return
    ours = {}
    speedups = []
    for r in g.get("results", []):
        ours[(r["model"], r["batch"], r["speedup"])] = r["decodeTokS"]
        if r["speedup"] not in speedups:
            speedups.append(r["speedup"])
    torch_tps = {(r["model"], r["batch"], r["impl"]): r["decodeTokS"] for r in results}
    impls = sorted({r["impl"] for r in results})
    keys = sorted({(m, b) for (m, b, _) in ours} | {(m, b) for (m, b, _) in torch_tps}, key=lambda k: (shape_order(k[0]), k[1]))
    head = ["model", "batch"] + [("skipdecode full" if s == 1 else f"skipdecode {s:g}x") for s in speedups]
    head += [f"torch {i}" for i in impls] + ["full ÷ best torch"]
    print("\n## decode tok/s: skipdecode (CUDA engine) vs the PyTorch peer (full decoding)\n")
    print("| " + " | ".join(head) + " |\n|---|" + "---:|" * (len(head) - 1))
    for m, b in keys:
        row = [m, str(b)] + [f"{ours[(m, b, s)]:.1f}" if (m, b, s) in ours else "—" for s in speedups]
        tv = [torch_tps.get((m, b, i)) for i in impls]
        row += [f"{v:.1f}" if v else "—" for v in tv]
        best = max([v for v in tv if v] or [0])
        full = ours.get((m, b, 1))
        row.append(f"{full / best:.2f}x" if full and best else "—")
        print("| " + " | ".join(row) + " |")


def shape_order(name):
    for i, (n, *_rest) in enumerate(SHAPES.values()):
        if n == name:
            return i
    return 99


if __name__ == "__main__":
    sys.exit(main())
