"""Traces padkern's Triton ops as torch.compile does on a GPU, on a machine without one:
``python tests/triton_trace_check.py``.

Why: on a GPU the Triton ops are ``triton_op``s, and torch.compile (AOTAutograd's
functionalization) traces into them through ``wrap_triton`` down to each kernel launch
(``triton_kernel_wrapper_functional``). CI runs the kernels under the interpreter, where
the ops are opaque and ``wrap_triton`` is never called, so that path would otherwise go
untested until a GPU run: torch 2.11 with triton 3.6 is where it could break (its
``wrap_triton`` accepts only ``JITFunction``/``Autotuner`` objects). This traces each public
op with ``backend="triton"`` and each backward kernel's op, on fake CUDA tensors (shapes only, no
device needed), with tests/triton_compile_check.py's stand-in driver so that the kernel
analysis that decides what a launch mutates can compile the kernels to Triton IR. Nothing
runs.

Run with TRITON_INTERPRET unset (tests/test_triton_traces.py does). Prints one line per
case and exits 1 on the first failure.
"""
import os
import sys

assert os.environ.get("TRITON_INTERPRET", "0") != "1", "tracing the GPU path needs Triton's compiler"
os.environ["PADKERN_TRITON_AUTOTUNE"] = "0"

import torch  # noqa: E402
from functorch.compile import make_boxed_func  # noqa: E402
from torch._functorch.aot_autograd import aot_function  # noqa: E402
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode  # noqa: E402

from triton_compile_check import CompileOnlyDriver, missing_api, triton_driver  # noqa: E402

import padkern  # noqa: E402
from padkern import ops  # noqa: E402
from padkern.triton import attention as triton_attention, conv as triton_conv  # noqa: E402
from padkern.triton import padding as triton_padding, rnn as triton_rnn  # noqa: E402

KERNEL_LAUNCH = torch.ops.higher_order.triton_kernel_wrapper_functional


def cases(fake):
    """(name, function, inputs): each public op on the triton backend, then the backward
    kernels' ops, which the autograd formulas call (a traced backward pass itself would run
    autograd's engine, which needs a real device)."""
    tokens, batch, hidden = 8, 3, 8
    offsets = fake(torch.tensor([0, 3, 3, 8]))
    values = fake(torch.randn(tokens, 16))
    weight = fake(torch.randn(12, 16))
    weights = fake(torch.randn(batch, 16, 12))
    padded = fake(torch.randn(batch, 5, 16))
    lengths = fake(torch.tensor([3, 0, 5]))
    w_ih, w_hh = fake(torch.randn(4 * hidden, 16)), fake(torch.randn(4 * hidden, hidden))
    w_ih_gru, w_hh_gru = fake(torch.randn(3 * hidden, 16)), fake(torch.randn(3 * hidden, hidden))
    w_ih_rnn, w_hh_rnn = fake(torch.randn(hidden, 16)), fake(torch.randn(hidden, hidden))
    state, rows = fake(torch.randn(batch, hidden)), fake(torch.randn(tokens, hidden))
    gates4, gates3 = fake(torch.randn(tokens, 4 * hidden)), fake(torch.randn(tokens, 3 * hidden))
    conv_weight, depthwise_weight = fake(torch.randn(16, 8, 3)), fake(torch.randn(16, 1, 4))
    queries, keys = fake(torch.randn(tokens, 2, 16)), fake(torch.randn(tokens, 1, 16))
    lse = fake(torch.randn(tokens, 2))
    return [
        ("ragged_bmm", lambda v, o, w: ops.ragged_bmm(v, o, w, backend="triton"), (values, offsets, weights)),
        ("ragged_outer_bmm", lambda v, o: ops.ragged_outer_bmm(v, v, o, backend="triton"), (values, offsets)),
        ("ragged_linear", lambda v, o, w: ops.ragged_linear(v, w, offsets=o, activation="gelu", backend="triton"),
         (values, offsets, weight)),
        ("masked_linear", lambda x, n, w: ops.masked_linear(x, n, w, activation="relu", backend="triton"),
         (padded, lengths, weight)),
        ("segment_sum", lambda v, o: ops.segment_sum(v, o, backend="triton"), (values, offsets)),
        ("segment_max", lambda v, o: ops.segment_max(v, o, backend="triton"), (values, offsets)),
        ("segment_softmax", lambda v, o: ops.segment_softmax(v, o, backend="triton"), (values, offsets)),
        ("pad", lambda v, o: ops.pad(v, o, 5, backend="triton"), (values, offsets)),
        ("unpad", lambda x, o: triton_padding.unpad_triton(x, o, tokens, True), (padded, offsets)),
        ("lstm", lambda v, o, a, b: ops.lstm(v, o, a, b, backend="triton")[0], (values, offsets, w_ih, w_hh)),
        ("gru reverse", lambda v, o, a, b: ops.gru(v, o, a, b, reverse=True, backend="triton")[0],
         (values, offsets, w_ih_gru, w_hh_gru)),
        ("rnn relu", lambda v, o, a, b: ops.rnn(v, o, a, b, nonlinearity="relu", backend="triton")[0],
         (values, offsets, w_ih_rnn, w_hh_rnn)),
        ("lstm backward", lambda g, s, o, w, r: triton_rnn.lstm_recurrence_backward_triton(
            r, s, s, g, r, o, w, s, False)[0], (gates4, state, offsets, w_hh, rows)),
        ("gru backward", lambda g, s, o, w, r: triton_rnn.gru_recurrence_backward_triton(
            r, s, g, r, r, o, w, s, True)[0], (gates3, state, offsets, w_hh_gru, rows)),
        ("rnn backward", lambda s, o, w, r: triton_rnn.rnn_recurrence_backward_triton(
            r, s, r, o, w, s, 0, False)[0], (state, offsets, w_hh_rnn, rows)),
        ("conv1d grouped", lambda v, o, w: ops.ragged_conv1d(v, o, w, groups=2, backend="triton"),
         (values, offsets, conv_weight)),
        ("conv1d depthwise causal", lambda v, o, w: ops.ragged_conv1d(v, o, w, groups=16, padding="causal",
                                                                       backend="triton"),
         (values, offsets, depthwise_weight)),
        ("conv1d backward", lambda v, o, w: triton_conv.ragged_conv1d_backward_triton(
            v, v, o, w, 1, 1, 2, [True, True, True]), (values, offsets, conv_weight)),
        ("conv1d depthwise backward", lambda v, o, w: triton_conv.ragged_conv1d_backward_triton(
            v, v, o, w, 3, 1, 16, [True, True, True]), (values, offsets, depthwise_weight)),
        ("attention causal grouped-query", lambda q, k, o: ops.ragged_attention(q, k, k, o, causal=True,
                                                                                backend="triton"),
         (queries, keys, offsets)),
        ("attention backward", lambda q, k, o, m: triton_attention.ragged_attention_backward_triton(
            q, q, k, k, q, m, o, o, False, 0.25), (queries, keys, offsets, lse)),
    ]


def trace(function, inputs):
    """AOTAutograd's inference graph of ``function``: what torch.compile hands Inductor."""
    graphs = []

    def keep(gm, example_inputs):
        graphs.append(gm)
        return make_boxed_func(gm.forward)

    aot_function(function, fw_compiler=keep)(*inputs)
    return graphs[0]


def launches(graph) -> int:
    return sum(node.target is KERNEL_LAUNCH for node in graph.graph.nodes)


def opaque_triton_ops(graph) -> list:
    return [str(node.target) for node in graph.graph.nodes if "_triton" in str(node.target)]


def main() -> int:
    reason = missing_api()
    if torch.version.cuda is None:
        # Tracing onto fake CUDA tensors still reaches torch's CUDA runtime ("PyTorch is not
        # linked with support for cuda devices"); a CPU-only torch never runs these kernels.
        reason = f"torch {torch.__version__} is a CPU-only build"
    if reason:
        print(f"skipped: {reason}")
        return 0
    triton_driver.set_active(CompileOnlyDriver(90))
    mode = FakeTensorMode()

    def fake(real):
        return FakeTensor(mode, real.to("meta"), torch.device("cuda", 0))

    traced = cases(fake)  # real tensors made outside the fake mode, then faked onto "cuda"
    with mode:
        for name, function, inputs in traced:
            try:
                graph = trace(function, inputs)
            except Exception as error:  # report which case, then fail
                print(f"FAILED {name}: {type(error).__name__}: {error}")
                return 1
            opaque = opaque_triton_ops(graph)
            if launches(graph) == 0 or opaque:
                print(f"FAILED {name}: {launches(graph)} kernel launches traced, opaque ops {opaque}")
                return 1
            print(f"ok {name}: {launches(graph)} kernel launch(es) traced", flush=True)
    print(f"traced {len(traced)} ops into their kernels with torch {torch.__version__}, "
          f"triton {sys.modules['triton'].__version__}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
