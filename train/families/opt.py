"""OPT (Zhang et al. 2022) as a torch module, with SkipDecode's masked forward.

Pre-LN (opt-125m style: x + attn(LN(x)), x + mlp(LN(x)), final LN) and
post-LN (opt-350m style: LN(x + attn(x)), no final LN), learned positions at
offset 2, optional project_in/project_out, ReLU MLP, tied or explicit LM head.
Tensor names are Hugging Face's OPTForCausalLM names (`model.decoder.*`).

Skipping: skip.py's masked forward (h = where(computes(l, pos), block(h), h)),
which equals the engine's computation.
"""

from dataclasses import dataclass, asdict

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import hf
from .skip import run_layers

POSITION_OFFSET = 2


@dataclass
class Config:
    vocab_size: int = 4096
    hidden_size: int = 128
    num_hidden_layers: int = 12
    num_attention_heads: int = 4
    ffn_dim: int = 512
    max_position_embeddings: int = 128
    word_embed_proj_dim: int = 0  # 0: = hidden_size
    do_layer_norm_before: bool = True
    tie_word_embeddings: bool = True
    enable_bias: bool = True

    def __post_init__(self):
        if self.word_embed_proj_dim == 0:
            self.word_embed_proj_dim = self.hidden_size

    def check(self, where):
        for k in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "ffn_dim",
                  "max_position_embeddings", "word_embed_proj_dim"):
            v = getattr(self, k)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{where}: {k} must be a positive integer, got {v!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"{where}: hidden_size {self.hidden_size} is not a multiple of "
                             f"num_attention_heads {self.num_attention_heads}")

    @staticmethod
    def from_hf(d, where):
        if d.get("activation_function", "relu") != "relu":
            raise ValueError(f"{where}: activation_function {d.get('activation_function')!r}; OPT uses relu")
        if d.get("layer_norm_elementwise_affine", True) is not True:
            raise ValueError(f"{where}: layer_norm_elementwise_affine=false is not supported by the trainer")
        if d.get("do_layer_norm_before", True) and d.get("_remove_final_layer_norm", False):
            raise ValueError(f"{where}: _remove_final_layer_norm=true is not supported by the trainer")
        try:
            c = Config(
                vocab_size=d["vocab_size"], hidden_size=d["hidden_size"],
                num_hidden_layers=d["num_hidden_layers"], num_attention_heads=d["num_attention_heads"],
                ffn_dim=d["ffn_dim"], max_position_embeddings=d["max_position_embeddings"],
                word_embed_proj_dim=d.get("word_embed_proj_dim", d["hidden_size"]),
                do_layer_norm_before=d.get("do_layer_norm_before", True),
                tie_word_embeddings=d.get("tie_word_embeddings", True),
                enable_bias=d.get("enable_bias", True),
            )
        except KeyError as e:
            raise ValueError(f"{where}: missing field {e.args[0]!r}") from None
        c.check(where)
        return c

    def max_sequence(self):
        """(tokens, why): the longest training sequence this config allows."""
        return self.max_position_embeddings, f"max_position_embeddings {self.max_position_embeddings}"

    def shape(self):
        """What memory.py's estimate needs."""
        return {"layers": self.num_hidden_layers, "hidden": self.hidden_size, "heads": self.num_attention_heads,
                "q_dim": self.hidden_size, "kv_dim": self.hidden_size, "ffn": self.ffn_dim,
                "vocab": self.vocab_size, "mlp": "relu", "tied": self.tie_word_embeddings,
                "embedding": self.vocab_size * self.word_embed_proj_dim
                + (self.max_position_embeddings + POSITION_OFFSET) * self.hidden_size}

    def param_count(self):
        """The parameters Model(self) has (a test holds it to the module's)."""
        d, e, f, L = self.hidden_size, self.word_embed_proj_dim, self.ffn_dim, self.num_hidden_layers
        b = 1 if self.enable_bias else 0
        layer = 4 * d * d + 4 * d * b + 2 * d * f + (f + d) * b + 4 * d
        n = L * layer + self.vocab_size * e + (self.max_position_embeddings + POSITION_OFFSET) * d
        n += 2 * e * d if e != d else 0
        n += 2 * d if self.do_layer_norm_before else 0
        return n + (0 if self.tie_word_embeddings else self.vocab_size * e)

    def describe(self):
        return (f"opt {self.num_hidden_layers} layers x {self.hidden_size}, {self.num_attention_heads} heads, "
                f"ffn {self.ffn_dim}, vocab {self.vocab_size}")

    def to_hf(self, extra=None):
        d = {
            "architectures": ["OPTForCausalLM"], "model_type": "opt",
            **asdict(self),
            "_remove_final_layer_norm": False, "activation_function": "relu",
            "layer_norm_elementwise_affine": True,
            "bos_token_id": 2, "eos_token_id": 2, "pad_token_id": 1, "torch_dtype": "float16",
        }
        if extra:
            d.update(extra)
        return d


class Attention(nn.Module):
    def __init__(self, d, bias):
        super().__init__()
        self.q_proj = nn.Linear(d, d, bias=bias)
        self.k_proj = nn.Linear(d, d, bias=bias)
        self.v_proj = nn.Linear(d, d, bias=bias)
        self.out_proj = nn.Linear(d, d, bias=bias)

    def forward(self, x, causal, H):
        B, T, D = x.shape
        hd = D // H
        # x (B,T,D) -> q,k,v (B,H,T,hd); OPT scales q after its bias
        q = (self.q_proj(x) * hd ** -0.5).view(B, T, H, hd).transpose(1, 2)
        k = self.k_proj(x).view(B, T, H, hd).transpose(1, 2)
        v = self.v_proj(x).view(B, T, H, hd).transpose(1, 2)
        s = (q @ k.transpose(-1, -2)).masked_fill(causal, float("-inf"))  # (B,H,T,T)
        y = torch.softmax(s, dim=-1) @ v  # (B,H,T,hd)
        return self.out_proj(y.transpose(1, 2).reshape(B, T, D))


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        d, bias = c.hidden_size, c.enable_bias
        self.heads, self.pre = c.num_attention_heads, c.do_layer_norm_before
        self.self_attn_layer_norm = nn.LayerNorm(d)
        self.self_attn = Attention(d, bias)
        self.final_layer_norm = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, c.ffn_dim, bias=bias)
        self.fc2 = nn.Linear(c.ffn_dim, d, bias=bias)

    def attn(self, x, causal):
        return self.self_attn(x, causal, self.heads)

    def forward(self, h, causal):
        if self.pre:
            h = h + self.attn(self.self_attn_layer_norm(h), causal)
            return h + self.fc2(F.relu(self.fc1(self.final_layer_norm(h))))
        h = self.self_attn_layer_norm(h + self.attn(h, causal))
        return self.final_layer_norm(h + self.fc2(F.relu(self.fc1(h))))


class Model(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.config = c
        self.grad_checkpoint = False
        e, d = c.word_embed_proj_dim, c.hidden_size
        self.embed_tokens = nn.Embedding(c.vocab_size, e)
        self.embed_positions = nn.Embedding(c.max_position_embeddings + POSITION_OFFSET, d)
        self.project_in = nn.Linear(e, d, bias=False) if e != d else None
        self.project_out = nn.Linear(d, e, bias=False) if e != d else None
        self.layers = nn.ModuleList(Block(c) for _ in range(c.num_hidden_layers))
        self.final_layer_norm = nn.LayerNorm(d) if c.do_layer_norm_before else None
        self.lm_head = None if c.tie_word_embeddings else nn.Linear(e, c.vocab_size, bias=False)
        hf.init_weights(self, (p for blk in self.layers for p in (blk.self_attn.out_proj, blk.fc2)), c.num_hidden_layers)

    def forward(self, ids, budgets=None, warmup=1):
        """ids (B,T) -> logits (B,T,V). budgets (B,T): layers per position
        (None: all); warmup: int or (B,) tensor of warm-up layers."""
        B, T = ids.shape
        c = self.config
        if T > c.max_position_embeddings:
            raise ValueError(f"sequence of {T} tokens exceeds max_position_embeddings {c.max_position_embeddings}")
        x = self.embed_tokens(ids)
        if self.project_in is not None:
            x = self.project_in(x)
        pos = torch.arange(T, device=ids.device) + POSITION_OFFSET
        h = x + self.embed_positions(pos)[None]
        if h.dtype in (torch.float16, torch.bfloat16):  # a 16-bit teacher: keep the residual stream in float32
            h = h.float()
        causal = torch.triu(torch.ones(T, T, dtype=torch.bool, device=ids.device), 1)
        h = run_layers(self.layers, h, budgets, warmup, self.grad_checkpoint, causal)
        if self.final_layer_norm is not None:
            h = self.final_layer_norm(h)
        if self.project_out is not None:
            h = self.project_out(h)
        w = self.embed_tokens.weight if self.lm_head is None else self.lm_head.weight
        return h @ w.t()


def to_hf_state(model):
    """{HF name: tensor}; a tied head is not written (config says tied)."""
    return hf.to_hf_state(model, "model.decoder.")


def from_hf_state(model, tensors, where):
    """Load HF tensors (`model.decoder.*` or `decoder.*`) into `model`; every
    missing or misshapen tensor is named."""
    hf.from_hf_state(model, tensors, ("model.decoder.", "decoder."), where)
