"""Images to tokens: cut into non-overlapping patches, each projected to ``embed_dim``."""

from __future__ import annotations

from torch import Tensor, nn


class PatchEmbed(nn.Module):
    """Cut the image into non-overlapping patches and project each to ``embed_dim``.

    A convolution with kernel = stride = patch size is exactly "flatten each patch, then a
    shared linear layer", done in one call. Output: (B, rows * cols, embed_dim), row-major,
    optionally normalized (``norm``). Inputs must be whole patches, except at ``own_size``: a model
    made at a size that leaves a remainder (SigLIP-so400m at 384 with 14-pixel patches) drops the
    last rows and columns, as the convolution of its source library does.
    """

    def __init__(
        self,
        patch_size: int,
        in_chans: int,
        embed_dim: int,
        *,
        bias: bool = True,
        norm: nn.Module | None = None,
        own_size: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.own_size = own_size
        self.in_chans = in_chans
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size, bias=bias)
        self.norm = norm if norm is not None else nn.Identity()  # AIMv2 normalizes each patch's embedding

    def check_input(self, x: Tensor) -> None:
        """Clear errors for the mistakes people make: rank, channels, size vs. patch size."""
        p = self.patch_size
        if x.dim() != 4:
            raise ValueError(
                f"expected images of shape (B, C, H, W), got a {x.dim()}-d tensor of shape {tuple(x.shape)}"
            )
        b, c, h, w = x.shape
        if c != self.in_chans:
            raise ValueError(f"expected {self.in_chans} input channel(s), got {c} (input shape {tuple(x.shape)})")
        if h < p or w < p:
            raise ValueError(f"image {h}x{w} is smaller than one {p}x{p} patch")
        if (h % p or w % p) and (h, w) != self.own_size:
            raise ValueError(
                f"image size {h}x{w} is not divisible by the patch size {p}: resize or crop to "
                f"{h // p * p}x{w // p * p}, or pad to {-(-h // p) * p}x{-(-w // p) * p}"
            )

    def forward(self, x: Tensor) -> Tensor:
        # (B, C, H, W) -> (B, D, rows, cols) -> (B, rows * cols, D)
        return self.norm(self.proj(x).flatten(2).transpose(1, 2))
