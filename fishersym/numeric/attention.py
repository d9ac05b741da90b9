"""Attention through differentiable kernels while fishersym differentiates (issue 9 item 4).

torch picks fused kernels for ``scaled_dot_product_attention`` (flash / memory-efficient) and,
for ``nn.MultiheadAttention`` and ``nn.TransformerEncoderLayer`` in eval mode, a fused "fast
path" (``torch._transformer_encoder_layer_fwd``, ``torch._native_multi_head_attention``).  Several
of them have no rule for the transforms the engines use (forward-mode AD, vmap over per-sample
functions), and the fast path bypasses the parameters passed by ``functional_call``.  The math
kernel computes the same function, softmax(QKᵀ/√d)V, from elementary ops, so every transform of
THEORY §1–§3 (u_i = ∂h/∂θ_i by reverse mode, w_i = ∂²h/∂θ_i² by forward-over-reverse) applies.

:func:`math_attention` switches to the math kernel and disables the MHA fast path for the
duration of the block and restores the user's settings afterwards (also when the block raises).
The fast-path flag is process-global, so the block is not thread-safe.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

__all__ = ["math_attention"]


@contextlib.contextmanager
def math_attention() -> Iterator[None]:
    """Run SDPA with the math backend and with the MHA fast path disabled inside the block.

    ``torch.nn.attention.sdpa_kernel(SDPBackend.MATH)`` restores the previous backend set on exit;
    the fast-path flag (``torch.backends.mha.get_fastpath_enabled``) is read before and restored
    in a ``finally`` clause.
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel

    mha = getattr(torch.backends, "mha", None)
    saved = mha.get_fastpath_enabled() if mha is not None else None
    try:
        if mha is not None:
            mha.set_fastpath_enabled(False)
        with sdpa_kernel(SDPBackend.MATH):
            yield
    finally:
        if mha is not None:
            mha.set_fastpath_enabled(saved)
