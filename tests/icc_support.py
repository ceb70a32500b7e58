"""ICC profiles for the tests, written out by hand: a v2 matrix/TRC display profile is a
128-byte header, a tag table and nine small tags, and LittleCMS reads it like any other.
(Pillow can only create sRGB, LAB and XYZ profiles itself.)"""

from __future__ import annotations

import struct

#: D50-adapted colorants (the rXYZ, gXYZ, bXYZ tags) of sRGB and of Display P3.
SRGB_PRIMARIES = ((0.4361, 0.2225, 0.0139), (0.3851, 0.7169, 0.0971), (0.1431, 0.0606, 0.7141))
P3_PRIMARIES = ((0.5151, 0.2412, -0.0011), (0.2920, 0.6922, 0.0419), (0.1571, 0.0666, 0.7841))
_D50 = (0.9642, 1.0, 0.8249)


def _s15(v: float) -> bytes:
    return struct.pack(">i", round(v * 65536))


def _xyz(c) -> bytes:
    return b"XYZ " + bytes(4) + b"".join(_s15(v) for v in c)


def rgb_profile(primaries, gamma: float = 2.2, description: str = "capcrawl test RGB") -> bytes:
    """An ICC v2 RGB display profile with the given (red, green, blue) colorants and one gamma."""
    text = description.encode("ascii") + b"\0"
    desc = b"desc" + bytes(4) + struct.pack(">I", len(text)) + text + bytes(8 + 3 + 67)
    curve = b"curv" + bytes(4) + struct.pack(">IH", 1, round(gamma * 256))
    red, green, blue = primaries
    tags = [(b"desc", desc), (b"wtpt", _xyz(_D50)), (b"rXYZ", _xyz(red)), (b"gXYZ", _xyz(green)),
            (b"bXYZ", _xyz(blue)), (b"rTRC", curve), (b"gTRC", curve), (b"bTRC", curve)]
    start = 128 + 4 + 12 * len(tags)
    table, body = struct.pack(">I", len(tags)), b""
    for sig, data in tags:
        data += bytes(-len(data) % 4)
        table += sig + struct.pack(">II", start + len(body), len(data))
        body += data
    header = (struct.pack(">I", start + len(body)) + b"lcms" + bytes([2, 0x10, 0, 0]) + b"mntrRGB XYZ " + bytes(12)
              + b"acsp" + bytes(28) + b"".join(_s15(v) for v in _D50) + bytes(48))
    assert len(header) == 128
    return header + table + body
