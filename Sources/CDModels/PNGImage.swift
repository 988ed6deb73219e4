import CDTensor
import CPNG
import Foundation

/// 8-bit RGB PNG files ⇄ image tensors, through libpng's simplified API.
public enum PNGImage {
    public enum Failure: Error, CustomStringConvertible, Equatable {
        case read(file: String, reason: String)
        case write(file: String, reason: String)
        public var description: String {
            switch self {
            case let .read(f, r): return "\(f): cannot read PNG: \(r)"
            case let .write(f, r): return "\(f): cannot write PNG: \(r)"
            }
        }
    }

    /// Reads any PNG (gray, palette, alpha — composited on white by libpng's conversion — or
    /// 16-bit) as RGB [1, 3, H, W] in [0, 1].
    public static func read(_ path: String) throws -> Tensor {
        var image = png_image()
        image.version = cpng_image_version()
        guard png_image_begin_read_from_file(&image, path) != 0 else {
            throw Failure.read(file: path, reason: message(image))
        }
        defer { png_image_free(&image) }
        image.format = cpng_format_rgb()
        let (w, h) = (Int(image.width), Int(image.height))
        var bytes = [UInt8](repeating: 0, count: w * h * 3)
        var white = png_color(red: 255, green: 255, blue: 255)
        let ok = bytes.withUnsafeMutableBytes { png_image_finish_read(&image, &white, $0.baseAddress, 0, nil) }
        guard ok != 0 else { throw Failure.read(file: path, reason: message(image)) }
        let t = Tensor(zeros: [1, 3, h, w])
        for y in 0..<h { for x in 0..<w { for c in 0..<3 {
            t.pointer[(c * h + y) * w + x] = Float(bytes[(y * w + x) * 3 + c]) / 255
        } } }
        return t
    }

    /// Writes image `index` of [B, 3, H, W] values in [0, 1] (clamped; rounded to 8 bits as
    /// diffusers' `numpy_to_pil` does) to `path`, atomically.
    public static func write(_ images: Tensor, index: Int = 0, to path: String) throws {
        precondition(images.rank == 4 && images.shape[1] == 3 && index < images.shape[0], "PNG needs [B, 3, H, W] images")
        let (h, w) = (images.shape[2], images.shape[3])
        let src = images[index]
        var bytes = [UInt8](repeating: 0, count: w * h * 3)
        for y in 0..<h { for x in 0..<w { for c in 0..<3 {
            let raw = src.pointer[(c * h + y) * w + x]
            let v = raw.isNaN ? 0 : min(max(raw, 0), 1)  // a NaN pixel is written black, not a crash
            bytes[(y * w + x) * 3 + c] = UInt8((v * 255).rounded(.toNearestOrEven))
        } } }
        var image = png_image()
        image.version = cpng_image_version()
        image.width = png_uint_32(w)
        image.height = png_uint_32(h)
        image.format = cpng_format_rgb()
        let tmp = path + ".tmp-\(getpid())"
        let ok = bytes.withUnsafeBytes { png_image_write_to_file(&image, tmp, 0, $0.baseAddress, 0, nil) }
        guard ok != 0 else {
            unlink(tmp)
            throw Failure.write(file: path, reason: message(image))
        }
        guard rename(tmp, path) == 0 else {
            unlink(tmp)
            throw Failure.write(file: path, reason: String(cString: strerror(errno)))
        }
    }

    /// The pipeline's decoded output [-1, 1] → [0, 1]: clamp(x/2 + 0.5, 0, 1).
    public static func fromDecoded(_ decoded: Tensor) -> Tensor {
        let out = Tensor(zeros: decoded.shape)
        for i in 0..<out.count { out.pointer[i] = min(max(decoded.pointer[i] / 2 + 0.5, 0), 1) }
        return out
    }

    private static func message(_ image: png_image) -> String {
        var m = image.message
        return withUnsafeBytes(of: &m) { raw in
            String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
        }
    }
}
