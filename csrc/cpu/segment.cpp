// CPU kernels of padkern::segment_reduce and padkern::segment_softmax: one task per
// sequence, rows outer and features inner so the feature loops vectorise.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>
#include <vector>

#include "padkern/segment_columns.h"
#include "padkern/tensor_checks.h"

namespace padkern {
namespace cpu {
namespace {

enum SegmentMode : int64_t { kSum = 0, kMean = 1, kMax = 2 };

template <typename scalar_t>
void reduce_kernel(const scalar_t* values, const int64_t* offsets, int64_t batch, int64_t features, int64_t mode,
                   scalar_t* out, int64_t* argmax) {
  using A = at::opmath_type<scalar_t>;
  at::parallel_for(0, batch, 1, [&](int64_t begin, int64_t end) {
    std::vector<A> acc(features);
    for (int64_t b = begin; b < end; ++b) {
      const int64_t start = offsets[b], length = offsets[b + 1] - start;
      scalar_t* out_row = out + b * features;
      if (mode == kMax) {
        int64_t* arg_row = argmax + b * features;
        if (length == 0) {
          std::fill(arg_row, arg_row + features, int64_t{-1});
          std::fill(out_row, out_row + features, scalar_t(0));
          continue;
        }
        column_maxima(values + start * features, length, start, acc.data(), arg_row, features);
        for (int64_t d = 0; d < features; ++d) out_row[d] = static_cast<scalar_t>(acc[d]);
      } else {
        std::fill(acc.begin(), acc.end(), A(0));
        for (int64_t t = 0; t < length; ++t) {
          const scalar_t* row = values + (start + t) * features;
          for (int64_t d = 0; d < features; ++d) acc[d] += static_cast<A>(row[d]);
        }
        const A scale = (mode == kMean && length > 0) ? A(1) / static_cast<A>(length) : A(1);
        for (int64_t d = 0; d < features; ++d) out_row[d] = static_cast<scalar_t>(acc[d] * scale);
      }
    }
  });
}

std::tuple<at::Tensor, at::Tensor> segment_reduce_cpu(const at::Tensor& values, const at::Tensor& offsets, int64_t mode) {
  check_segment_inputs(values, offsets, mode);
  check_offsets_contents(offsets, values.size(0));
  const int64_t batch = offsets.size(0) - 1, features = values.size(1);
  const at::Tensor input = values.contiguous();
  at::Tensor out = at::empty({batch, features}, values.options());
  at::Tensor argmax = at::empty({mode == kMax ? batch : 0, features}, values.options().dtype(at::kLong));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, values.scalar_type(), "padkern_segment_reduce_cpu", [&] {
    reduce_kernel<scalar_t>(input.data_ptr<scalar_t>(), offsets.data_ptr<int64_t>(), batch, features, mode,
                            out.data_ptr<scalar_t>(), mode == kMax ? argmax.data_ptr<int64_t>() : nullptr);
  });
  return {out, argmax};
}

template <typename scalar_t>
void softmax_kernel(const scalar_t* values, const int64_t* offsets, int64_t batch, int64_t features, scalar_t* out) {
  using A = at::opmath_type<scalar_t>;
  at::parallel_for(0, batch, 1, [&](int64_t begin, int64_t end) {
    std::vector<A> peak(features), total(features);
    for (int64_t b = begin; b < end; ++b) {
      const int64_t start = offsets[b], length = offsets[b + 1] - start;
      // Three passes over the sequence's rows, which stay in cache between them (a sequence of
      // 128 rows x 256 floats is 128 KB).
      const scalar_t* rows = values + start * features;
      column_peaks(rows, length, peak.data(), features);
      column_exps(rows, length, peak.data(), total.data(), out + start * features, features);
      divide_columns(out + start * features, length, total.data(), features);
    }
  });
}

at::Tensor segment_softmax_cpu(const at::Tensor& values, const at::Tensor& offsets) {
  check_segment_inputs(values, offsets, kSum);
  check_offsets_contents(offsets, values.size(0));
  const at::Tensor input = values.contiguous();
  at::Tensor out = at::empty_like(input);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, values.scalar_type(), "padkern_segment_softmax_cpu", [&] {
    softmax_kernel<scalar_t>(input.data_ptr<scalar_t>(), offsets.data_ptr<int64_t>(), offsets.size(0) - 1,
                             input.size(1), out.data_ptr<scalar_t>());
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(padkern, CPU, m) {
  m.impl("segment_reduce", &segment_reduce_cpu);
  m.impl("segment_softmax", &segment_softmax_cpu);
}

}  // namespace cpu
}  // namespace padkern
