"""What a training run will need: memory (printed before training starts, and
refused when it will not fit) and compute per token.

Memory, in bytes, for P parameters of which P_t are trained:

- weights: 4 P (float32 master weights, also under bf16 autocast);
- gradients: 4 P_t; AdamW: 8 P_t (two moments) + 4 P_t of temporaries in
  its step;
- teacher (--distill): a frozen copy, 2 P on CUDA (bfloat16), 4 P on the CPU;
- activations kept for the backward pass, per token of a micro-batch
  (e = 2 bytes under bf16 autocast, 4 in float32; the residual stream stays
  float32, 4 bytes): per layer 4*2d (the block's input and mid-block
  residual) + e * (2d norm outputs + q + 2 kv + q attention output + the
  MLP's inner tensors: 4f for SwiGLU (gate, silu(gate), up, product), 2f for
  ReLU), plus 2q when grouped-query attention expands keys/values, plus
  (4 + e) H T for the attention probabilities unless torch has
  scaled_dot_product_attention (flash/memory-efficient kernels keep none);
  with --grad-checkpoint only 4d per layer is kept, plus one layer's full
  set while it is recomputed;
- logits at the backward peak: (2e + 8) V per token (the head's output, its
  float32 log-softmax and their gradients), and (e + 12) V more with
  --distill (the teacher's logits and log-probabilities, the KL terms);
- 10% on top for the allocator, and a fixed runtime: 1 GiB on CUDA
  (context, cuBLAS workspace); on the CPU 0.4 GiB (torch itself) + 1 GiB of
  freed memory that glibc may keep (train.py's keep_freed_memory), so a CPU
  run's peak resident size stays under the estimate.

Compute per trained token: 6 N_m FLOPs for the matrix multiplications
(N_m: the parameters that multiply, the input embedding excluded, the LM
head included) + 12 L T q for attention (scores and weighted sums over all
T positions, forward and backward); --grad-checkpoint adds one forward
(2 N_m + 4 L T q), --distill the teacher's forward (the same again).
The masked forward computes every layer for every position (skipped ones
are discarded by the `where`), so skipping saves nothing in training.
"""

GIB = 1 << 30


def matmul_params(shape):
    """N_m: parameters that take part in a matrix multiplication per token."""
    s = shape
    d, q, kv, f = s["hidden"], s["q_dim"], s["kv_dim"], s["ffn"]
    mlp = (3 if s["mlp"] == "swiglu" else 2) * d * f
    return s["layers"] * (d * q + 2 * d * kv + q * d + mlp) + s["vocab"] * d


def flops_per_token(shape, seq, grad_checkpoint=False, distill=False):
    """Training FLOPs per token (see the module comment)."""
    fwd = 2 * matmul_params(shape) + 4 * shape["layers"] * seq * shape["q_dim"]
    return fwd * (3 + int(grad_checkpoint) + int(distill))


def estimate(shape, params, trainable, micro_batch, seq, amp, grad_checkpoint, distill, sdpa, cuda):
    """{part: bytes} and "total" (see the module comment)."""
    s = shape
    e, r = (2 if amp else 4), 4
    d, q, kv, f, H, L, V = s["hidden"], s["q_dim"], s["kv_dim"], s["ffn"], s["heads"], s["layers"], s["vocab"]
    inner = (4 if s["mlp"] == "swiglu" else 2) * f
    layer = r * 2 * d + e * (2 * d + q + 2 * kv + q + inner) + (e * 2 * q if kv != q else 0)
    if not sdpa:
        layer += (4 + e) * H * seq
    tokens = micro_batch * seq
    kept = (L * r * d + layer) if grad_checkpoint else L * layer
    logits = (2 * e + 8) * V + ((e + 12) * V if distill else 0)
    parts = {
        "weights": 4 * params,
        "gradients": 4 * trainable,
        "optimizer": 12 * trainable,
        "teacher": (2 if cuda else 4) * params if distill else 0,
        "activations": tokens * (kept + r * 2 * d),
        "logits": tokens * logits,
    }
    subtotal = sum(parts.values())
    parts["allocator and runtime"] = int(0.1 * subtotal) + int((1.0 if cuda else 1.4) * GIB)
    parts["total"] = subtotal + parts["allocator and runtime"]
    return parts


def available(device, override_gib=None):
    """(bytes, where from) the run may use, or (None, why) when unknown."""
    if override_gib is not None:
        return int(override_gib * GIB), "--device-memory"
    if device == "cuda":
        import torch
        if not torch.cuda.is_available():
            return None, "no CUDA device here (give --device-memory GiB to check the fit)"
        free, _ = torch.cuda.mem_get_info()
        return free, f"free on {torch.cuda.get_device_name()}"
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024, "MemAvailable (/proc/meminfo)"
    except OSError:
        pass
    return None, "no /proc/meminfo here"


def fmt(n):
    return f"{n / GIB:.2f} GiB" if n >= GIB / 10 else f"{n / (1 << 20):.1f} MiB"


def peak_bytes(device):
    """Peak memory this process has used so far (CUDA: allocated by torch; CPU: max RSS)."""
    if device == "cuda":
        import torch
        return torch.cuda.max_memory_allocated()
    try:
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    except (ImportError, OSError):
        return None
