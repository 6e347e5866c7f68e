"""The LLaMA family (Llama 2/3, SmolLM, Mistral, Qwen2) as a torch module, with
SkipDecode's masked forward.

One block, as Hugging Face's LlamaModel and lib/checkpoint/llama.ts run it:
x + attn(rms(x)), then x + down(silu(gate(m)) * up(m)) with m = rms(x);
RMSNorm; rotary positions in the rotate-half convention with `rope_theta`
and `rope_scaling` "linear" or "llama3" (folded into the frequencies, as
lib/checkpoint/llama.ts's ropeInvFreq does); grouped-query attention
(`num_key_value_heads`: query head h reads key/value head h // (H / KVH));
`head_dim` from the config when given (q has heads x head_dim rows, which may
differ from hidden_size); biases where the config says (`attention_bias`,
`mlp_bias`; Qwen2 always has q/k/v biases); a tied or separate LM head. A
Mistral/Qwen2 sliding window is exact while a sequence fits in it, so
sequences longer than the window are refused.

Tensor names are Hugging Face's LlamaForCausalLM names (`model.*`, `lm_head`);
`from_hf_state` also takes them without the `model.` prefix, as the library
does. The config.json of an --init folder is kept as it is on export (only
torch_dtype and the training record change), so every field the trainer does
not read survives.

Skipping: skip.py's masked forward (h = where(computes(l, pos), block(h), h)),
which equals the engine's computation.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import hf
from .skip import run_layers

MODEL_TYPES = ("llama", "mistral", "qwen2")
ARCHITECTURES = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM"}


def _int(d, key, where, default=None, lo=1):
    v = d.get(key, default)
    if v is None:
        raise ValueError(f"{where}: missing field {key!r}")
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise ValueError(f"{where}: field {key!r} must be an integer >= {lo}, got {v!r}")
    return v


def _num(d, key, where, default):
    v = d.get(key, default)
    if v is None:
        v = default
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
        raise ValueError(f"{where}: field {key!r} must be a number > 0, got {v!r}")
    return float(v)


def _bool(d, key, where, default):
    v = d.get(key, default)
    if v is None:
        v = default
    if not isinstance(v, bool):
        raise ValueError(f"{where}: field {key!r} must be true or false, got {v!r}")
    return v


def rope_of(d, where):
    """(theta, scaling) as lib/checkpoint/llama.ts reads them: rope_theta and
    rope_scaling (transformers 4.x) or rope_parameters (5.x). scaling is None,
    ("linear", factor) or ("llama3", factor, low, high, original_max)."""
    params = d.get("rope_scaling")
    if params is None:
        params = d.get("rope_parameters")
    if params is not None and not isinstance(params, dict):
        raise ValueError(f"{where}: field 'rope_scaling' must be an object or null, got {params!r}")
    theta = _num({"rope_theta": d.get("rope_theta", (params or {}).get("rope_theta"))}, "rope_theta", where, 10000.0)
    kind = (params.get("rope_type") or params.get("type") or "default") if params else "default"
    if kind == "default":
        return theta, None
    name = "rope_scaling" if d.get("rope_scaling") is not None else "rope_parameters"
    num = lambda k: _num({k: params.get(k)}, k, f"{where}: {name}", None)  # noqa: E731
    if kind == "linear":
        return theta, ("linear", num("factor"))
    if kind == "llama3":
        s = ("llama3", num("factor"), num("low_freq_factor"), num("high_freq_factor"),
             num("original_max_position_embeddings"))
        if s[3] <= s[2]:
            raise ValueError(f"{where}: {name}: high_freq_factor ({s[3]:g}) must exceed low_freq_factor ({s[2]:g})")
        return theta, s
    raise ValueError(f"{where}: unsupported {name} type {kind!r} (skipdecode supports 'linear' and 'llama3')")


def rope_inv_freq(head_dim, theta, scaling):
    """Frequency of each rotary pair (i, i + head_dim/2), scaling folded in,
    computed in float64 and rounded to float32 as lib/checkpoint/llama.ts
    hands them to the engine."""
    out = []
    for i in range(head_dim // 2):
        f = 1 / theta ** ((2 * i) / head_dim)
        if scaling and scaling[0] == "linear":
            f /= scaling[1]
        elif scaling and scaling[0] == "llama3":
            _, factor, low, high, orig = scaling
            wavelen = 2 * math.pi / f
            if wavelen > orig / low:
                f /= factor
            elif wavelen >= orig / high:
                smooth = (orig / wavelen - low) / (high - low)
                f = (1 - smooth) * (f / factor) + smooth * f
        out.append(f)
    return torch.tensor(out, dtype=torch.float64).float()


class Config:
    """The fields the trainer uses, read from (and written back into) a
    Hugging Face config.json dict."""

    def __init__(self, raw, where):
        d = dict(raw)
        self.raw = d
        kind = d.get("model_type")
        if kind not in MODEL_TYPES:
            raise ValueError(f"{where}: model_type {kind!r} is not one of {', '.join(MODEL_TYPES)}")
        self.model_type = kind
        act = d.get("hidden_act", "silu")
        if act != "silu":
            raise ValueError(f"{where}: hidden_act {act!r}; the LLaMA family uses 'silu'")
        self.vocab_size = _int(d, "vocab_size", where)
        self.hidden_size = _int(d, "hidden_size", where)
        self.intermediate_size = _int(d, "intermediate_size", where)
        self.num_hidden_layers = _int(d, "num_hidden_layers", where)
        self.num_attention_heads = _int(d, "num_attention_heads", where)
        self.num_key_value_heads = _int(d, "num_key_value_heads", where, self.num_attention_heads)
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(f"{where}: num_key_value_heads {self.num_key_value_heads} does not divide "
                             f"num_attention_heads {self.num_attention_heads}")
        if d.get("head_dim") is None and self.hidden_size % self.num_attention_heads:
            raise ValueError(f"{where}: hidden_size {self.hidden_size} is not a multiple of num_attention_heads "
                             f"{self.num_attention_heads} and head_dim is not given")
        self.head_dim = _int(d, "head_dim", where, self.hidden_size // self.num_attention_heads)
        if self.head_dim % 2:
            raise ValueError(f"{where}: head_dim {self.head_dim} must be even for rotary positions")
        self.max_position_embeddings = _int(d, "max_position_embeddings", where, 2048)
        self.rms_norm_eps = _num(d, "rms_norm_eps", where, 1e-6)
        self.rope_theta, self.rope_scaling = rope_of(d, where)
        self.attention_bias = _bool(d, "attention_bias", where, False)
        self.mlp_bias = _bool(d, "mlp_bias", where, False)
        self.qkv_bias = kind == "qwen2" or self.attention_bias
        self.tie_word_embeddings = _bool(d, "tie_word_embeddings", where, False)
        windowed = kind == "mistral" or (kind == "qwen2" and _bool(d, "use_sliding_window", where, False))
        self.sliding_window = _int(d, "sliding_window", where) if windowed and d.get("sliding_window") is not None else None

    @staticmethod
    def from_hf(d, where):
        return Config(d, where)

    @staticmethod
    def new(model_type="llama", vocab_size=4096, hidden_size=128, intermediate_size=384, num_hidden_layers=12,
            num_attention_heads=4, num_key_value_heads=None, head_dim=None, max_position_embeddings=128,
            rope_theta=10000.0, tie_word_embeddings=True, bos_token_id=0, eos_token_id=2):
        """A from-scratch config (the trainer's own tokenizer: <s> 0 as BOS, </s> 2 as EOS)."""
        d = {
            "architectures": [ARCHITECTURES[model_type]], "model_type": model_type,
            "vocab_size": vocab_size, "hidden_size": hidden_size, "intermediate_size": intermediate_size,
            "num_hidden_layers": num_hidden_layers, "num_attention_heads": num_attention_heads,
            "num_key_value_heads": num_key_value_heads or num_attention_heads,
            **({"head_dim": head_dim} if head_dim else {}),
            "hidden_act": "silu", "max_position_embeddings": max_position_embeddings, "rms_norm_eps": 1e-5,
            "rope_theta": rope_theta, "rope_scaling": None, "attention_bias": False, "mlp_bias": False,
            "tie_word_embeddings": tie_word_embeddings, "bos_token_id": bos_token_id, "eos_token_id": eos_token_id,
            "torch_dtype": "float16",
        }
        return Config(d, "llama config")

    def to_hf(self, extra=None):
        d = dict(self.raw)
        if extra:
            d.update(extra)
        return d

    def max_sequence(self):
        """(tokens, why): the longest training sequence this config allows."""
        if self.sliding_window is not None and self.sliding_window < self.max_position_embeddings:
            return self.sliding_window, f"sliding_window {self.sliding_window} (attention is exact only inside it)"
        return self.max_position_embeddings, f"max_position_embeddings {self.max_position_embeddings}"

    def shape(self):
        """What memory.py's estimate needs."""
        return {"layers": self.num_hidden_layers, "hidden": self.hidden_size, "heads": self.num_attention_heads,
                "q_dim": self.num_attention_heads * self.head_dim,
                "kv_dim": self.num_key_value_heads * self.head_dim, "ffn": self.intermediate_size,
                "vocab": self.vocab_size, "mlp": "swiglu", "tied": self.tie_word_embeddings,
                "embedding": self.vocab_size * self.hidden_size}

    def param_count(self):
        """The parameters Model(self) has (a test holds it to the module's)."""
        d, f, L = self.hidden_size, self.intermediate_size, self.num_hidden_layers
        q, kv = self.num_attention_heads * self.head_dim, self.num_key_value_heads * self.head_dim
        layer = 2 * d + d * q + 2 * d * kv + q * d + 3 * d * f
        layer += (q + 2 * kv) * self.qkv_bias + d * self.attention_bias + (2 * f + d) * self.mlp_bias
        return L * layer + self.vocab_size * d * (1 if self.tie_word_embeddings else 2) + d

    def describe(self):
        gqa = f", {self.num_key_value_heads} KV heads" if self.num_key_value_heads != self.num_attention_heads else ""
        return (f"{self.model_type} {self.num_hidden_layers} layers x {self.hidden_size}, {self.num_attention_heads} "
                f"heads{gqa} of {self.head_dim}, ffn {self.intermediate_size}, vocab {self.vocab_size}")


class RMSNorm(nn.Module):
    def __init__(self, d, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rotate(x, cos, sin):
    """x (B,H,T,hd) rotated to its positions: pairs (i, i + hd/2)."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


_sdpa = getattr(F, "scaled_dot_product_attention", None)  # torch >= 2.0


class Attention(nn.Module):
    def __init__(self, c):
        super().__init__()
        d, qd, kd = c.hidden_size, c.num_attention_heads * c.head_dim, c.num_key_value_heads * c.head_dim
        self.q_proj = nn.Linear(d, qd, bias=c.qkv_bias)
        self.k_proj = nn.Linear(d, kd, bias=c.qkv_bias)
        self.v_proj = nn.Linear(d, kd, bias=c.qkv_bias)
        self.o_proj = nn.Linear(qd, d, bias=c.attention_bias)
        self.H, self.KVH, self.hd = c.num_attention_heads, c.num_key_value_heads, c.head_dim

    def forward(self, x, cos, sin, causal):
        B, T, _ = x.shape
        H, KVH, hd = self.H, self.KVH, self.hd
        q = rotate(self.q_proj(x).view(B, T, H, hd).transpose(1, 2), cos, sin)
        k = rotate(self.k_proj(x).view(B, T, KVH, hd).transpose(1, 2), cos, sin)
        v = self.v_proj(x).view(B, T, KVH, hd).transpose(1, 2)
        if KVH != H:  # query head h reads key/value head h // (H / KVH)
            k = k[:, :, None].expand(B, KVH, H // KVH, T, hd).reshape(B, H, T, hd)
            v = v[:, :, None].expand(B, KVH, H // KVH, T, hd).reshape(B, H, T, hd)
        if _sdpa is not None:  # under autocast it casts q, k, v to bfloat16 itself
            y = _sdpa(q, k, v, is_causal=True)
        else:
            s = (q @ k.transpose(-1, -2)) * hd ** -0.5
            y = torch.softmax(s.masked_fill(causal, float("-inf")), dim=-1) @ v
        return self.o_proj(y.transpose(1, 2).reshape(B, T, H * hd))


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        d, f = c.hidden_size, c.intermediate_size
        self.input_layernorm = RMSNorm(d, c.rms_norm_eps)
        self.self_attn = Attention(c)
        self.post_attention_layernorm = RMSNorm(d, c.rms_norm_eps)
        self.mlp = nn.Module()
        self.mlp.gate_proj = nn.Linear(d, f, bias=c.mlp_bias)
        self.mlp.up_proj = nn.Linear(d, f, bias=c.mlp_bias)
        self.mlp.down_proj = nn.Linear(f, d, bias=c.mlp_bias)

    def forward(self, h, cos, sin, causal):
        h = h + self.self_attn(self.input_layernorm(h), cos, sin, causal)
        m = self.post_attention_layernorm(h)
        return h + self.mlp.down_proj(F.silu(self.mlp.gate_proj(m)) * self.mlp.up_proj(m))


class Model(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.config = c
        self.grad_checkpoint = False
        self.embed_tokens = nn.Embedding(c.vocab_size, c.hidden_size)
        self.layers = nn.ModuleList(Block(c) for _ in range(c.num_hidden_layers))
        self.norm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.lm_head = None if c.tie_word_embeddings else nn.Linear(c.hidden_size, c.vocab_size, bias=False)
        self.register_buffer("inv_freq", rope_inv_freq(c.head_dim, c.rope_theta, c.rope_scaling), persistent=False)
        hf.init_weights(self, (p for blk in self.layers for p in (blk.self_attn.o_proj, blk.mlp.down_proj)), c.num_hidden_layers)

    def forward(self, ids, budgets=None, warmup=1):
        """ids (B,T) -> logits (B,T,V). budgets (B,T): layers per position
        (None: all); warmup: int or (B,) tensor of warm-up layers."""
        B, T = ids.shape
        h = self.embed_tokens(ids)
        if h.dtype in (torch.float16, torch.bfloat16):  # a 16-bit teacher: keep the residual stream in float32
            h = h.float()
        # rotary angles in the residual stream's precision (float32 under autocast)
        pos = torch.arange(T, device=ids.device, dtype=h.dtype)
        ang = pos[:, None] * self.inv_freq.to(h.dtype)[None, :]
        cos, sin = torch.cos(ang), torch.sin(ang)
        causal = torch.triu(torch.ones(T, T, dtype=torch.bool, device=ids.device), 1)
        h = run_layers(self.layers, h, budgets, warmup, self.grad_checkpoint, cos, sin, causal)
        h = self.norm(h)
        w = self.embed_tokens.weight if self.lm_head is None else self.lm_head.weight
        return F.linear(h, w)


def to_hf_state(model):
    """{HF name: tensor}; a tied head is not written (config says tied)."""
    return hf.to_hf_state(model, "model.")


def from_hf_state(model, tensors, where):
    """Load HF tensors (`model.*` or unprefixed) into `model`; every missing or
    misshapen tensor is named. A tied model ignores a stored lm_head.weight
    (transformers ties it to the embedding on load)."""
    hf.from_hf_state(model, tensors, ("model.", ""), where)
