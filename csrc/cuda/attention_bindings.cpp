// Registers the CUDA implementation of padkern::ragged_attention and its backward.
//
// Two routes. float16/bfloat16 on sm_80+ with D a multiple of 8 up to 256 go to torch's own
// varlen flash kernel (at::_flash_attention_forward/backward with cumulative sequence lengths,
// what torch.nested's SDPA calls); PADKERN_FLASH_ATTENTION=0 sends them to padkern's kernel
// (csrc/cuda/attention.cu), which takes everything else.
//
// The flash kernel sizes its grid by max_seqlen_q/k, host integers. Reading the longest
// sequence from the offsets would synchronise (and break CUDA-graph capture), so the token
// counts L and Lk, an upper bound known from the shapes, stand in: blocks past a sequence's
// end exit at once, which costs a near-empty launch of about B * L / 128 * Hq blocks, and its
// backward's per-row scratch is sized by the same bound.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <cstdint>
#include <cstdlib>
#include <initializer_list>
#include <limits>
#include <string>
#include <tuple>

#include "element_type.h"
#include "padkern/aten_padding.h"
#include "padkern/attention_kernels.h"
#include "padkern/cuda_check.h"
#include "padkern/tensor_checks.h"

namespace padkern {
namespace {

constexpr double kInfinity = std::numeric_limits<double>::infinity();

void check_dense(const at::Tensor& tensor, const char* name) {
  TORCH_CHECK(tensor.is_contiguous(), "padkern: ", name, " must be contiguous (row-major), got strides ",
              tensor.strides());
}

// q [L, Hq, D]; k, v [Lk, Hkv, D], Hq a multiple of Hkv; all row-major, one dtype and device;
// offsets and kv_offsets [B+1] int64.
void check_attention_inputs(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& offsets,
                            const at::Tensor& kv_offsets) {
  TORCH_CHECK(q.dim() == 3, "padkern: q must be [L, Hq, D], got shape ", q.sizes());
  TORCH_CHECK(k.dim() == 3 && k.size(2) == q.size(2) && k.size(1) >= 1 && q.size(1) % k.size(1) == 0,
              "padkern: k must be [Lk, Hkv, D=", q.size(2), "] with Hq=", q.size(1), " a multiple of Hkv, got ",
              k.sizes());
  check_same_kind(k, q, "k");
  check_same_kind(v, q, "v");
  check_shape(v, k.sizes(), "v");
  check_dense(q, "q");
  check_dense(k, "k");
  check_dense(v, "v");
  check_offsets_layout(offsets, q.device());
  check_offsets_layout(kv_offsets, q.device());
  check_shape(kv_offsets, offsets.sizes(), "kv_offsets");
}

// Whether torch's varlen flash kernel takes this call; each limit below is a case it cannot
// take, which padkern's own kernel does instead (the two write lse alike, so a forward on one
// route and its backward on the other agree). `tensors`: every tensor flash reads or writes.
bool flash_route(const at::Tensor& q, const at::Tensor& k, const at::Tensor& offsets, const at::Tensor& kv_offsets,
                 bool causal, std::initializer_list<at::Tensor> tensors) {
  const char* value = std::getenv("PADKERN_FLASH_ATTENTION");
  if (value != nullptr && std::string(value) == "0") return false;
  const bool half = q.scalar_type() == at::kHalf || q.scalar_type() == at::kBFloat16;
  const auto* device = at::cuda::getCurrentDeviceProperties();
  const int64_t head_dim = q.size(2), batch = offsets.size(0) - 1, int_limit = std::numeric_limits<int32_t>::max();
  if (!half || device->major < 8 || head_dim % 8 != 0 || head_dim > 256) return false;
  // Its grid is (row blocks, B, Hq): gridDim.y and z stop at 65535.
  if (batch > cuda::kMaxGridY || q.size(1) > cuda::kMaxGridY) return false;
  // Its cumulative lengths are int32, and its backward sizes int32 scratch by L + 128 B.
  if (q.size(0) + 128 * batch >= int_limit || k.size(0) + 128 * batch >= int_limit) return false;
  // It aligns a causal mask to each score matrix's bottom-right corner, padkern to its top-left:
  // the same only where every sequence has as many keys as queries.
  if (causal && !offsets.is_same(kv_offsets)) return false;
  // torch's own SDPA refuses training with 192 < D <= 224 on sm_86/89/120/121 (the backward
  // kernel for that size needs more shared memory than they have).
  const bool small_shared = (device->major == 8 && device->minor > 0) || device->major == 12;
  if (small_shared && head_dim > 192 && head_dim <= 224) return false;
  // It loads 16 bytes at a time: a view starting mid-vector would fault.
  for (const at::Tensor& tensor : tensors) {
    if (reinterpret_cast<std::uintptr_t>(tensor.data_ptr()) % 16 != 0) return false;
  }
  return true;
}

// The offsets as the flash kernel's int32 cumulative lengths, clamped into [0, rows] and made
// non-decreasing on the device: it reads them unchecked, and padkern's kernels promise never
// to access outside a tensor whatever the offsets hold.
at::Tensor cumulative_lengths(const at::Tensor& offsets, int64_t rows) {
  return std::get<0>(at::cummax(offsets.clamp(0, rows), 0)).to(at::kInt);
}

// max_seqlen bounds: the token count, at least 2 (flash reads a bound of 1 as "every
// sequence has one query" and reshapes by it).
int64_t length_bound(int64_t rows) { return rows < 2 ? 2 : rows; }

// Grid of `rows_per_block`-row tiles over each sequence: the prefix of tile counts (on the
// device) and an upper bound of their total known without reading the offsets.
std::tuple<at::Tensor, int64_t> tile_plan(const at::Tensor& offsets, int64_t rows, int rows_per_block) {
  const int64_t batch = offsets.size(0) - 1;
  const at::Tensor counts = (span_lengths(offsets, rows) + (rows_per_block - 1)).div(rows_per_block, "floor");
  const at::Tensor starts = at::cat({at::zeros({1}, offsets.options()), at::cumsum(counts, 0)});
  const int64_t tiles = (rows + rows_per_block - 1) / rows_per_block + batch;
  TORCH_CHECK(tiles < (int64_t{1} << 31), "padkern: ragged_attention's grid of ", tiles,
              " tiles exceeds CUDA's limit of 2^31 - 1");
  return {starts, tiles};
}

cuda::AttentionArgs attention_args(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                   const at::Tensor& offsets, const at::Tensor& kv_offsets, bool causal, double scale) {
  cuda::AttentionArgs args{};
  args.q = q.data_ptr();
  args.k = k.data_ptr();
  args.v = v.data_ptr();
  args.offsets = offsets.data_ptr<int64_t>();
  args.kv_offsets = kv_offsets.data_ptr<int64_t>();
  args.tokens = q.size(0);
  args.kv_tokens = k.size(0);
  args.batch = offsets.size(0) - 1;
  args.heads = q.size(1);
  args.kv_heads = k.size(1);
  args.head_dim = q.size(2);
  args.scale = scale;
  args.causal = causal;
  return args;
}

// The own kernel's tiles hold rows of up to kAttentionMaxHeadDim features, and its grid's y
// axis, which CUDA stops at kMaxGridY, the query (or key/value) heads.
void check_own_kernel_limits(const at::Tensor& q) {
  TORCH_CHECK(q.size(2) <= cuda::kAttentionMaxHeadDim, "padkern: the cuda backend's attention kernel takes head_dim up to ",
              cuda::kAttentionMaxHeadDim, ", got ", q.size(2), "; backend='reference' takes any");
  TORCH_CHECK(q.size(1) <= cuda::kMaxGridY, "padkern: the cuda backend's attention kernel takes up to ",
              cuda::kMaxGridY, " query heads, got ", q.size(1), "; backend='reference' takes any");
}

std::tuple<at::Tensor, at::Tensor> ragged_attention_cuda(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                         const at::Tensor& offsets, const at::Tensor& kv_offsets,
                                                         bool causal, double scale) {
  check_attention_inputs(q, k, v, offsets, kv_offsets);
  const c10::cuda::CUDAGuard guard(q.device());
  if (q.numel() == 0 || k.size(0) == 0) {  // no query, or no key anywhere
    return {at::zeros_like(q), at::full({q.size(0), q.size(1)}, -kInfinity, q.options().dtype(at::kFloat))};
  }
  if (flash_route(q, k, offsets, kv_offsets, causal, {q, k, v})) {
    auto result = at::_flash_attention_forward(q, k, v, cumulative_lengths(offsets, q.size(0)),
                                               cumulative_lengths(kv_offsets, k.size(0)), length_bound(q.size(0)),
                                               length_bound(k.size(0)), 0.0, causal, false, scale);
    // Its lse is [Hq, L] with +inf for a row without keys; padkern's is [L, Hq] with -inf.
    at::Tensor lse = std::get<1>(result).t().contiguous();
    lse.masked_fill_(lse == kInfinity, -kInfinity);
    return {std::get<0>(result), lse};
  }
  check_own_kernel_limits(q);
  cuda::AttentionArgs args = attention_args(q, k, v, offsets, kv_offsets, causal, scale);
  at::Tensor out = at::empty_like(q);
  at::Tensor lse = at::empty({q.size(0), q.size(1)}, q.options().dtype(at::kFloat));
  auto [starts, tiles] = tile_plan(offsets, q.size(0), cuda::attention_rows_per_block(q.size(2)));
  args.tile_starts = starts.data_ptr<int64_t>();
  args.tiles = tiles;
  args.out_w = out.data_ptr();
  args.lse = lse.data_ptr<float>();
  C10_CUDA_CHECK(cuda::launch_attention_forward(element_type(q), args, at::cuda::getCurrentCUDAStream()));
  return {out, lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> ragged_attention_backward_cuda(
    const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& out,
    const at::Tensor& lse, const at::Tensor& offsets, const at::Tensor& kv_offsets, bool causal, double scale) {
  check_attention_inputs(q, k, v, offsets, kv_offsets);
  check_same_kind(grad_out, q, "grad_out");
  check_same_kind(out, q, "out");
  check_shape(grad_out, q.sizes(), "grad_out");
  check_shape(out, q.sizes(), "out");
  check_shape(lse, {q.size(0), q.size(1)}, "lse");
  TORCH_CHECK(lse.scalar_type() == at::kFloat && lse.device() == q.device(), "padkern: lse must be float32 on ",
              q.device(), ", got ", lse.scalar_type(), " on ", lse.device());
  check_dense(grad_out, "grad_out");
  check_dense(out, "out");
  check_dense(lse, "lse");
  const c10::cuda::CUDAGuard guard(q.device());
  if (q.numel() == 0 || k.numel() == 0) return {at::zeros_like(q), at::zeros_like(k), at::zeros_like(v)};
  if (flash_route(q, k, offsets, kv_offsets, causal, {q, k, v, out, grad_out})) {
    at::Tensor flash_lse = lse.t().contiguous();
    flash_lse.masked_fill_(flash_lse == -kInfinity, kInfinity);  // flash's mark of a row without keys
    // Dropout is off: the generator state is never read.
    const at::Tensor rng_state = at::empty({2}, q.options().dtype(at::kUInt64));
    const at::Tensor unused = at::empty({}, q.options().dtype(at::kUInt64));
    return at::_flash_attention_backward(grad_out, q, k, v, out, flash_lse, cumulative_lengths(offsets, q.size(0)),
                                         cumulative_lengths(kv_offsets, k.size(0)), length_bound(q.size(0)),
                                         length_bound(k.size(0)), 0.0, causal, rng_state, unused, scale);
  }
  check_own_kernel_limits(q);
  const int rows_per_block = cuda::attention_rows_per_block(q.size(2));
  at::Tensor grad_q = at::empty_like(q), grad_k = at::empty_like(k), grad_v = at::empty_like(v);
  // delta = rowsum(dO * O) and lse, both [L, Hq] in the accumulator type, for the dK/dV pass.
  const auto accumulate = q.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  at::Tensor scratch = at::empty({2, q.size(0), q.size(1)}, q.options().dtype(accumulate));
  cuda::AttentionArgs q_tiles = attention_args(q, k, v, offsets, kv_offsets, causal, scale);
  q_tiles.out = out.data_ptr();
  q_tiles.grad_out = grad_out.data_ptr();
  q_tiles.lse = lse.data_ptr<float>();
  q_tiles.delta = scratch.data_ptr();
  q_tiles.grad_q = grad_q.data_ptr();
  q_tiles.grad_k = grad_k.data_ptr();
  q_tiles.grad_v = grad_v.data_ptr();
  cuda::AttentionArgs kv_tiles = q_tiles;
  auto [q_starts, q_count] = tile_plan(offsets, q.size(0), rows_per_block);
  auto [kv_starts, kv_count] = tile_plan(kv_offsets, k.size(0), rows_per_block);
  q_tiles.tile_starts = q_starts.data_ptr<int64_t>();
  q_tiles.tiles = q_count;
  kv_tiles.tile_starts = kv_starts.data_ptr<int64_t>();
  kv_tiles.tiles = kv_count;
  C10_CUDA_CHECK(
      cuda::launch_attention_backward(element_type(q), q_tiles, kv_tiles, at::cuda::getCurrentCUDAStream()));
  return {grad_q, grad_k, grad_v};
}

}  // namespace

TORCH_LIBRARY_IMPL(padkern, CUDA, m) {
  m.impl("ragged_attention", &ragged_attention_cuda);
  m.impl("ragged_attention_backward", &ragged_attention_backward_cuda);
}

}  // namespace padkern
