#!/usr/bin/env python3
"""Draws the demo job's instance images (configs/jobs/demo-images/toy/*.png): a small "toy" —
an orange ring with a blue dot — on varied backgrounds, positions and sizes. Standard library
only (zlib + struct PNG writer), deterministic."""
import math, os, random, struct, zlib

OUT = os.path.join(os.path.dirname(__file__), "..", "configs", "jobs", "demo-images", "toy")

def png(path, w, h, rows):
    raw = b"".join(b"\x00" + bytes(r) for r in rows)
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
    data += chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
    with open(path, "wb") as f:
        f.write(data)

def draw(seed, size=96):
    rnd = random.Random(seed)
    bg = [rnd.randint(150, 235) for _ in range(3)]
    cx, cy = rnd.uniform(0.35, 0.65) * size, rnd.uniform(0.35, 0.65) * size
    r = rnd.uniform(0.18, 0.3) * size
    rows = []
    for y in range(size):
        row = []
        for x in range(size):
            d = math.hypot(x - cx, y - cy)
            shade = 0.85 + 0.15 * math.sin((x + y) / 9.0)
            c = [int(v * shade) for v in bg]
            if abs(d - r) < r * 0.28:
                c = [235, 120, 30]
            elif d < r * 0.35:
                c = [40, 70, 200]
            row += c
        rows.append(row)
    return size, rows

if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    for i in range(4):
        size, rows = draw(100 + i)
        png(os.path.join(OUT, f"toy-{i}.png"), size, size, rows)
