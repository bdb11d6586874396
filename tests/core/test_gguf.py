"""llama.cpp control vector GGUF files: our writer and reader, checked against the byte layout and the gguf package."""

import struct

import pytest
import torch

from latent_space_control.core.gguf import ControlVector, GGUFFileError, read_control_vector, write_control_vector


def random_vectors(layers, width, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return {layer: torch.randn(width, generator=generator) for layer in layers}


# A GGUF builder written here from the spec, independent of core.gguf, to make files our writer never would.
def pack_string(text):
    data = text.encode("utf-8")
    return struct.pack("<Q", len(data)) + data


def kv_string(key, text):
    return (key, 8, pack_string(text))


def kv_uint32(key, number):
    return (key, 4, struct.pack("<I", number))


def f32_tensor(name, values):
    return (name, [len(values)], 0, struct.pack(f"<{len(values)}f", *values))


def gguf_bytes(metadata, tensors, version=3, alignment=32):
    """metadata: (key, value type, packed value); tensors: (name, dims, ggml type, data bytes)."""
    header = b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(metadata))
    for key, value_type, value in metadata:
        header += pack_string(key) + struct.pack("<I", value_type) + value
    data = b""
    for name, dims, tensor_type, tensor_data in tensors:
        header += pack_string(name) + struct.pack(f"<I{len(dims)}QIQ", len(dims), *dims, tensor_type, len(data))
        data += tensor_data + b"\0" * (-len(tensor_data) % alignment)
    return header + b"\0" * (-len(header) % alignment) + data


CONTROL_METADATA = [kv_string("general.architecture", "controlvector"), kv_string("controlvector.model_hint", "llama")]


def write_gguf(tmp_path, metadata, tensors, name="vector.gguf", **options):
    path = tmp_path / name
    path.write_bytes(gguf_bytes(metadata, tensors, **options))
    return path


@pytest.mark.parametrize("width", [1, 33, 4096])
def test_round_trip_keeps_layers_values_and_hint(tmp_path, width):
    vectors = random_vectors([12, 1, 5], width)
    originals = {layer: vector.clone() for layer, vector in vectors.items()}
    write_control_vector(tmp_path / "v.gguf", vectors, "mistral")

    result = read_control_vector(tmp_path / "v.gguf")

    assert isinstance(result, ControlVector)
    assert result.model_hint == "mistral"
    assert list(result.vectors) == [1, 5, 12]
    for layer in vectors:
        assert result.vectors[layer].dtype == torch.float32
        assert torch.equal(result.vectors[layer], vectors[layer])
        assert torch.equal(vectors[layer], originals[layer])  # the input is left alone


def test_round_trip_casts_other_float_types_to_float32(tmp_path):
    vectors = {3: torch.tensor([0.1, -2.5, 1e-8], dtype=torch.float64), 4: torch.tensor([1.0, 2.0, 3.0]).half()}
    write_control_vector(tmp_path / "v.gguf", vectors, "gpt2")
    result = read_control_vector(tmp_path / "v.gguf")
    assert torch.equal(result.vectors[3], vectors[3].float())
    assert torch.equal(result.vectors[4], torch.tensor([1.0, 2.0, 3.0]))


def test_written_bytes_follow_the_gguf_v3_layout(tmp_path):
    vectors = random_vectors([7, 2], 5)
    path = tmp_path / "v.gguf"
    write_control_vector(path, vectors, "llama")
    data = path.read_bytes()

    position = 0

    def take(fmt):
        nonlocal position
        values = struct.unpack_from("<" + fmt, data, position)
        position += struct.calcsize("<" + fmt)
        return values

    def string():
        nonlocal position
        (size,) = take("Q")
        position += size
        return data[position - size:position].decode("utf-8")

    assert data[:4] == b"GGUF"
    position = 4
    assert take("IQQ") == (3, 2, 3)
    metadata = {}
    for _ in range(3):
        key = string()
        (value_type,) = take("I")
        metadata[key] = (value_type, string() if value_type == 8 else take("I")[0])
    assert metadata == {"general.architecture": (8, "controlvector"), "controlvector.model_hint": (8, "llama"),
                        "controlvector.layer_count": (4, 2)}
    tensors = []
    for _ in range(2):
        name = string()
        (n_dims,) = take("I")
        tensors.append((name, take(f"{n_dims}Q"), *take("IQ")))
    assert [(name, dims, tensor_type) for name, dims, tensor_type, _ in tensors] == [
        ("direction.2", (5,), 0), ("direction.7", (5,), 0)]
    data_start = position + (-position % 32)
    assert data[position:data_start] == b"\0" * (data_start - position)
    for name, _, _, offset in tensors:
        assert offset % 32 == 0
        values = struct.unpack_from("<5f", data, data_start + offset)
        assert torch.equal(torch.tensor(values), vectors[int(name.split(".")[1])])


def write_directions(writer, vectors, numpy) -> None:
    """The direction tensors and the rest of the file, as repeng's export_gguf finishes a GGUFWriter."""
    for layer, vector in vectors.items():
        writer.add_tensor(f"direction.{layer}", vector.numpy().astype(numpy.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_reads_a_file_written_by_gguf_writer_the_way_repeng_writes_it(tmp_path):
    gguf = pytest.importorskip("gguf")
    numpy = pytest.importorskip("numpy")
    vectors = random_vectors([3, 1, 10], 16, seed=4)
    path = tmp_path / "repeng.gguf"
    writer = gguf.GGUFWriter(str(path), "controlvector")
    writer.add_string("controlvector.model_hint", "mistral")
    writer.add_uint32("controlvector.layer_count", len(vectors))
    write_directions(writer, vectors, numpy)

    result = read_control_vector(path)

    assert result.model_hint == "mistral"
    assert sorted(result.vectors) == [1, 3, 10]
    for layer, vector in vectors.items():
        assert torch.equal(result.vectors[layer], vector)


def test_reads_gguf_writer_files_with_other_metadata_and_a_custom_alignment(tmp_path):
    gguf = pytest.importorskip("gguf")
    numpy = pytest.importorskip("numpy")
    vectors = random_vectors([2, 4], 3, seed=5)
    path = tmp_path / "aligned.gguf"
    writer = gguf.GGUFWriter(str(path), "controlvector")
    writer.add_custom_alignment(64)
    writer.add_string("controlvector.model_hint", "llama")
    writer.add_array("extra.strings", ["a", "bc", ""])
    writer.add_array("extra.numbers", [1, 2, 3])
    writer.add_float64("extra.float64", 0.5)
    writer.add_bool("extra.bool", True)
    writer.add_int8("extra.int8", -3)
    write_directions(writer, vectors, numpy)

    result = read_control_vector(path)

    for layer, vector in vectors.items():
        assert torch.equal(result.vectors[layer], vector)


def test_gguf_reader_reads_our_files(tmp_path):
    gguf = pytest.importorskip("gguf")
    vectors = random_vectors([9, 4], 24, seed=2)
    path = tmp_path / "ours.gguf"
    write_control_vector(path, vectors, "gpt2")

    reader = gguf.GGUFReader(str(path))

    def field_value(key):
        field = reader.fields[key]
        part = field.parts[field.data[0]]
        return bytes(part).decode("utf-8") if field.types[0] == gguf.GGUFValueType.STRING else part[0]

    assert field_value("general.architecture") == "controlvector"
    assert field_value("controlvector.model_hint") == "gpt2"
    assert field_value("controlvector.layer_count") == 2
    assert reader.fields["controlvector.layer_count"].types == [gguf.GGUFValueType.UINT32]
    assert [tensor.name for tensor in reader.tensors] == ["direction.4", "direction.9"]
    for tensor in reader.tensors:
        assert tensor.tensor_type == gguf.GGMLQuantizationType.F32
        assert list(tensor.shape) == [24]
        assert torch.equal(torch.from_numpy(tensor.data.copy()), vectors[int(tensor.name.split(".")[1])])


def test_reads_f16_tensors_as_float32(tmp_path):
    values = [0.5, -1.25, 3.0, 65504.0]
    path = write_gguf(tmp_path, CONTROL_METADATA, [("direction.2", [4], 1, struct.pack("<4e", *values))])
    result = read_control_vector(path)
    assert result.vectors[2].dtype == torch.float32
    assert torch.equal(result.vectors[2], torch.tensor(values))


def test_reads_version_2_a_custom_alignment_unknown_metadata_and_skips_other_tensors(tmp_path):
    metadata = [
        kv_string("general.architecture", "controlvector"),
        kv_uint32("general.alignment", 64),
        ("extra.u8", 0, b"\x07"), ("extra.i16", 3, struct.pack("<h", -2)), ("extra.f32", 6, struct.pack("<f", 1.5)),
        ("extra.u64", 10, struct.pack("<Q", 2**40)), ("extra.f64", 12, struct.pack("<d", 0.25)),
        ("extra.strings", 9, struct.pack("<IQ", 8, 2) + pack_string("x") + pack_string("yz")),
        ("extra.nested", 9, struct.pack("<IQ", 9, 2) + struct.pack("<IQ", 5, 1) + struct.pack("<i", -1)
         + struct.pack("<IQ", 8, 0)),
    ]
    tensors = [f32_tensor("other.weight", [9.0]), f32_tensor("direction.1", [1.0, 2.0]),
               f32_tensor("direction.3", [3.0, 4.0])]
    path = write_gguf(tmp_path, metadata, tensors, version=2, alignment=64)

    result = read_control_vector(path)

    assert result.model_hint == ""  # llama.cpp needs no hint, so a missing one is no error
    assert {layer: vector.tolist() for layer, vector in result.vectors.items()} == {1: [1.0, 2.0], 3: [3.0, 4.0]}


@pytest.mark.parametrize("vectors, hint, message", [
    ({}, "llama", "no vectors"),
    ({1: torch.ones(3)}, "", "model_hint is empty"),
    ({0: torch.ones(3), 1: torch.ones(3)}, "llama", "layer 0 cannot be exported: llama.cpp rejects direction.0"),
    ({-2: torch.ones(3)}, "llama", "layer -2 is not a transformer block index"),
    ({"3": torch.ones(3)}, "llama", "layer '3' is not a transformer block index"),
    ({2: torch.ones(2, 3)}, "llama", "layer 2 is [2, 3], not a 1-D"),
    ({2: torch.ones(0)}, "llama", "layer 2 is [0], not a 1-D"),
    ({2: [1.0, 2.0]}, "llama", "layer 2 is list, not a 1-D"),
    ({1: torch.ones(3), 2: torch.ones(4)}, "llama", "different widths ({1: 3, 2: 4})"),
    ({5: torch.tensor([1.0, float("nan")])}, "llama", "layer 5 holds non-finite values"),
    ({5: torch.tensor([1e39], dtype=torch.float64)}, "llama", "layer 5 holds non-finite values"),
])
def test_write_refuses_what_llama_cpp_or_repeng_cannot_load(tmp_path, vectors, hint, message):
    with pytest.raises(ValueError) as error:
        write_control_vector(tmp_path / "v.gguf", vectors, hint)
    assert message in str(error.value)
    assert not (tmp_path / "v.gguf").exists()


def two_directions():
    return [f32_tensor("direction.1", [1.0, 2.0]), f32_tensor("direction.2", [3.0, 4.0])]


@pytest.mark.parametrize("metadata, tensors, options, message", [
    (CONTROL_METADATA, two_directions(), {"version": 1}, "is GGUF version 1; only versions 2 and 3"),
    (CONTROL_METADATA, two_directions(), {"version": 4}, "is GGUF version 4; only versions 2 and 3"),
    ([kv_string("general.architecture", "llama")], two_directions(), {},
     "is a llama model file, not a control vector (general.architecture is 'llama'"),
    (CONTROL_METADATA, [f32_tensor("token_embd.weight", [1.0])], {}, "holds no direction.<layer> tensors"),
    (CONTROL_METADATA, [f32_tensor("direction.x", [1.0])], {}, "tensor 'direction.x' whose layer 'x' is not an"),
    (CONTROL_METADATA, [f32_tensor("direction.-1", [1.0])], {}, "tensor 'direction.-1' whose layer '-1'"),
    (CONTROL_METADATA, [("direction.1", [2, 2], 0, struct.pack("<4f", 1, 2, 3, 4))], {},
     "tensor 'direction.1' of shape [2, 2], not a 1-D vector"),
    (CONTROL_METADATA, [f32_tensor("direction.1", [1.0]), f32_tensor("direction.2", [1.0, 2.0])], {},
     "different widths ({'direction.1': 1, 'direction.2': 2})"),
    (CONTROL_METADATA, [f32_tensor("direction.1", [1.0]), f32_tensor("direction.2", [float("inf")])], {},
     "non-finite values (inf or nan) in 'direction.2'"),
    (CONTROL_METADATA, [("direction.1", [32], 8, b"\0" * 34)], {}, "tensor 'direction.1' of ggml type 8"),
    (CONTROL_METADATA, [f32_tensor("direction.1", [1.0]), f32_tensor("direction.1", [2.0])], {},
     "has the tensor 'direction.1' twice"),
    (CONTROL_METADATA + [("extra.odd", 13, b"")], two_directions(), {}, "metadata value of unknown type 13"),
    (CONTROL_METADATA + [kv_uint32("general.alignment", 0)], two_directions(), {},
     "has general.alignment 0, not a positive integer"),
])
def test_read_names_the_file_and_the_problem(tmp_path, metadata, tensors, options, message):
    path = write_gguf(tmp_path, metadata, tensors, name="broken.gguf", **options)
    with pytest.raises(GGUFFileError) as error:
        read_control_vector(path)
    assert "control vector file 'broken.gguf'" in str(error.value)
    assert message in str(error.value)


def test_read_refuses_a_file_that_is_not_gguf(tmp_path):
    path = tmp_path / "vector.safetensors"
    path.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    with pytest.raises(GGUFFileError, match=r"'vector.safetensors' is not a GGUF file"):
        read_control_vector(path)


def test_read_refuses_a_missing_file(tmp_path):
    with pytest.raises(GGUFFileError, match=r"'absent.gguf' could not be opened"):
        read_control_vector(tmp_path / "absent.gguf")


@pytest.mark.parametrize("keep, part", [(3, "header"), (20, "header"), (60, "header"), (-28, "data")])
def test_read_refuses_a_truncated_file(tmp_path, keep, part):
    # the last tensor is 8 bytes then 24 of padding, so cutting 28 ends inside its values
    complete = gguf_bytes(CONTROL_METADATA, two_directions())
    path = tmp_path / "cut.gguf"
    path.write_bytes(complete[:keep])
    with pytest.raises(GGUFFileError) as error:
        read_control_vector(path)
    assert f"control vector file 'cut.gguf' is truncated: it ends at byte {len(complete[:keep])}, inside its {part}" \
        in str(error.value)


def test_read_refuses_a_damaged_length_without_allocating_it(tmp_path):
    complete = bytearray(gguf_bytes(CONTROL_METADATA, two_directions()))
    complete[24:32] = struct.pack("<Q", 2**62)  # the first key's length
    path = tmp_path / "damaged.gguf"
    path.write_bytes(bytes(complete))
    with pytest.raises(GGUFFileError, match=r"'damaged.gguf' is truncated"):
        read_control_vector(path)
