"""torch.autocast for padkern's ops, the way it treats their torch counterparts.

Inside ``torch.autocast(device_type, dtype)``:

- matmuls (``grouped_linear`` behind masked/ragged linear and ragged_bmm,
  ``ragged_outer_bmm``) run in the autocast dtype, as ``F.linear`` does, and
  ``ragged_conv1d`` as ``F.conv1d`` does;
- ``ragged_attention`` runs in the autocast dtype, as ``F.scaled_dot_product_attention`` does
  (its log-sum-exp stays float32);
- the LSTM and GRU recurrences run in the autocast dtype on a GPU, as cuDNN's ``nn.LSTM``/``nn.GRU``
  do, and in float32 on the CPU, as torch.nn's packed-sequence path does there; the plain RNN
  runs in the autocast dtype on both, as ``nn.RNN`` does (on the CPU its steps are autocast
  matmuls). The state and every accumulation stay float32 in all kernels;
- ``segment_sum``/``segment_mean``/``segment_softmax`` run in float32 on a GPU, as
  ``torch.sum``/``torch.softmax`` do there, and keep their dtype on the CPU, as those do;
  ``segment_max``, ``pad`` and ``unpad`` keep their input's dtype.

float64 tensors are never cast, as under torch's own autocast. The kernels are registered
on the Autocast dispatch keys of the native ops and of their Triton twins, so the same rule
holds eagerly and under ``torch.compile``. ``torch.library.register_autocast`` takes one fixed
dtype; here the dtype is read from the active autocast context at call time (bfloat16 or
float16 alike).
"""
import torch

_LIBRARY = torch.library.Library("padkern", "IMPL")
_DEVICE_TYPES = ("cpu", "cuda")
_SEGMENT_MAX = 2


def _cast(value, device_type: str, dtype: torch.dtype):
    if (isinstance(value, torch.Tensor) and value.is_floating_point() and value.dtype != torch.float64
            and value.device.type == device_type):
        return value.to(dtype)
    return value


def _lower_precision(device_type, args):
    return torch.get_autocast_dtype(device_type)


def _recurrence(device_type, args):
    return torch.get_autocast_dtype(device_type) if device_type == "cuda" else torch.float32


def _float32_on_gpu(device_type, args):
    return torch.float32 if device_type == "cuda" else None


def _segment_reduce(device_type, args):
    # segment_reduce(values, offsets, mode): sum and mean as torch.sum, max as given.
    return None if args[2] == _SEGMENT_MAX else _float32_on_gpu(device_type, args)


def _register(op_name: str, target_dtype) -> None:
    """target_dtype(device_type, args) -> the dtype to cast floating inputs to, or None."""
    op = getattr(torch.ops.padkern, op_name).default
    for device_type in _DEVICE_TYPES:
        key_name = "Autocast" + torch._C._dispatch_key_for_device(device_type)
        key = getattr(torch._C.DispatchKey, key_name)

        def run(*args, device_type=device_type, key=key):
            dtype = target_dtype(device_type, args)
            with torch._C._ExcludeDispatchKeyGuard(torch._C.DispatchKeySet(key)):
                if dtype is None:
                    return op(*args)
                return op(*(_cast(a, device_type, dtype) for a in args))

        # Both the Python dispatcher (used while torch.compile traces) and the C++ one.
        if op.has_kernel_for_dispatch_key(key):
            op.py_kernels.pop(key, None)
        op.py_impl(key)(run)
        _LIBRARY.impl(op_name, lambda _keyset, *args, run=run: run(*args), key_name, with_keyset=True)


def register_all(triton_available: bool) -> None:
    policies = {
        "grouped_linear": _lower_precision,
        "ragged_outer_bmm": _lower_precision,
        "ragged_conv1d": _lower_precision,
        "ragged_attention": _lower_precision,
        "lstm_recurrence": _recurrence,
        "gru_recurrence": _recurrence,
        "rnn_recurrence": _lower_precision,
        "segment_reduce": _segment_reduce,
        "segment_softmax": _float32_on_gpu,
    }
    for name, policy in policies.items():
        _register(name, policy)
        if triton_available:
            _register(f"{name}_triton", policy)
    _register("lstm_projected_recurrence", _recurrence)  # CPU only: no Triton twin
