import re
import struct
import zlib

import torch

from latent_space_control.demo import render_demo
from latent_space_control.demo.page import write_png


def read_png(path):
    """Decode the PNGs the demo writes (8-bit RGB, filter 0 rows) back to a tensor [H, W, 3]."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    position, chunks = 8, {}
    while position < len(data):
        length, = struct.unpack(">I", data[position:position + 4])
        tag, body = data[position + 4:position + 8], data[position + 8:position + 8 + length]
        crc, = struct.unpack(">I", data[position + 8 + length:position + 12 + length])
        assert crc == zlib.crc32(tag + body) & 0xFFFFFFFF
        chunks[tag] = chunks.get(tag, b"") + body
        position += 12 + length
    width, height, depth, colour = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    assert (depth, colour) == (8, 2)
    raw = zlib.decompress(chunks[b"IDAT"])
    rows = [raw[r * (3 * width + 1):(r + 1) * (3 * width + 1)] for r in range(height)]
    assert all(row[0] == 0 for row in rows)
    return torch.tensor([list(row[1:]) for row in rows], dtype=torch.uint8).reshape(height, width, 3)


def test_png_round_trip(tmp_path):
    image = torch.rand(7, 5, 3)
    write_png(tmp_path / "x.png", image)
    assert torch.equal(read_png(tmp_path / "x.png"), (image * 255).round().to(torch.uint8))


def test_demo_renders_the_interpolation_panel_with_its_figures(tmp_path):
    index = render_demo(tmp_path / "demo")
    text = index.read_text()
    assert "<h2>Latent Interpolate</h2>" in text and "<svg" in text
    strips = {name: read_png(tmp_path / "demo" / f"interpolate_{name}.png") for name in ("lerp", "slerp")}
    for name in strips:
        assert f'src="interpolate_{name}.png"' in text
    figures = dict(re.findall(r"<td>([^<]+) midpoint std</td><td>([0-9.]+)</td>", text))
    assert abs(float(figures["lerp"]) - 0.707) < 0.03 and abs(float(figures["slerp"]) - 1.0) < 0.03
    # The middle lerp frame is visibly washed out next to slerp's: less spread in its pixel values.
    frame_width = (strips["lerp"].shape[1] + 2) // 9
    middle = slice(4 * frame_width, 5 * frame_width - 2)
    assert strips["lerp"][:, middle].float().std() < 0.8 * strips["slerp"][:, middle].float().std()
