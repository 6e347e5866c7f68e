"""A small safetensors reader and writer (the format: 8-byte little-endian
header length, a JSON header {name: {dtype, shape, data_offsets}}, then the
raw little-endian tensor bytes). Debian has no `safetensors` package."""

import json
import math
import mmap
import os
import struct

import numpy as np
import torch

_TO_TORCH = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64}
_FROM_TORCH = {v: k for k, v in _TO_TORCH.items()}
_SIZE = {"F32": 4, "F16": 2, "BF16": 2, "F64": 8}
_NUMPY = {"F32": np.float32, "F16": np.float16, "F64": np.float64}
MAX_HEADER = 100 << 20


def write(path, tensors, metadata=None):
    """Write {name: tensor} (contiguous CPU copies are made); names sorted."""
    header, blobs, off = {}, [], 0
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        if t.dtype not in _FROM_TORCH:
            raise ValueError(f"safetensors: {name} has dtype {t.dtype}; write F32, F16, BF16 or F64")
        # bf16 has no numpy dtype: move its bits as int16.
        raw = (t.view(torch.int16) if t.dtype == torch.bfloat16 else t).numpy().tobytes()
        header[name] = {"dtype": _FROM_TORCH[t.dtype], "shape": list(t.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header, separators=(",", ":")).encode("utf-8")
    h += b" " * (-len(h) % 8)  # align the data to 8 bytes
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)



def json_header(f, path, n, start, size, max_header, error):
    """The JSON header of n bytes that follows `start` bytes of a file of
    `size` bytes (safetensors, the trainer's token files), read from f;
    `error` (a ValueError class) names the file when n is absurd or the JSON
    is malformed."""
    if n > max_header or start + n > size:
        raise error(f"{path}: header length {n} runs past the end of the file ({size} bytes)")
    try:
        return json.loads(f.read(n))
    except ValueError as e:
        raise error(f"{path}: malformed JSON header ({e})") from None

def read(path):
    """{name: float32 tensor} from a .safetensors file; every malformed
    header, dtype, shape or offset is reported with the file's name."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ValueError(f"{path}: too short to be a safetensors file")
        (n,) = struct.unpack("<Q", head)
        header = json_header(f, path, n, 8, size, MAX_HEADER, ValueError)
        if not isinstance(header, dict):
            raise ValueError(f"{path}: the header is not a JSON object")
        data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size > 0 else b""
    base = 8 + n
    out = {}
    try:
        for name, info in header.items():
            if name == "__metadata__":
                continue
            if not isinstance(info, dict):
                raise ValueError(f"{path}: tensor {name}: header entry is not an object")
            dt = info.get("dtype")
            if dt not in _TO_TORCH:
                raise ValueError(f"{path}: tensor {name} has dtype {dt}; supported: F32, F16, BF16, F64")
            shape, offs = info.get("shape"), info.get("data_offsets")
            if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                                      for d in shape):
                raise ValueError(f"{path}: tensor {name}: shape must be a list of non-negative integers, got {shape!r}")
            if (not isinstance(offs, list) or len(offs) != 2 or not all(isinstance(o, int) and not isinstance(o, bool)
                                                                       for o in offs)
                    or not 0 <= offs[0] <= offs[1] <= size - base):
                raise ValueError(f"{path}: tensor {name}: data_offsets {offs!r} are not a range inside the data "
                                 f"({size - base} bytes)")
            count = math.prod(shape)
            if offs[1] - offs[0] != count * _SIZE[dt]:
                raise ValueError(f"{path}: tensor {name}: {offs[1] - offs[0]} bytes do not hold shape {shape} of {dt}")
            raw = data[base + offs[0]:base + offs[1]]
            if dt == "BF16":
                t = torch.from_numpy(np.frombuffer(raw, dtype=np.int16).copy()).view(torch.bfloat16)
            else:
                t = torch.from_numpy(np.frombuffer(raw, dtype=_NUMPY[dt]).copy())
            out[name] = t.reshape(shape).float()
    finally:
        if isinstance(data, mmap.mmap):
            data.close()
    return out


def read_sharded(index_path):
    """{name: float32 tensor} of every shard model.safetensors.index.json's
    weight_map names; each listed tensor must be in its shard."""
    folder = os.path.dirname(index_path)
    try:
        with open(index_path) as f:
            index = json.load(f)
    except ValueError as e:
        raise ValueError(f"{index_path}: not valid JSON ({e})") from None
    wmap = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(wmap, dict) or not wmap or not all(isinstance(v, str) for v in wmap.values()):
        raise ValueError(f"{index_path}: needs a non-empty weight_map of tensor name -> shard file")
    out = {}
    for shard in sorted(set(wmap.values())):
        if os.path.basename(shard) != shard:
            raise ValueError(f"{index_path}: shard {shard!r} is not a file name in the folder")
        p = os.path.join(folder, shard)
        if not os.path.isfile(p):
            raise ValueError(f"{index_path}: shard {shard} is missing")
        out.update(read(p))
    missing = [k for k, v in wmap.items() if k not in out]
    if missing:
        raise ValueError(f"{index_path}: tensor {missing[0]} is not in its shard {wmap[missing[0]]}"
                         + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    return out
