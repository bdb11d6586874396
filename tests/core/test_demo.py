import re
import struct
import zlib

import pytest
import torch

from latent_space_control.demo import render_demo
from latent_space_control.demo.reference_panel import showcase_scenes
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


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    pytest.importorskip("diffusers", reason="the demo runs the reference world: pip install -e '.[reference]'")
    out = tmp_path_factory.mktemp("demo")
    with torch.inference_mode():
        index = render_demo(out)
    return out, index.read_text()


def test_reference_panel_shows_generated_pictures_with_oracle_readings(demo):
    out, text = demo
    assert "<h2>Reference world</h2>" in text
    captions = re.findall(r'<img src="sample_(\d+).png" alt="([^"]+)"><figcaption>([^<]+)<br><i>oracle:</i>', text)
    assert len(captions) == 18
    assert {caption for _, caption, _ in captions} == {scene.caption() for scene in showcase_scenes()}
    for number, caption, shown in captions:
        assert shown == caption and read_png(out / f"sample_{number}.png").shape == (96, 96, 3)
    showcase = re.search(r"showcase above: oracle agrees with the caption \(colour, shape\)</td><td>([0-9.]+), ([0-9.]+)<",
                         text)
    assert float(showcase[1]) >= 0.85 and float(showcase[2]) >= 0.75
    assert "LM: sentences in the grammar" in text and text.count("✓</li>") >= 5


def test_interpolation_panel_decodes_seed_and_prompt_travel(demo):
    out, text = demo
    assert "<h2>Latent Interpolate</h2>" in text and "<svg" in text
    for name in ("lerp", "slerp", "prompt_travel"):
        assert f'src="interpolate_{name}.png"' in text
        assert read_png(out / f"interpolate_{name}.png").shape == (96, 9 * 98 - 2, 3)
    figures = dict(re.findall(r"<td>([^<]+) midpoint noise std</td><td>([0-9.]+)</td>", text))
    assert abs(float(figures["lerp"]) - 0.707) < 0.05 and abs(float(figures["slerp"]) - 1.0) < 0.05
    readings = re.findall(r'alt="(lerp|slerp) seed travel"><br><small>([^<]+)</small>', text)
    assert [method for method, _ in readings] == ["lerp", "slerp"]
    assert all(len(line.split(" · ")) == 9 for _, line in readings)
    # Both paths start and end exactly at the seeds' noises, so their first and last pictures are the same pixels.
    lerp, slerp = read_png(out / "interpolate_lerp.png"), read_png(out / "interpolate_slerp.png")
    assert torch.equal(lerp[:, :96], slerp[:, :96]) and torch.equal(lerp[:, -96:], slerp[:, -96:])
    assert not torch.equal(lerp[:, 4 * 98:4 * 98 + 96], slerp[:, 4 * 98:4 * 98 + 96])
