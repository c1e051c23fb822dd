// CPU kernels of padkern::ragged_conv1d and its backward (the plan, shared with CUDA, is
// padkern/conv1d_plan.h). Every kernel is parallel over token ranges; a range finds the
// sequence of its first token by binary search and then walks the offsets, so each token
// knows its own sequence's rows and reads nothing outside them. Channels are the inner,
// unit-stride loop, which the compiler vectorises.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "padkern/conv1d_layout.h"
#include "padkern/conv1d_plan.h"
#include "padkern/int_math.h"
#include "padkern/tensor_checks.h"
#include "conv1d_grouped.h"

namespace padkern {
namespace cpu {
namespace {

// About this many multiply-adds per parallel task: below it a task costs more to start
// than it computes.
constexpr int64_t kTaskWork = 1 << 15;

int64_t token_grain(int64_t work_per_token) { return std::max<int64_t>(1, kTaskWork / std::max<int64_t>(1, work_per_token)); }

// Calls visit(t, span) for t in [begin, end) with span the rows of t's sequence.
template <typename Visit>
void walk_tokens(const int64_t* offsets, int64_t batch, int64_t rows, int64_t begin, int64_t end, Visit visit) {
  int64_t b = sequence_of_token(offsets, batch, begin);
  SequenceSpan span = sequence_span(offsets, b, rows);
  for (int64_t t = begin; t < end; ++t) {
    while (t >= span.eos && b + 1 < batch) span = sequence_span(offsets, ++b, rows);
    visit(t, span);
  }
}

template <typename scalar_t>
void depthwise_kernel(const scalar_t* x, const int64_t* offsets, int64_t batch, int64_t rows, int64_t channels,
                      const at::opmath_type<scalar_t>* taps_weight, const scalar_t* bias, ConvTaps taps, scalar_t* out) {
  using A = at::opmath_type<scalar_t>;
  at::parallel_for(0, rows, token_grain(channels * taps.count), [&](int64_t begin, int64_t end) {
    std::vector<A> acc(channels);
    A* __restrict__ a = acc.data();
    walk_tokens(offsets, batch, rows, begin, end, [&](int64_t t, const SequenceSpan& span) {
      for (int64_t c = 0; c < channels; ++c) a[c] = bias == nullptr ? A(0) : static_cast<A>(bias[c]);
      for (int64_t j = 0; j < taps.count; ++j) {
        const int64_t source = tap_source(t, tap_shift(taps, j), span);
        if (source < 0) continue;
        const scalar_t* __restrict__ row = x + source * channels;
        const A* __restrict__ w = taps_weight + j * channels;
        for (int64_t c = 0; c < channels; ++c) a[c] += w[c] * static_cast<A>(row[c]);
      }
      scalar_t* __restrict__ out_row = out + t * channels;
      for (int64_t c = 0; c < channels; ++c) out_row[c] = static_cast<scalar_t>(a[c]);
    });
  });
}

// Fixed token chunks (not at::parallel_for's per-thread ranges), each summed into its own
// partial: the result does not depend on the thread count.
constexpr int64_t kMaxWeightGradChunks = 64;

// Weights per group (C_in/G x C_out/G x k) up to which grouped convolutions run the direct
// kernels (conv1d_grouped.h) rather than the GEMM route: every token tile streams its
// group's weights, which must stay in L2. Measured on one core (AVX-512), forward: direct
// 1.3x faster at 256 x 256 x 3, 1.15x at 512 x 512 x 3, and 1.7x slower at 1024 x 1024 x 3.
constexpr int64_t kGroupedDirectWeights = 1 << 18;

template <typename scalar_t>
void depthwise_weight_grad_kernel(const scalar_t* grad, const scalar_t* x, const int64_t* offsets, int64_t batch,
                                  int64_t rows, int64_t channels, ConvTaps taps, at::opmath_type<scalar_t>* partials,
                                  int64_t chunks) {
  using A = at::opmath_type<scalar_t>;
  const int64_t chunk_rows = ceil_div(rows, chunks);
  at::parallel_for(0, chunks, 1, [&](int64_t first, int64_t last) {
    for (int64_t chunk = first; chunk < last; ++chunk) {
      A* __restrict__ part = partials + chunk * taps.count * channels;
      std::fill(part, part + taps.count * channels, A(0));
      const int64_t begin = std::min(rows, chunk * chunk_rows), end = std::min(rows, begin + chunk_rows);
      if (begin >= end) continue;
      walk_tokens(offsets, batch, rows, begin, end, [&](int64_t t, const SequenceSpan& span) {
        const scalar_t* __restrict__ g = grad + t * channels;
        for (int64_t j = 0; j < taps.count; ++j) {
          const int64_t source = tap_source(t, tap_shift(taps, j), span);
          if (source < 0) continue;
          const scalar_t* __restrict__ row = x + source * channels;
          A* __restrict__ p = part + j * channels;
          for (int64_t c = 0; c < channels; ++c) p[c] += static_cast<A>(g[c]) * static_cast<A>(row[c]);
        }
      });
    }
  });
}

template <typename scalar_t>
void gather_taps_kernel(const scalar_t* y, const int64_t* offsets, int64_t batch, int64_t rows, int64_t groups,
                        int64_t per_group, ConvTaps taps, const scalar_t* bias, scalar_t* out) {
  using A = at::opmath_type<scalar_t>;
  const int64_t width = groups * per_group, y_row = taps.count * per_group;
  at::parallel_for(0, rows, token_grain(width * taps.count), [&](int64_t begin, int64_t end) {
    std::vector<A> acc(width);
    A* __restrict__ a = acc.data();
    walk_tokens(offsets, batch, rows, begin, end, [&](int64_t t, const SequenceSpan& span) {
      for (int64_t n = 0; n < width; ++n) a[n] = bias == nullptr ? A(0) : static_cast<A>(bias[n]);
      for (int64_t j = 0; j < taps.count; ++j) {
        const int64_t source = tap_source(t, tap_shift(taps, j), span);
        if (source < 0) continue;
        for (int64_t g = 0; g < groups; ++g) {
          const scalar_t* __restrict__ tap = y + (g * rows + source) * y_row + j * per_group;
          A* __restrict__ ag = a + g * per_group;
          for (int64_t n = 0; n < per_group; ++n) ag[n] += static_cast<A>(tap[n]);
        }
      }
      scalar_t* __restrict__ out_row = out + t * width;
      for (int64_t n = 0; n < width; ++n) out_row[n] = static_cast<scalar_t>(a[n]);
    });
  });
}

// [G, k, C, N] -> [G, k, C_pad, N_pad] in the accumulation dtype, zeros in the padding.
at::Tensor padded_lanes(const at::Tensor& per_group, int64_t rows, int64_t lanes, at::ScalarType dtype) {
  at::Tensor out = at::zeros({per_group.size(0), per_group.size(1), rows, lanes}, per_group.options().dtype(dtype));
  out.narrow(2, 0, per_group.size(2)).narrow(3, 0, per_group.size(3)).copy_(per_group);
  return out;
}

// The register width for `channels` output lanes: the machine's, or 32 bytes where half of a
// 64-byte register would hold them all (4 channels per group: half the lanes wasted, not 3/4).
template <typename scalar_t>
int register_bytes_for(int64_t channels) {
  return channels * static_cast<int64_t>(sizeof(at::opmath_type<scalar_t>)) <= 32 ? 32 : register_bytes();
}

template <typename scalar_t>
void grouped_forward(const at::Tensor& x, const at::Tensor& offsets, const at::Tensor& taps_weight,
                     const c10::optional<at::Tensor>& bias, ConvTaps taps, at::Tensor& out) {
  using A = at::opmath_type<scalar_t>;
  const int64_t groups = taps_weight.size(0), n = taps_weight.size(3);
  const int bytes = register_bytes_for<scalar_t>(n);
  const int64_t lanes = bytes / static_cast<int64_t>(sizeof(A));
  const GroupedShape s{groups, taps_weight.size(2), n, round_up(n, lanes)};
  const at::ScalarType acc = at::toOpMathType(x.scalar_type());
  const at::Tensor weight_lanes = padded_lanes(taps_weight, s.in_per_group, s.out_lanes, acc);
  at::Tensor bias_lanes = at::zeros({groups, s.out_lanes}, x.options().dtype(acc));
  if (bias.has_value()) bias_lanes.narrow(1, 0, n).copy_(bias->view({groups, n}));
  const at::Tensor zero_row = at::zeros({x.size(1)}, x.options());
  const int64_t rows = x.size(0), batch = offsets.size(0) - 1, tiles = ceil_div(rows, kTokenTile);
  const auto tokens = bytes == 64 ? &grouped_tokens<scalar_t, 64> : &grouped_tokens<scalar_t, 32>;
  at::parallel_for(0, tiles, std::max<int64_t>(1, token_grain(out.size(1) * s.in_per_group * taps.count) / kTokenTile),
                   [&](int64_t first, int64_t last) {
                     tokens(x.data_ptr<scalar_t>(), offsets.data_ptr<int64_t>(), batch, rows, s,
                            weight_lanes.data_ptr<A>(), bias_lanes.data_ptr<A>(), taps, zero_row.data_ptr<scalar_t>(),
                            first * kTokenTile, std::min(rows, last * kTokenTile), out.data_ptr<scalar_t>());
                   });
}

// Fixed token chunks of at least this many rows for the grouped weight gradient, each
// with its own partial per group: enough work per (chunk, group) task to hide starting it.
constexpr int64_t kGroupedChunkRows = 256;

template <typename scalar_t>
at::Tensor grouped_weight_grad(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& offsets, int64_t groups,
                               ConvTaps taps) {
  using A = at::opmath_type<scalar_t>;
  const int64_t rows = x.size(0), batch = offsets.size(0) - 1;
  const int64_t c = x.size(1) / groups, n = grad.size(1) / groups, in_lanes = round_up(c, kChannelTile);
  const int bytes = register_bytes_for<scalar_t>(n);
  const int64_t lanes = bytes / static_cast<int64_t>(sizeof(A));
  const GroupedShape s{groups, c, n, round_up(n, lanes)};
  // Partials past x's own size are not worth their parallelism: small groups pad to whole
  // registers and channel tiles (C = 1, N = 2 pads 64x at float32 on AVX-512).
  const int64_t partial_size = groups * taps.count * in_lanes * s.out_lanes;
  const int64_t most_chunks = std::max<int64_t>(1, std::min(kMaxWeightGradChunks, x.numel() / partial_size));
  const int64_t chunk_rows = std::max(kGroupedChunkRows, ceil_div(rows, most_chunks));
  const int64_t chunks = ceil_div(rows, chunk_rows);
  at::Tensor partials = at::empty({chunks, groups, taps.count, in_lanes, s.out_lanes},
                                  x.options().dtype(at::toOpMathType(x.scalar_type())));
  const at::Tensor zero_row = at::zeros({x.size(1)}, x.options());
  const auto kernel =
      bytes == 64 ? &grouped_weight_grad_tokens<scalar_t, 64> : &grouped_weight_grad_tokens<scalar_t, 32>;
  at::parallel_for(0, chunks * groups, 1, [&](int64_t first, int64_t last) {
    for (int64_t task = first; task < last; ++task) {
      const int64_t chunk = task / groups, g = task % groups, begin = chunk * chunk_rows;
      kernel(grad.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(), offsets.data_ptr<int64_t>(), batch, rows, s,
             in_lanes, taps, zero_row.data_ptr<scalar_t>(), g, begin, std::min(rows, begin + chunk_rows),
             partials.data_ptr<A>() + task * taps.count * in_lanes * s.out_lanes);
    }
  });
  return partials.sum(0).narrow(2, 0, c).narrow(3, 0, n);
}

struct CpuKernels {
  static constexpr bool kHasGroupedDirect = true;

  static void check_offsets(const at::Tensor& offsets, int64_t rows) { check_offsets_contents(offsets, rows); }

  // The GEMM route writes k per-tap products [L, k C_out] and gathers them back, around
  // GEMMs that, with few channels per group, run far below the GEMM rate (16 channels per
  // group: 3.5x slower than the direct kernels).
  // Not for a dense float16/bfloat16 convolution: its one GEMM per tap set runs in the
  // reduced dtype (bfloat16 hardware where the CPU has it: 2x faster than the direct
  // kernels' float lanes at 256 x 256 x 3).
  static bool grouped_direct(const ConvShape& s, at::ScalarType dtype) {
    if (s.groups == 1 && at::isReducedFloatingType(dtype)) return false;
    return s.in_per_group() * s.out_per_group() * s.kernel_size <= kGroupedDirectWeights;
  }

  static void grouped(const at::Tensor& x, const at::Tensor& offsets, const at::Tensor& taps_weight,
                      const c10::optional<at::Tensor>& bias, ConvTaps taps, at::Tensor& out) {
    if (x.scalar_type() == at::kHalf) {
      // c10::Half converts in software, and the tiles read each input k x C_out/G times: one
      // float32 copy is 1.6-2x faster at 16 groups (bfloat16's conversion is a shift: read in place).
      at::Tensor out32 = at::empty(out.sizes(), out.options().dtype(at::kFloat));
      grouped(x.to(at::kFloat), offsets, taps_weight, bias, taps, out32);
      out.copy_(out32);
      return;
    }
    AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, x.scalar_type(), "padkern_conv1d_grouped_cpu", [&] {
      grouped_forward<scalar_t>(x, offsets, taps_weight, bias, taps, out);
    });
  }

  static at::Tensor grouped_weight_grad(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& offsets,
                                        int64_t groups, ConvTaps taps) {
    if (x.scalar_type() == at::kHalf) {  // as in grouped()
      return grouped_weight_grad(grad.to(at::kFloat), x.to(at::kFloat), offsets, groups, taps);
    }
    at::Tensor out;
    AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, x.scalar_type(), "padkern_conv1d_grouped_wgrad_cpu", [&] {
      out = cpu::grouped_weight_grad<scalar_t>(grad, x, offsets, groups, taps);
    });
    return out;
  }

  static void depthwise(const at::Tensor& x, const at::Tensor& offsets, const at::Tensor& taps_weight,
                        const c10::optional<at::Tensor>& bias, ConvTaps taps, at::Tensor& out) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "padkern_conv1d_depthwise_cpu", [&] {
      depthwise_kernel<scalar_t>(x.data_ptr<scalar_t>(), offsets.data_ptr<int64_t>(), offsets.size(0) - 1, x.size(0),
                                 x.size(1), taps_weight.data_ptr<at::opmath_type<scalar_t>>(),
                                 bias.has_value() ? bias->data_ptr<scalar_t>() : nullptr, taps, out.data_ptr<scalar_t>());
    });
  }

  static at::Tensor depthwise_weight_grad(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& offsets,
                                          ConvTaps taps) {
    const int64_t rows = x.size(0), channels = x.size(1);
    const int64_t chunks = std::min(kMaxWeightGradChunks, (rows + token_grain(channels * taps.count) - 1) /
                                                              token_grain(channels * taps.count));
    at::Tensor partials = at::empty({chunks, taps.count, channels}, x.options().dtype(at::toOpMathType(x.scalar_type())));
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "padkern_conv1d_depthwise_wgrad_cpu", [&] {
      depthwise_weight_grad_kernel<scalar_t>(grad.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(),
                                             offsets.data_ptr<int64_t>(), offsets.size(0) - 1, rows, channels, taps,
                                             partials.data_ptr<at::opmath_type<scalar_t>>(), chunks);
    });
    return partials.sum(0);
  }

  static void gather_taps(const at::Tensor& y, const at::Tensor& offsets, ConvTaps taps,
                          const c10::optional<at::Tensor>& bias, at::Tensor& out) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, y.scalar_type(), "padkern_conv1d_gather_cpu", [&] {
      gather_taps_kernel<scalar_t>(y.data_ptr<scalar_t>(), offsets.data_ptr<int64_t>(), offsets.size(0) - 1, y.size(1),
                                   y.size(0), y.size(2) / taps.count, taps,
                                   bias.has_value() ? bias->data_ptr<scalar_t>() : nullptr, out.data_ptr<scalar_t>());
    });
  }

  static at::Tensor shifted_rows(const at::Tensor& x, const at::Tensor& offsets, int64_t shift) {
    at::Tensor out = at::empty_like(x);
    const int64_t rows = x.size(0), batch = offsets.size(0) - 1, row_bytes = x.size(1) * x.element_size();
    const char* source_base = static_cast<const char*>(x.data_ptr());
    char* out_base = static_cast<char*>(out.data_ptr());
    const int64_t* o = offsets.data_ptr<int64_t>();
    at::parallel_for(0, rows, token_grain(x.size(1)), [&](int64_t begin, int64_t end) {
      walk_tokens(o, batch, rows, begin, end, [&](int64_t t, const SequenceSpan& span) {
        const int64_t source = tap_source(t, shift, span);
        if (source < 0) {
          std::memset(out_base + t * row_bytes, 0, row_bytes);
        } else {
          std::memcpy(out_base + t * row_bytes, source_base + source * row_bytes, row_bytes);
        }
      });
    });
    return out;
  }
};

at::Tensor ragged_conv1d_cpu(const at::Tensor& values, const at::Tensor& offsets, const at::Tensor& weight,
                             const c10::optional<at::Tensor>& bias, int64_t left_pad, int64_t dilation, int64_t groups) {
  return conv1d_forward<CpuKernels>(values, offsets, weight, bias, left_pad, dilation, groups);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> ragged_conv1d_backward_cpu(
    const at::Tensor& grad_output, const at::Tensor& values, const at::Tensor& offsets, const at::Tensor& weight,
    int64_t left_pad, int64_t dilation, int64_t groups, std::array<bool, 3> output_mask) {
  return conv1d_backward<CpuKernels>(grad_output, values, offsets, weight, left_pad, dilation, groups, output_mask);
}

}  // namespace

TORCH_LIBRARY_IMPL(padkern, CPU, m) {
  m.impl("ragged_conv1d", &ragged_conv1d_cpu);
  m.impl("ragged_conv1d_backward", &ragged_conv1d_backward_cpu);
}

}  // namespace cpu
}  // namespace padkern
