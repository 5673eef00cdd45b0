"""The JSON data kernels the V2 codec uses: compiled, or the Python twin (SERVING_PUREPYTHON)."""

from __future__ import annotations

import os

if os.environ.get("SERVING_PUREPYTHON"):  # msgpack's switch
    from serving.protocol._reference import (
        decode_json_numbers,
        numbers_from_list,
        plain_input,
        plain_inputs,
        split_tensor_data,
    )
else:  # a broken build fails loudly
    from serving._kernels import (
        decode_json_numbers,
        numbers_from_list,
        plain_input,
        plain_inputs,
        split_tensor_data,
    )

__all__ = [
    "decode_json_numbers", "numbers_from_list", "plain_input", "plain_inputs",
    "split_tensor_data",
]
