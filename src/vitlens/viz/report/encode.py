"""Compact, lossless-enough encoding of attention maps for the HTML explorer.

Each row of a map (one query token's weights over the patches) is scaled by its own maximum and
quantized to 8 bits, so the largest weight of every row keeps full precision and a row costs
one byte per patch plus one float. Chunks are zlib-compressed and base64-encoded: the browser
inflates them with the built-in ``DecompressionStream('deflate')``, one chunk (one layer of one
image) at a time, only when it is first shown.
"""

from __future__ import annotations

import base64
import zlib

import numpy as np
import torch
from torch import Tensor

LEVELS = 255


def quantize_rows(rows: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Rows (..., C) of non-negative weights -> (uint8 codes (..., C), float32 row maxima (...,))."""
    rows = rows.detach().float().cpu()
    if rows.dim() < 1 or rows.shape[-1] == 0:
        raise ValueError(f"quantize_rows expects rows of shape (..., columns), got {tuple(rows.shape)}")
    scales = rows.amax(dim=-1).clamp_min(torch.finfo(torch.float32).tiny)
    codes = torch.round(rows.clamp_min(0) / scales[..., None] * LEVELS).to(torch.uint8)
    return codes.numpy(), scales.numpy().astype("<f4")


def dequantize_rows(codes: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """The inverse of :func:`quantize_rows` (up to half a quantization step per weight)."""
    return codes.astype(np.float32) * (scales[..., None] / LEVELS)


def pack_rows(rows: Tensor) -> str:
    """Rows (..., C) -> base64 text of zlib(float32 row maxima, then uint8 codes), little-endian."""
    codes, scales = quantize_rows(rows)
    raw = scales.tobytes() + np.ascontiguousarray(codes).tobytes()
    return base64.b64encode(zlib.compress(raw, 6)).decode("ascii")


def unpack_rows(text: str, num_rows: int, num_columns: int) -> tuple[np.ndarray, np.ndarray]:
    """Read a :func:`pack_rows` chunk back: (codes (num_rows, num_columns), scales (num_rows,))."""
    raw = zlib.decompress(base64.b64decode(text))
    expected = num_rows * (4 + num_columns)
    if len(raw) != expected:
        raise ValueError(f"chunk holds {len(raw)} bytes, expected {expected} for {num_rows} rows of {num_columns}")
    scales = np.frombuffer(raw, dtype="<f4", count=num_rows)
    codes = np.frombuffer(raw, dtype=np.uint8, offset=4 * num_rows).reshape(num_rows, num_columns)
    return codes, scales
