// CPU kernels of padkern::grouped_linear and padkern::ragged_outer_bmm: a GEMM (brgemm
// calls for float32, torch's otherwise) on each sequence's real rows, read in place, parallel
// across sequences (ragged_outer_bmm also across blocks of its output), each followed by its
// fused epilogue (bias, activation, pre-activation for backward). A ragged input with a shared
// weight is one GEMM over all L rows.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/LegacyTypeDispatch.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>
#include <type_traits>
#include <vector>

#include "brgemm_blocks.h"
#include "linear_gemm.h"
#include "padkern/epilogue_rows.h"
#include "padkern/int_math.h"
#include "padkern/tensor_checks.h"

namespace padkern {
namespace cpu {
namespace {

// Rows of sequence b: a view of the padded rows t < length, or of the ragged slice.
at::Tensor sequence_rows(const at::Tensor& tensor, bool padded, int64_t b, int64_t start, int64_t length) {
  return padded ? tensor.select(0, b).narrow(0, 0, length) : tensor.narrow(0, start, length);
}

// rows_out = rows_in x weight, one sequence's rows by its own weight [K, N]: padkern's brgemm
// blocks on raw pointers for float32 where the caller found both operands row-major
// (brgemm_ok), ATen's mm otherwise.
template <typename scalar_t>
void sequence_product(at::Tensor& rows_out, const at::Tensor& rows_in, const at::Tensor& weight, bool brgemm_ok) {
  if constexpr (std::is_same_v<scalar_t, float>) {
    if (brgemm_ok) {
      brgemm_product(rows_in.size(0), weight.size(1), weight.size(0), rows_in.data_ptr<float>(), rows_in.stride(0),
                     weight.data_ptr<float>(), weight.stride(0), rows_out.data_ptr<float>(), rows_out.stride(0),
                     /*accumulate=*/false);
      return;
    }
  }
  at::mm_out(rows_out, rows_in, weight);
}

// Elements of output a task of the all-rows epilogue takes at least (a few microseconds).
constexpr int64_t kEpilogueGrainElements = 1 << 15;

// Per sequence, in one task: zero its padded rows, GEMM its real rows (a single-threaded
// GEMM inside the parallel region), then the epilogue while the rows are in cache.
std::tuple<at::Tensor, at::Tensor> grouped_linear_cpu(const at::Tensor& input, const at::Tensor& offsets,
                                                      const at::Tensor& weight, const c10::optional<at::Tensor>& bias,
                                                      int64_t activation, bool save_preactivation,
                                                      int64_t /*total_tokens: backward only*/) {
  check_grouped_linear_inputs(input, offsets, weight, bias, activation);
  const bool padded = input.dim() == 3;
  if (padded) {
    check_offsets_contents(offsets, /*rows: any L*/ -1, input.size(1));
  } else {
    check_offsets_contents(offsets, input.size(0));
  }
  const int64_t batch = offsets.size(0) - 1;
  const int64_t features = weight.dim() == 2 ? weight.size(0) : weight.size(2);
  std::vector<int64_t> shape(input.sizes().begin(), input.sizes().end());
  shape.back() = features;
  const bool shared_weight = weight.dim() == 2;  // F.linear's [N, K], shared by every sequence
  const bool one_gemm = !padded && shared_weight;  // all L rows share one weight
  const int64_t features_in = input.size(-1), row_stride = input.stride(-2);
  const bool float_rows_row_major =
      input.scalar_type() == at::kFloat && input.stride(-1) == 1 && row_stride >= features_in;
  // A weight shared by a padded batch's sequences, float32: brgemm calls with weight^T laid out
  // once ([K, N], free in the backward, whose weight is already a transpose) write each
  // sequence's product straight into its output rows. Through oneDNN's linear each product was
  // a fresh tensor copied into place. Only for rows K apart (batch-first): brgemm keeps a
  // kernel per leading dimension on every thread, and time-first rows lie B K apart, a new
  // kernel set for every batch size.
  const bool shared_brgemm = shared_weight && padded && float_rows_row_major && row_stride == features_in;
  const at::Tensor shared_transposed = shared_brgemm ? weight.t().contiguous() : at::Tensor();
  const std::optional<LinearGemm> linear =
      shared_weight && !shared_brgemm ? std::optional<LinearGemm>(weight) : std::nullopt;
  // Without an activation the bias rides in LinearGemm's product and no epilogue pass is needed.
  const bool bias_in_gemm = bias.has_value() && activation == kIdentity && linear.has_value();
  const std::optional<at::Tensor> gemm_bias = bias_in_gemm ? bias : std::nullopt;
  at::Tensor out = one_gemm ? linear->product(input, gemm_bias) : at::empty(shape, input.options());
  const bool save = save_preactivation && activation != kIdentity;
  at::Tensor preactivation = save ? at::empty(shape, input.options()) : at::empty({0}, input.options());
  const at::Tensor bias_contiguous = bias.has_value() ? bias->contiguous() : at::Tensor();
  const int64_t* offs = offsets.data_ptr<int64_t>();
  const bool needs_epilogue = activation != kIdentity || (bias.has_value() && !bias_in_gemm);
  // A weight per sequence, float32, both operands row-major: each sequence's product is
  // brgemm calls on raw pointers. ragged_bmm's guard case (B64, [~130, 256] x [256, 256]
  // each) ran 2x faster than through at::mm on a Zen 5 core, where MKL's GEMM is slow.
  const bool per_sequence_brgemm =
      !shared_weight && float_rows_row_major && weight.stride(2) == 1 && weight.stride(1) >= features;

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, out.scalar_type(), "padkern_grouped_linear_cpu", [&] {
    using opmath_t = at::opmath_type<scalar_t>;
    const scalar_t* bias_data = bias.has_value() && !bias_in_gemm ? bias_contiguous.data_ptr<scalar_t>() : nullptr;
    scalar_t* out_data = out.data_ptr<scalar_t>();
    scalar_t* pre_data = save ? preactivation.data_ptr<scalar_t>() : nullptr;
    if (one_gemm) {  // every row is real: the epilogue over all of them, in blocks of rows
      if (!needs_epilogue) return;
      const int64_t grain = std::max<int64_t>(1, kEpilogueGrainElements / std::max<int64_t>(features, 1));
      at::parallel_for(0, out.size(0), grain, [&](int64_t begin, int64_t end) {
        apply_epilogue<opmath_t>(activation, out_data + begin * features, save ? pre_data + begin * features : nullptr,
                                 bias_data, end - begin, features);
      });
      return;
    }
    const int64_t padded_length = padded ? input.size(1) : 0;
    at::parallel_for(0, batch, 1, [&](int64_t begin, int64_t end) {
      // Worker threads do not inherit the caller's dispatch state: stay below autograd.
      const at::AutoDispatchBelowADInplaceOrView below_autograd;
      for (int64_t b = begin; b < end; ++b) {
        const int64_t length = offs[b + 1] - offs[b];
        const int64_t first_row = padded ? b * padded_length : offs[b];
        if (padded) {
          // Padded rows read as exact zeros (and carry no pre-activation).
          const int64_t pad = (padded_length - length) * features;
          std::fill_n(out_data + (first_row + length) * features, pad, scalar_t(0));
          if (save) std::fill_n(pre_data + (first_row + length) * features, pad, scalar_t(0));
        }
        if (length == 0) continue;
        at::Tensor rows_out = sequence_rows(out, padded, b, offs[b], length);
        const at::Tensor rows_in = sequence_rows(input, padded, b, offs[b], length);
        if (shared_brgemm) {
          sequence_product<scalar_t>(rows_out, rows_in, shared_transposed, /*brgemm_ok=*/true);
        } else if (linear.has_value()) {
          rows_out.copy_(linear->product(rows_in, gemm_bias));
        } else {
          sequence_product<scalar_t>(rows_out, rows_in, weight.select(0, b), per_sequence_brgemm);
        }
        if (needs_epilogue) {
          apply_epilogue<opmath_t>(activation, out_data + first_row * features,
                                   save ? pre_data + first_row * features : nullptr, bias_data, length, features);
        }
      }
    });
  });
  return {out, preactivation};
}

at::Tensor ragged_outer_bmm_cpu(const at::Tensor& x, const at::Tensor& y, const at::Tensor& offsets) {
  check_outer_bmm_inputs(x, y, offsets);
  check_offsets_contents(offsets, x.size(0));
  const int64_t batch = offsets.size(0) - 1;
  at::Tensor out = at::empty({batch, x.size(1), y.size(1)}, x.options());
  const int64_t* offs = offsets.data_ptr<int64_t>();
  const int64_t m = x.size(1), n = y.size(1);
  // float32 with y row-major: brgemm calls on raw pointers (brgemm_outer_product). ragged_bmm's
  // weight gradient at B64 T256 K = N = 128 went through at::mm at 2.8x its floor on a Zen 5
  // core, where MKL's GEMM is slow and x_b^T is a transposed operand.
  const bool brgemm_ok = x.scalar_type() == at::kFloat && m > 0 && n > 0 && y.stride(1) == 1 && y.stride(0) >= n;
  // Work items of (sequence, block of out): a batch of one sequence (a shared weight's
  // gradient, padkern/ops/_weight_gradient.py) still spreads over the threads, by blocks of 64
  // rows and, where those are fewer than the threads, of 128 columns too. Each item runs whole on
  // one thread, and brgemm_product blocks a product the same way (64 rows, 128 columns), so every
  // element's sum runs in one order whatever the split. at::mm takes a sequence whole.
  int64_t block_rows = std::max<int64_t>(m, 1), block_columns = std::max<int64_t>(n, 1);
  if (brgemm_ok) {
    block_rows = kBrgemmRows;
    if (batch * ceil_div(m, block_rows) < at::get_num_threads()) block_columns = kBrgemmColumns;
  }
  const int64_t row_blocks = ceil_div(m, block_rows), column_blocks = ceil_div(n, block_columns);
  const int64_t blocks = row_blocks * column_blocks;
  float* out_data = brgemm_ok ? out.data_ptr<float>() : nullptr;
  at::parallel_for(0, batch * blocks, 1, [&](int64_t begin, int64_t end) {
    const at::AutoDispatchBelowADInplaceOrView below_autograd;
    for (int64_t item = begin; item < end; ++item) {
      const int64_t b = item / blocks, block = item % blocks;
      const int64_t row = block / column_blocks * block_rows, rows = std::min(block_rows, m - row);
      const int64_t column = block % column_blocks * block_columns, columns = std::min(block_columns, n - column);
      const int64_t length = offs[b + 1] - offs[b];
      if (brgemm_ok) {
        brgemm_outer_product(length, rows, columns, x.data_ptr<float>() + offs[b] * x.stride(0) + row * x.stride(1),
                             x.stride(0), x.stride(1), y.data_ptr<float>() + offs[b] * y.stride(0) + column,
                             y.stride(0), out_data + (b * m + row) * n + column, n);
      } else {
        at::Tensor out_b = out.select(0, b);
        if (length == 0) {
          out_b.zero_();
        } else {
          at::mm_out(out_b, x.narrow(0, offs[b], length).t(), y.narrow(0, offs[b], length));
        }
      }
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(padkern, CPU, m) {
  m.impl("grouped_linear", &grouped_linear_cpu);
  m.impl("ragged_outer_bmm", &ragged_outer_bmm_cpu);
}

}  // namespace cpu
}  // namespace padkern
