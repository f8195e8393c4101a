"""Images between the pipelines and the network: uint8 RGB arrays (H, W, 3) one side, float tensors
(N, 3, H, W) in [0, 1] the other.

Every stage converts the same way, so a metric computed in training validation, in evaluation and on
a restored file sees the same numbers: ``to_uint8(to_tensor(image))`` gives ``image`` back exactly.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch


def to_tensor(images: np.ndarray | Sequence[np.ndarray], device: str | torch.device = "cpu") -> torch.Tensor:
    """uint8 RGB images -> float32 (N, 3, H, W) in [0, 1] on ``device``, channels-last in memory (the
    image's own layout, which the network then keeps; ``.contiguous()`` for NCHW).

    Args:
        images: one (H, W, 3) image, a batch (N, H, W, 3), or a sequence of (H, W, 3) images of one size.

    Raises:
        ValueError: for arrays that are not uint8 with three channels last.
    """
    array = np.stack(images) if isinstance(images, (list, tuple)) else np.asarray(images)
    if array.dtype != np.uint8 or array.ndim not in (3, 4) or array.shape[-1] != 3:
        raise ValueError(f"expected uint8 (H, W, 3) or (N, H, W, 3) RGB, got {array.dtype} {array.shape}")
    batch = torch.from_numpy(array if array.ndim == 4 else array[None])
    # Move the uint8 bytes, then widen: a quarter of the transfer to a GPU.
    return batch.to(device).permute(0, 3, 1, 2).float().div_(255)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """Float (N, 3, H, W) or (3, H, W) in [0, 1] -> uint8 RGB (N, H, W, 3) or (H, W, 3), clipped and rounded.

    Raises:
        ValueError: for tensors that are not three channels first.
    """
    if images.ndim not in (3, 4) or images.shape[-3] != 3:
        raise ValueError(f"expected a (3, H, W) or (N, 3, H, W) tensor, got {tuple(images.shape)}")
    scaled = images.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8)
    return np.ascontiguousarray(scaled.cpu().movedim(-3, -1).numpy())  # OpenCV refuses strided views
