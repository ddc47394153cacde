"""Float comparisons that hold on any x86-64 CPU, thread count and kernel choice.

Kernels differ across CPUs (AVX2 vs AVX-512 in MKL's matmuls, ATen's vectorised ops)
and thread counts, so two ways of computing the same float32 quantity agree only up
to rounding that grows with the magnitudes summed. A fixed absolute tolerance is too
tight for large entries and meaningless for tiny ones; these tolerances scale with
the largest entry of what is compared.
"""

from __future__ import annotations

import torch

#: float32 rounding (1.2e-7) times a margin for sums over hundreds of terms in a different order.
FLOAT32_REL = 1e-5


def assert_close_scaled(actual: torch.Tensor, expected: torch.Tensor, rel: float = FLOAT32_REL,
                        msg: str | None = None) -> None:
    """Every entry within `rel` times the largest |entry| of `expected` (plus `rel` of itself).

    A real error (a wrong term, a missing mask) moves entries by a sizeable share of the
    largest one, far beyond this; reordered float32 sums move them by ~1e-7 of it.
    """
    scale = float(expected.detach().abs().max()) if expected.numel() else 0.0
    torch.testing.assert_close(actual, expected, rtol=rel, atol=rel * max(scale, 1e-12), msg=msg)
