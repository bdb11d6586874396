"""llama.cpp control vectors: GGUF files of per-block steering directions, read and written from the GGUF spec.

A control vector holds one F32 tensor ``direction.<k>`` of the model width per steered transformer block k (0-based);
llama.cpp adds it to the output of block k at every position. The metadata says the file is a "controlvector" and, for
repeng (which requires it; llama.cpp reads no metadata), which HF model_type the vectors were made for.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import NamedTuple

import torch

GGUF_MAGIC = b"GGUF"
GGUF_VERSION = 3
DEFAULT_ALIGNMENT = 32  # GGUF's, used unless general.alignment says otherwise
ARCHITECTURE = "controlvector"

# GGUF metadata value types: scalars by struct format; 8 (string) and 9 (array) are read by hand.
_SCALAR_FORMATS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY, _UINT32 = 8, 9, 4
_TENSOR_FORMATS = {0: "f", 1: "e"}  # ggml F32 and F16, by struct format of one element
_F32 = 0


class GGUFFileError(ValueError):
    """A file that cannot be read as a llama.cpp control vector."""


class ControlVector(NamedTuple):
    vectors: dict[int, torch.Tensor]  # block index -> [width] float32 direction, added to that block's output
    model_hint: str  # the HF model_type the vectors were made for; "" when the file does not say


def _string(text: str) -> bytes:
    data = text.encode("utf-8")
    return struct.pack("<Q", len(data)) + data


def _padding(size: int, alignment: int = DEFAULT_ALIGNMENT) -> bytes:
    return b"\0" * (-size % alignment)


def write_control_vector(path, vectors: dict[int, torch.Tensor], model_hint: str) -> None:
    """Write ``vectors`` (block index -> [width] direction) as a GGUF v3 control vector llama.cpp and repeng load."""
    if not vectors:
        raise ValueError("control vector: there are no vectors to write; give at least one layer")
    if not isinstance(model_hint, str) or not model_hint:
        raise ValueError("control vector: model_hint is empty; give the model's HF model_type (e.g. 'llama'), "
                         "which repeng requires to load the file")
    rows = {}
    for layer, vector in sorted(vectors.items()):
        if isinstance(layer, bool) or not isinstance(layer, int) or layer < 0:
            raise ValueError(f"control vector: layer {layer!r} is not a transformer block index (an integer >= 1)")
        if layer == 0:
            raise ValueError("control vector: layer 0 cannot be exported: llama.cpp rejects direction.0, so a control "
                             "vector file cannot steer block 0; use layers 1 and up")
        if not isinstance(vector, torch.Tensor) or vector.dim() != 1 or vector.numel() == 0:
            shape = list(vector.shape) if isinstance(vector, torch.Tensor) else type(vector).__name__
            raise ValueError(f"control vector: layer {layer} is {shape}, not a 1-D [width] vector")
        vector = vector.detach().to("cpu", torch.float32)  # checked after the cast: float32 may overflow to inf
        if not torch.isfinite(vector).all():
            raise ValueError(f"control vector: layer {layer} holds non-finite values (inf or nan)")
        rows[layer] = vector.tolist()
    widths = {layer: len(row) for layer, row in rows.items()}
    if len(set(widths.values())) > 1:
        raise ValueError(f"control vector: the layers have different widths ({widths}); all must be the model width")

    metadata = [("general.architecture", _STRING, _string(ARCHITECTURE)),
                ("controlvector.model_hint", _STRING, _string(model_hint)),
                ("controlvector.layer_count", _UINT32, struct.pack("<I", len(rows)))]
    header = GGUF_MAGIC + struct.pack("<IQQ", GGUF_VERSION, len(rows), len(metadata))
    for key, value_type, value in metadata:
        header += _string(key) + struct.pack("<I", value_type) + value
    data = b""
    for layer, row in rows.items():
        header += _string(f"direction.{layer}") + struct.pack("<IQIQ", 1, len(row), _F32, len(data))
        data += struct.pack(f"<{len(row)}f", *row)
        data += _padding(len(data))  # the next tensor's offset must be aligned too
    Path(path).write_bytes(header + _padding(len(header)) + data)


class _GGUFStream:
    """Reads a GGUF file front to back without loading it whole (a model file given by mistake may be gigabytes)."""

    def __init__(self, file, name: str):
        self.file, self.name = file, name
        self.size = os.fstat(file.fileno()).st_size

    def error(self, problem: str) -> GGUFFileError:
        return GGUFFileError(f"control vector file '{self.name}' {problem}")

    def take(self, size: int, part: str = "header") -> bytes:
        if self.file.tell() + size > self.size:  # checked first so a damaged length never allocates gigabytes
            raise self.error(f"is truncated: it ends at byte {self.size}, inside its {part}")
        return self.file.read(size)

    def number(self, fmt: str):
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))[0]

    def string(self) -> str:
        return self.take(self.number("Q")).decode("utf-8", errors="replace")

    def value(self, value_type: int):
        if value_type == _STRING:
            return self.string()
        if value_type == _ARRAY:
            element_type, count = self.number("I"), self.number("Q")
            if element_type in _SCALAR_FORMATS:  # read in one piece: tokenizer arrays hold 100k+ entries
                fmt = _SCALAR_FORMATS[element_type]
                return list(struct.unpack(f"<{count}{fmt}", self.take(count * struct.calcsize(fmt))))
            return [self.value(element_type) for _ in range(count)]
        if value_type not in _SCALAR_FORMATS:
            raise self.error(f"has a metadata value of unknown type {value_type}")
        return self.number(_SCALAR_FORMATS[value_type])


def read_control_vector(path) -> ControlVector:
    """Read a llama.cpp control vector as llama.cpp, repeng or ``write_control_vector`` write them; F16 is accepted."""
    path = Path(path)
    try:
        file = open(path, "rb")
    except OSError as error:
        raise GGUFFileError(f"control vector file '{path.name}' could not be opened ({error.strerror})") from None
    with file:
        stream = _GGUFStream(file, path.name)
        if stream.take(4) != GGUF_MAGIC:
            raise stream.error("is not a GGUF file (it does not start with 'GGUF')")
        version = stream.number("I")
        if version not in (2, 3):  # v2 and v3 share this layout; v1 had 32-bit counts
            raise stream.error(f"is GGUF version {version}; only versions 2 and 3 can be read")
        tensor_count, metadata_count = stream.number("Q"), stream.number("Q")
        metadata = {}
        for _ in range(metadata_count):
            key = stream.string()
            metadata[key] = stream.value(stream.number("I"))
            if key == "general.architecture" and metadata[key] != ARCHITECTURE:  # say so before reading gigabytes
                raise stream.error(f"is a {metadata[key]} model file, not a control vector "
                                   f"(general.architecture is '{metadata[key]}', not '{ARCHITECTURE}')")
        tensors = {}  # layer -> (name, width, ggml type, offset)
        for _ in range(tensor_count):
            name, n_dims = stream.string(), stream.number("I")
            dims = [stream.number("Q") for _ in range(n_dims)]
            tensor_type, offset = stream.number("I"), stream.number("Q")
            if not name.startswith("direction."):
                continue  # llama.cpp steers with direction tensors only
            suffix = name.removeprefix("direction.")
            if not (suffix.isascii() and suffix.isdigit()):
                raise stream.error(f"has a tensor '{name}' whose layer '{suffix}' is not an integer")
            if n_dims != 1 or dims[0] == 0:
                raise stream.error(f"has a tensor '{name}' of shape {dims}, not a 1-D vector")
            if tensor_type not in _TENSOR_FORMATS:
                raise stream.error(f"has a tensor '{name}' of ggml type {tensor_type}; only F32 (0) and F16 (1) "
                                   "can be read")
            if int(suffix) in tensors:
                raise stream.error(f"has the tensor '{name}' twice")
            tensors[int(suffix)] = (name, dims[0], tensor_type, offset)
        if not tensors:
            raise stream.error("holds no direction.<layer> tensors, so it is not a control vector")
        widths = {name: width for name, width, _, _ in tensors.values()}
        if len(set(widths.values())) > 1:
            raise stream.error(f"has direction tensors of different widths ({widths})")
        alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
        if isinstance(alignment, bool) or not isinstance(alignment, int) or alignment <= 0:
            raise stream.error(f"has general.alignment {alignment!r}, not a positive integer")
        data_start = file.tell() + (-file.tell() % alignment)
        vectors = {}
        for layer, (name, width, tensor_type, offset) in sorted(tensors.items()):
            file.seek(data_start + offset)
            fmt = _TENSOR_FORMATS[tensor_type]
            values = struct.unpack(f"<{width}{fmt}", stream.take(width * struct.calcsize(fmt), "data"))
            vector = torch.tensor(values, dtype=torch.float32)
            if not torch.isfinite(vector).all():
                raise stream.error(f"has non-finite values (inf or nan) in '{name}'")
            vectors[layer] = vector
    hint = metadata.get("controlvector.model_hint", "")
    return ControlVector(vectors, hint if isinstance(hint, str) else "")
