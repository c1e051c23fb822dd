"""Schemas of padkern's native ops, defined once; the C++ and CUDA extensions only
register implementations against them (see csrc/cpu/*.cpp, csrc/cuda/bindings.cpp).

Shape letters used throughout padkern: B sequences, T padded length, L total tokens,
D flattened feature size, K in-features, N out-features, H hidden size, G gates x H.
"""
import torch

_lib = torch.library.Library("padkern", "DEF")

# values [L, D] -> padded [B, T, D] (or [T, B, D] when batch_first is false).
_lib.define("pad(Tensor values, Tensor offsets, SymInt total_length, float padding_value, bool batch_first) -> Tensor")
# padded [B, T, D] (or [T, B, D]) -> values [L, D]; L = total_tokens = offsets[-1].
_lib.define("unpad(Tensor padded, Tensor offsets, SymInt total_tokens, bool batch_first) -> Tensor")
