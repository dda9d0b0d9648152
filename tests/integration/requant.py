"""A second real quantization of the demo model, for tests that compare quants of one model.

The demo package ships Q4_K_M only and this machine has no llama-quantize, so the Q8_0 is made
with the gguf package: every tensor whose type gguf can decode is dequantized and written again
as Q8_0 (rows are multiples of 32, Q8_0's block); the rest (F32 norms) is copied. Every
metadata key is copied unchanged except general.file_type. The result is a real model that
llama-server loads and that answers like the Q4_K_M it came from (it cannot be better than its
source), at about 1.6x the size.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType, GGUFWriter, LlamaFileType
from gguf.quants import dequantize, quantize

_KEEP = {GGMLQuantizationType.F32, GGMLQuantizationType.F16, GGMLQuantizationType.BF16}


def write_q8_0(src: Path, dst: Path) -> Path:
    """Write `src` re-quantized to Q8_0 at `dst` (atomic: a partial file never has the name)."""
    reader = GGUFReader(src)
    arch = str(reader.fields["general.architecture"].contents())
    part = dst.with_suffix(".part")
    writer = GGUFWriter(part, arch)
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue
        if name == "general.file_type":
            writer.add_file_type(LlamaFileType.MOSTLY_Q8_0)
            continue
        vtype = field.types[0]
        sub = field.types[1] if vtype == GGUFValueType.ARRAY and len(field.types) > 1 else None
        writer.add_key_value(name, field.contents(), vtype, sub)
    for t in reader.tensors:
        shape = tuple(int(d) for d in reversed(t.shape))  # numpy order: rows last
        if t.tensor_type in _KEEP or shape[-1] % 32:
            writer.add_tensor(t.name, np.asarray(t.data), raw_dtype=t.tensor_type)
            continue
        floats = dequantize(np.asarray(t.data), t.tensor_type).reshape(shape).astype(np.float32)
        q8 = quantize(floats, GGMLQuantizationType.Q8_0)
        writer.add_tensor(t.name, q8, raw_shape=q8.shape, raw_dtype=GGMLQuantizationType.Q8_0)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    part.replace(dst)
    return dst
