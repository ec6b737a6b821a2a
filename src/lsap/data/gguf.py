"""GGUF files checked before any loader reads them: a truncated or foreign file is named.

`check_gguf` parses only the header (the GGUF spec's key/value and tensor tables) and
compares the file's size with the extent its tensors need, so a partial download fails
with one line instead of a `struct.error` or reshape traceback deep inside `gguf` or
transformers. The tokenizer loader (`lsap.data.tokenizer`) and the surrogate loader
(`lsap.surrogate.load`) both call it.
"""

from __future__ import annotations

import os
from pathlib import Path

from lsap.utils.errors import SurrogateError

_GGUF_SCALARS = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}


def check_gguf(path: str | os.PathLike) -> int:
    """Parse a GGUF header and compare the file's size with its tensors' extent.

    Returns the bytes the header says the file needs; raises SurrogateError naming a
    file that is not GGUF, is cut inside its header, or is shorter than its tensors
    (a partial download or copy) — instead of a `struct.error` or reshape traceback
    from deep inside the loader.
    """
    import struct

    path = Path(path)
    size = path.stat().st_size

    class Short(Exception):
        pass

    with open(path, "rb") as f:

        def read(n: int) -> bytes:
            b = f.read(n)
            if len(b) < n:
                raise Short
            return b

        def scalar(fmt: str):
            return struct.unpack(fmt, read(struct.calcsize(fmt)))[0]

        def string() -> str:
            return read(scalar("<Q")).decode("utf-8", errors="replace")

        def value(t: int):
            if t in _GGUF_SCALARS:
                return scalar(_GGUF_SCALARS[t])
            if t == 8:
                return string()
            if t == 9:
                et, n = scalar("<I"), scalar("<Q")
                if et in _GGUF_SCALARS:
                    f.seek(n * struct.calcsize(_GGUF_SCALARS[et]), 1)
                else:
                    for _ in range(n):
                        value(et)
                return None
            raise SurrogateError(
                f"{path}: corrupt GGUF (unknown value type {t} in its header); re-download it"
            )

        try:
            if read(4) != b"GGUF":
                raise SurrogateError(f"{path}: not a GGUF file (no GGUF magic); re-download it")
            version, n_tensors, n_kv = scalar("<I"), scalar("<Q"), scalar("<Q")
            if version < 2 or n_tensors > 1 << 24 or n_kv > 1 << 24:
                raise SurrogateError(
                    f"{path}: corrupt or unsupported GGUF header (version {version}, "
                    f"{n_tensors} tensors, {n_kv} keys)"
                )
            alignment = 32
            for _ in range(n_kv):
                key, t = string(), scalar("<I")
                v = value(t)
                if key == "general.alignment":
                    alignment = int(v)
            tensors = []
            for _ in range(n_tensors):
                string()
                dims = [scalar("<Q") for _ in range(scalar("<I"))]
                tensors.append((dims, scalar("<I"), scalar("<Q")))
            if f.tell() > size:
                raise Short
        except Short:
            raise SurrogateError(
                f"{path}: truncated GGUF file ({size:,} bytes end inside its header); "
                "re-download or re-copy it"
            ) from None
        header = f.tell()
    from gguf.constants import GGML_QUANT_SIZES

    start = -(-header // alignment) * alignment
    end = start
    for dims, ttype, offset in tensors:
        block, nbytes = GGML_QUANT_SIZES[ttype]
        n = 1
        for d in dims:
            n *= d
        end = max(end, start + offset + n // block * nbytes)
    if size < end:
        raise SurrogateError(
            f"{path}: truncated GGUF file: its header places tensors up to byte {end:,}, the file "
            f"has {size:,} ({100 * size / end:.1f}%); re-download or re-copy it"
        )
    return end
