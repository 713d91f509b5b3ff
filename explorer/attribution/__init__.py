"""Attribution engine: output functions, timestep strategies, per-sample gradients, projectors,
the kernel, block-wise scoring and the methods registry. Pure math: no file I/O here."""

