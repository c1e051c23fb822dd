"""Triton kernels. Each program owns one sequence (or a tile of one): it loads its
``bos``/``eos`` from the offsets as int64, so a zero-length sequence runs no work.
They run on the GPU, and on the CPU under ``TRITON_INTERPRET=1`` (how CI tests them)."""
