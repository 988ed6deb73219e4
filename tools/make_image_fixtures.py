#!/usr/bin/env python3
"""Generates the CDImages test fixtures (Tests/CDImagesTests/Fixtures) with Pillow.

    python3 tools/make_image_fixtures.py [output-dir]

Needs Pillow (with JPEG/PNG/WebP) and numpy; the YCCK JPEG is written through libturbojpeg
(ctypes, Debian package libturbojpeg0), because Pillow only writes plain Adobe CMYK.

Outputs:
  * small images in every format/mode the decoder must handle, plus broken and refused files;
  * for each decodable image `<file>.rgb`: the pixels Pillow gives for
        ImageOps.exif_transpose(Image.open(file)), then .convert("RGB"), or — for images with
        alpha (RGBA/LA/PA, or a tRNS transparency) — .convert("RGBA") alpha-composited onto opaque
        white with Image.alpha_composite, then .convert("RGB");
    one exception on purpose: gray16.png's reference is (v >> 8), because Pillow clips 16-bit
    grayscale to 0…255 on convert (I;16 → RGB keeps v when v < 256, else 255);
  * resize.json + resize_*.rgb: Image.resize((w, h), BILINEAR/BICUBIC/LANCZOS) of procedural
    RGB sources (see `pattern`, mirrored in the Swift tests) — the FNV-1a 64 hash of every output
    and every `step`-th row of it.

`.rgb` format: b"RGB8", width (u32 LE), height (u32 LE), then width*height*3 bytes, row-major RGB.
"""
import ctypes
import ctypes.util
import io
import json
import os
import struct
import sys
import zlib

import numpy as np
import PIL
from PIL import Image, ImageOps

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "CDImagesTests", "Fixtures")
os.makedirs(OUT, exist_ok=True)
for f in os.listdir(OUT):
    os.remove(os.path.join(OUT, f))

W, H = 40, 24  # non-square so that orientation mistakes change the shape


def path(name):
    return os.path.join(OUT, name)


def write_rgb(name, arr):
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    h, w, c = arr.shape
    assert c == 3
    with open(path(name), "wb") as f:
        f.write(b"RGB8" + struct.pack("<II", w, h) + arr.tobytes())


def base_image(seed=1):
    """A small photo-like RGB image: smooth shading, hard edges, some noise."""
    rng = np.random.RandomState(seed)
    y, x = np.mgrid[0:H, 0:W].astype(np.float64)
    r = 128 + 90 * np.sin(x / 5.0) * np.cos(y / 7.0)
    g = 40 + 200 * (x / (W - 1))
    b = 220 - 180 * (y / (H - 1))
    disk = (x - 26) ** 2 + (y - 10) ** 2 < 36
    r[disk], g[disk], b[disk] = 250, 30, 20
    bar = (x >= 4) & (x < 9)
    r[bar], g[bar], b[bar] = 10, 10, 60
    # an asymmetric mark in the top-left corner: orientation mistakes cannot hide
    r[0:4, 0:6], g[0:4, 0:6], b[0:4, 0:6] = 255, 255, 0
    img = np.stack([r, g, b], axis=-1) + rng.normal(0, 6, (H, W, 3))
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def alpha_plane():
    y, x = np.mgrid[0:H, 0:W]
    a = (x * 255 // (W - 1)).astype(np.uint8)
    a[:, :5] = 0          # fully transparent
    a[:, -5:] = 255       # fully opaque
    a[18:, :] = 128
    return a


def has_alpha(im):
    return im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info


def pil_reference(name):
    im = Image.open(path(name))
    alpha = has_alpha(im)
    im = ImageOps.exif_transpose(im)
    if alpha:
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        out = Image.alpha_composite(white, rgba).convert("RGB")
    else:
        out = im.convert("RGB")
    return np.asarray(out)


def reference(name):
    write_rgb(name + ".rgb", pil_reference(name))


def must_fail(name):
    try:
        with Image.open(path(name)) as im:
            im.load()
    except Exception:
        return
    raise SystemExit(f"Pillow decoded {name}; it was meant to be broken")


def save(img, name, **kw):
    img.save(path(name), **kw)
    reference(name)


# ---------------------------------------------------------------- TIFF/EXIF helpers

def exif_orientation(value, big_endian):
    e = ">" if big_endian else "<"
    tiff = (b"MM" if big_endian else b"II") + struct.pack(e + "HI", 42, 8)
    # IFD0: two entries (a Make string before Orientation, so it is not always the first)
    make = b"cdtrainer\x00"
    entries = [
        struct.pack(e + "HHI", 0x010F, 2, len(make)) + struct.pack(e + "I", 8 + 2 + 2 * 12 + 4),
        struct.pack(e + "HHIH", 0x0112, 3, 1, value) + b"\x00\x00",
    ]
    ifd = struct.pack(e + "H", len(entries)) + b"".join(entries) + struct.pack(e + "I", 0)
    return b"Exif\x00\x00" + tiff + ifd + make


# ---------------------------------------------------------------- PNG writer (16-bit, gAMA, Adam7)

def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bytes(arr, color_type, bit_depth, extra=(), interlace=False):
    """arr: HxWxC uint8 or uint16 (big-endian written), C matching color_type."""
    h, w = arr.shape[:2]
    dt = ">u2" if bit_depth == 16 else "u1"
    raw = b""
    if interlace:
        passes = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]
    else:
        passes = [(0, 0, 1, 1)]
    for xs, ys, xstep, ystep in passes:
        sub = arr[ys::ystep, xs::xstep]
        if sub.size == 0:
            continue
        for row in sub:
            raw += b"\x00" + row.astype(dt).tobytes()
    ihdr = struct.pack(">IIBBBBB", w, h, bit_depth, color_type, 0, 0, 1 if interlace else 0)
    out = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
    for kind, data in extra:
        out += png_chunk(kind, data)
    out += png_chunk(b"IDAT", zlib.compress(raw, 9)) + png_chunk(b"IEND", b"")
    return out


def write_bytes(name, data):
    with open(path(name), "wb") as f:
        f.write(data)


# ---------------------------------------------------------------- images

rgb = base_image()
im_rgb = Image.fromarray(rgb, "RGB")
a = alpha_plane()

# JPEG
save(im_rgb, "baseline.jpg", quality=90)                           # 4:2:0
save(im_rgb, "progressive.jpg", quality=90, progressive=True)
save(im_rgb, "jpeg444.jpg", quality=92, subsampling=0)
save(im_rgb, "jpeg422.jpg", quality=92, subsampling=1)
save(im_rgb.convert("L"), "gray.jpg", quality=90)
for o in range(1, 9):
    big = o % 2 == 1
    save(im_rgb, f"exif{o}.jpg", quality=90, exif=exif_orientation(o, big))
xmp = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
       b'<rdf:Description xmlns:tiff="http://ns.adobe.com/tiff/1.0/" tiff:Orientation="6"/></rdf:RDF></x:xmpmeta>')
save(im_rgb, "xmp6.jpg", quality=90, xmp=xmp)
# Adobe CMYK as Pillow writes it (inverted, like Photoshop), from an RGB image with some black ink
cmyk = np.asarray(im_rgb.convert("CMYK")).copy()
cmyk[..., 3] = np.clip(255 - rgb.max(axis=-1).astype(np.int32) - 20, 0, 255)
save(Image.fromarray(cmyk, "CMYK"), "cmyk.jpg", quality=92)

# YCCK (Adobe transform 2) through TurboJPEG, which compresses CMYK input as YCCK
tj = ctypes.CDLL(ctypes.util.find_library("turbojpeg") or "libturbojpeg.so.0")
tj.tjInitCompress.restype = ctypes.c_void_p
tj.tjCompress2.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                           ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ctypes.c_ulong), ctypes.c_int,
                           ctypes.c_int, ctypes.c_int]
tj.tjFree.argtypes = [ctypes.c_void_p]
tj.tjDestroy.argtypes = [ctypes.c_void_p]
handle = tj.tjInitCompress()
stored = (255 - cmyk).astype(np.uint8)  # Adobe convention: stored = 255 - ink
buf, size = ctypes.c_void_p(), ctypes.c_ulong(0)
TJPF_CMYK, TJSAMP_420 = 11, 2
rc = tj.tjCompress2(handle, stored.tobytes(), W, W * 4, H, TJPF_CMYK, ctypes.byref(buf), ctypes.byref(size),
                    TJSAMP_420, 92, 0)
assert rc == 0
write_bytes("ycck.jpg", ctypes.string_at(buf, size.value))
tj.tjFree(buf)
tj.tjDestroy(handle)
with Image.open(path("ycck.jpg")) as im:
    assert im.mode == "CMYK" and im.info.get("adobe_transform") == 2, (im.mode, im.info)
reference("ycck.jpg")

# PNG
save(im_rgb, "rgb.png")
save(im_rgb.convert("L"), "gray.png")
save(im_rgb.convert("L").point(lambda v: 255 if v > 110 else 0).convert("1"), "gray1bit.png")
rgba = np.dstack([rgb, a])
save(Image.fromarray(rgba, "RGBA"), "rgba.png")
save(Image.fromarray(np.dstack([np.asarray(im_rgb.convert("L")), a]), "LA"), "la.png")
pal = im_rgb.quantize(colors=16, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
save(pal, "palette.png")
trns = bytes([0, 40, 90, 128, 200, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 30])
save(pal, "palette_trns.png", transparency=trns)
gray = im_rgb.convert("L")
gray_val = int(np.asarray(gray)[12, 20])
save(gray, "gray_trns.png", transparency=gray_val)
save(im_rgb, "exif6.png", exif=exif_orientation(6, False))

rng = np.random.RandomState(7)
low = rng.randint(0, 256, (H, W, 4)).astype(np.uint16)
rgb16 = rgb.astype(np.uint16) * 256 + low[..., :3]
write_bytes("rgb16.png", png_bytes(rgb16, 2, 16))
reference("rgb16.png")
with Image.open(path("rgb16.png")) as im:
    assert np.array_equal(np.asarray(im.convert("RGB")), rgb)  # Pillow keeps the high byte
rgba16 = np.dstack([rgb16, a.astype(np.uint16) * 256 + low[..., 3]])
write_bytes("rgba16.png", png_bytes(rgba16, 6, 16))
reference("rgba16.png")
gray16 = np.asarray(gray).astype(np.uint16) * 256 + low[..., 0]
write_bytes("gray16.png", png_bytes(gray16, 0, 16))
write_rgb("gray16.png.rgb", np.repeat((gray16 >> 8).astype(np.uint8)[..., None], 3, axis=-1))
with Image.open(path("gray16.png")) as im:  # what Pillow does instead: clip to 255
    assert im.mode.startswith("I;16")
    assert (np.asarray(im.convert("RGB"))[..., 0] == np.where(gray16 < 256, gray16, 255)).all()
# gAMA 1.0 (linear): Pillow ignores gamma chunks; so must the decoder
write_bytes("gamma.png", png_bytes(rgb, 2, 8, extra=[(b"gAMA", struct.pack(">I", 100000))]))
reference("gamma.png")
write_bytes("interlaced.png", png_bytes(rgba, 6, 8, interlace=True))
reference("interlaced.png")

# WebP
save(im_rgb, "lossy.webp", quality=80)
save(Image.fromarray(rgba, "RGBA"), "lossy_alpha.webp", quality=80)
save(Image.fromarray(rgba, "RGBA"), "lossless_alpha.webp", lossless=True)
save(im_rgb, "exif8.webp", quality=80, exif=exif_orientation(8, True))

# Junk between markers: libjpeg warns ("extraneous bytes before marker") and goes on, so does Pillow
data = open(path("baseline.jpg"), "rb").read()
dqt = data.index(b"\xff\xdb")
write_bytes("extraneous.jpg", data[:dqt] + b"\x00\x13\x37" + data[dqt:])
reference("extraneous.jpg")

# Broken and refused files
data = open(path("baseline.jpg"), "rb").read()
write_bytes("truncated.jpg", data[: len(data) * 6 // 10])
must_fail("truncated.jpg")
data = open(path("rgba.png"), "rb").read()
idat = data.index(b"IDAT")
write_bytes("truncated.png", data[: idat + 4 + (len(data) - idat) // 2])
must_fail("truncated.png")
data = open(path("lossy.webp"), "rb").read()
write_bytes("truncated.webp", data[: len(data) * 6 // 10])
must_fail("truncated.webp")
write_bytes("random.bin", np.random.RandomState(3).randint(0, 256, 2000).astype(np.uint8).tobytes())
write_bytes("empty.jpg", b"")
write_bytes("notes.jpg", b"These are my holiday photos, not a JPEG.\n")
write_bytes("garbage.png", b"\x89PNG\r\n\x1a\n" + np.random.RandomState(4).randint(0, 256, 300).astype(np.uint8).tobytes())
must_fail("garbage.png")
# Declared sizes over the limits: 30000 x 30000 JPEG (SOF patched), 12000 x 9000 PNG (108 MP),
# 16384 x 16384 WebP lossless header.
data = bytearray(open(path("baseline.jpg"), "rb").read())
sof = data.index(b"\xff\xc0")
data[sof + 5: sof + 9] = struct.pack(">HH", 30000, 30000)
write_bytes("huge.jpg", bytes(data))
write_bytes("huge.png", b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", 12000, 9000, 8, 2, 0, 0, 0))
            + png_chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + png_chunk(b"IEND", b""))
bits = (16384 - 1) | ((16384 - 1) << 14) | (0 << 28) | (0 << 29)
vp8l = b"\x2f" + struct.pack("<I", bits) + b"\x00" * 16
write_bytes("huge.webp", b"RIFF" + struct.pack("<I", 4 + 8 + len(vp8l)) + b"WEBP" + b"VP8L"
            + struct.pack("<I", len(vp8l)) + vp8l)

# ---------------------------------------------------------------- resize references


def pattern(w, h, seed):
    """Procedural RGB source, mirrored in Tests/CDImagesTests (ResizeTests.swift, `pattern`):
    R: horizontal ramp inverted on an 8-px checkerboard (hard edges), G: vertical ramp,
    B: hash noise (exercises clipping of the bicubic/lanczos overshoot)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.int64)
    r = (x * 255) // max(w - 1, 1)
    r = np.where(((x // 8) + (y // 8)) % 2 == 0, r, 255 - r)
    g = (y * 255) // max(h - 1, 1)
    v = ((x * 73 + y * 151 + seed * 17) * 2654435761) & 0xFFFFFFFF
    b = v >> 24
    return np.stack([r, g, b], axis=-1).astype(np.uint8)


def fnv1a64(b):
    hsh = 0xCBF29CE484222325
    for byte in b:
        hsh ^= byte
        hsh = (hsh * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return hsh


def fnv1a64_np(arr):
    # same as fnv1a64, chunked through Python ints (fast enough for < 2 MB)
    return fnv1a64(arr.tobytes())


cases = [
    ((37, 23), (64, 64)),
    ((300, 200), (170, 170)),
    ((512, 512), (614, 614)),
    ((640, 480), (512, 512)),
    ((512, 512), (256, 256)),
    ((64, 64), (64, 37)),     # vertical pass only
    ((50, 40), (33, 40)),     # horizontal pass only
    ((7, 5), (3, 2)),
    ((1, 1), (5, 3)),
    ((2000, 40), (37, 40)),   # heavy horizontal reduction (wide kernels)
]
filters = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC,
           "lanczos": Image.Resampling.LANCZOS}
entries = []
for ci, ((sw, sh), (dw, dh)) in enumerate(cases):
    src = Image.fromarray(pattern(sw, sh, ci), "RGB")
    for fname, f in filters.items():
        out = np.asarray(src.resize((dw, dh), f))
        step = max(1, dh // 4)
        sample = f"resize_{ci}_{fname}.rgb"
        write_rgb(sample, out[::step])
        entries.append({"case": ci, "source": [sw, sh], "seed": ci, "size": [dw, dh], "filter": fname,
                        "fnv1a64": f"{fnv1a64_np(out):016x}", "row_step": step, "rows": sample})
with open(path("resize.json"), "w") as fp:
    json.dump({"pillow": PIL.__version__, "cases": entries}, fp, indent=1)

total = sum(os.path.getsize(path(f)) for f in os.listdir(OUT))
print(f"{len(os.listdir(OUT))} files, {total / 1024:.1f} KiB, Pillow {PIL.__version__}")
