"""The row kernels the scheduler uses: compiled, or the pure-numpy twin under SERVING_PUREPYTHON."""

from __future__ import annotations

import os

if os.environ.get("SERVING_PUREPYTHON"):  # msgpack's switch
    from serving.batching._reference import gather_rows, scatter_rows
else:
    from serving._kernels import gather_rows, scatter_rows  # a broken build fails loudly

__all__ = ["gather_rows", "scatter_rows"]
