"""A small safetensors reader and writer (the format: 8-byte little-endian
header length, a JSON header {name: {dtype, shape, data_offsets}}, then the
raw little-endian tensor bytes). Debian has no `safetensors` package."""

import json
import struct

import numpy as np
import torch

_TO_TORCH = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64}
_FROM_TORCH = {v: k for k, v in _TO_TORCH.items()}


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


def read(path):
    """{name: float32 tensor} from a .safetensors file; errors name the file."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        raise ValueError(f"{path}: too short to be a safetensors file")
    (n,) = struct.unpack("<Q", data[:8])
    if 8 + n > len(data):
        raise ValueError(f"{path}: header length {n} runs past the end of the file")
    try:
        header = json.loads(data[8:8 + n])
    except ValueError as e:
        raise ValueError(f"{path}: malformed JSON header ({e})") from None
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dt = info.get("dtype")
        if dt not in _TO_TORCH:
            raise ValueError(f"{path}: tensor {name} has dtype {dt}; supported: F32, F16, BF16, F64")
        a, b = info["data_offsets"]
        raw = data[base + a:base + b]
        if dt == "BF16":
            t = torch.from_numpy(np.frombuffer(raw, dtype=np.int16).copy()).view(torch.bfloat16)
        else:
            np_dt = {"F32": np.float32, "F16": np.float16, "F64": np.float64}[dt]
            t = torch.from_numpy(np.frombuffer(raw, dtype=np_dt).copy())
        shape = info["shape"]
        if t.numel() != int(np.prod(shape)) if shape else t.numel() != 1:
            raise ValueError(f"{path}: tensor {name}: {len(raw)} bytes do not hold shape {shape} of {dt}")
        out[name] = t.reshape(shape).float()
    return out
