"""Attribution engine: output functions, timestep strategies, per-sample gradients, projectors,
the kernel, block-wise scoring and the methods registry. Pure math: no file I/O here."""

from . import methods  # noqa: E402,F401 - the registry first: the method files (das, ekfac, nda) import from it
