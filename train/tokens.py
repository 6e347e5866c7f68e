"""Token files: written by train/tokenize.ts (the library's own tokenizer, so
the trainer sees exactly the ids SkipDecoder feeds the model), read here.
tokenize.ts's header comment gives the layout; `read` checks every field and
offset and names what is wrong."""

import os
import shutil
import subprocess

import numpy as np

from safetensors_io import json_header

MAGIC = b"SKDTOK1\n"
MAX_HEADER = 1 << 24
HERE = os.path.dirname(os.path.abspath(__file__))


class TokenFileError(ValueError):
    pass


def bun_path():
    """The bun that runs tokenize.ts: $SKIPDECODE_BUN, else bun on PATH."""
    bun = os.environ.get("SKIPDECODE_BUN") or shutil.which("bun")
    if not bun:
        raise FileNotFoundError("tokenizing needs bun (the library's tokenizer runs in it): install it "
                                "(https://bun.sh) or set SKIPDECODE_BUN to its path")
    return bun


def tokenize(model_dir, out, data=None, eval_fraction=0.05, train_text=None, heldout_text=None, log=print):
    """Run tokenize.ts for `model_dir` (its tokenizer and config.json): --data
    PATH with --eval-fraction, or two plain texts. Returns read(out)."""
    cmd = [bun_path(), os.path.join(HERE, "tokenize.ts"), "--model", model_dir, "--out", out]
    if data is not None:
        cmd += ["--data", data, "--eval-fraction", repr(eval_fraction)]
    else:
        cmd += ["--train-text", train_text, "--heldout-text", heldout_text]
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in p.stderr.splitlines():
        if p.returncode == 0:
            log(line)
    if p.returncode != 0:
        msg = p.stderr.strip().splitlines()[-1] if p.stderr.strip() else f"exit code {p.returncode}"
        raise TokenFileError(msg.removeprefix("tokenize.ts: "))
    return read(out)


def _count(h, split, key, path):
    v = h[split].get(key) if isinstance(h.get(split), dict) else None
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise TokenFileError(f"{path}: header field {split}.{key} must be a non-negative integer, got {v!r}")
    return v


def read(path):
    """{header fields..., "train": {"ids", "mask", "documents"}, "heldout": {...}}:
    ids (uint32) and masks (uint8, 1: a loss target) mapped from the file,
    not copied (a large corpus stays on disk)."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(16)
        if len(head) < 16 or head[:8] != MAGIC:
            raise TokenFileError(f"{path}: not a token file (no {MAGIC!r} magic; written by train/tokenize.ts)")
        n = int.from_bytes(head[8:16], "little")
        h = json_header(f, path, n, 16, size, MAX_HEADER, TokenFileError)
    if not isinstance(h, dict) or h.get("format") != "skipdecode-tokens" or h.get("version") != 1:
        raise TokenFileError(f"{path}: header is not a skipdecode-tokens version 1 header")
    if h.get("kind") not in ("text", "documents"):
        raise TokenFileError(f"{path}: header field kind must be 'text' or 'documents', got {h.get('kind')!r}")
    vocab = h.get("vocab_size")
    if isinstance(vocab, bool) or not isinstance(vocab, int) or not 1 <= vocab <= 1 << 31:
        raise TokenFileError(f"{path}: header field vocab_size must be a positive integer, got {vocab!r}")
    for key in ("bos_id", "eos_id"):
        v = h.get(key)
        if not (v is None and key == "bos_id") and (isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < vocab):
            raise TokenFileError(f"{path}: header field {key} must be a token id below vocab_size {vocab}, got {v!r}")
    if not isinstance(h.get("adds_bos"), bool):
        raise TokenFileError(f"{path}: header field adds_bos must be true or false")
    base = 16 + n
    data_len = size - base
    out = dict(h)
    for split in ("train", "heldout"):
        if not isinstance(h.get(split), dict):
            raise TokenFileError(f"{path}: header has no {split} split")
        tokens = _count(h, split, "tokens", path)
        for key in ("documents", "loss_tokens"):
            _count(h, split, key, path)
        io, mo = _count(h, split, "ids_offset", path), _count(h, split, "mask_offset", path)
        if io % 4 or io + 4 * tokens > data_len or mo + tokens > data_len:
            raise TokenFileError(f"{path}: {split}: {tokens} tokens at offsets {io}/{mo} run past the end of the "
                                 f"data ({data_len} bytes) or are misaligned")
        ids = np.memmap(path, dtype="<u4", mode="r", offset=base + io, shape=(tokens,)) if tokens else np.zeros(0, "<u4")
        mask = np.memmap(path, dtype=np.uint8, mode="r", offset=base + mo, shape=(tokens,)) if tokens else np.zeros(0, np.uint8)
        if tokens and int(ids.max()) >= vocab:
            raise TokenFileError(f"{path}: {split}: token id {int(ids.max())} is not below vocab_size {vocab}")
        if tokens and int(mask.max()) > 1:
            raise TokenFileError(f"{path}: {split}: loss mask values must be 0 or 1, found {int(mask.max())}")
        held = int(mask.sum(dtype=np.int64))
        if held != h[split]["loss_tokens"]:
            raise TokenFileError(f"{path}: {split}: the mask holds {held} loss tokens, the header says "
                                 f"{h[split]['loss_tokens']}")
        out[split] = {"ids": ids, "mask": mask, "documents": h[split]["documents"]}
    return out
