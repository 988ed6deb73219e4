/// Orientation metadata the way Pillow's `Image.getexif()` finds it: the EXIF (TIFF) IFD0
/// Orientation tag (0x0112), or when that is absent, the first `tiff:Orientation="N"` /
/// `tiff:Orientation>N` in the XMP packet. Unreadable metadata counts as no orientation.
struct OrientationMetadata {
    /// TIFF data, optionally behind one or two "Exif\0\0" prefixes.
    var exif: ArraySlice<UInt8>? = nil
    /// Further EXIF segments (JPEG APP1s after the first; Pillow appends them).
    var exifContinuation: [UInt8] = []
    var xmp: ArraySlice<UInt8>? = nil

    /// The EXIF orientation value (any integer, as stored), or nil when none is given.
    var orientation: Int? {
        if var tiff = exif {
            if !exifContinuation.isEmpty { tiff = ArraySlice(Array(tiff) + exifContinuation) }
            if let o = Self.tiffOrientation(tiff) { return o }
        }
        if let xmp { return Self.xmpOrientation(xmp) }
        return nil
    }

    static let exifPrefix: [UInt8] = Array("Exif\0\0".utf8)

    static func hasPrefix(_ data: ArraySlice<UInt8>, _ prefix: [UInt8]) -> Bool {
        data.count >= prefix.count && data.prefix(prefix.count).elementsEqual(prefix)
    }

    static func tiffOrientation(_ data: ArraySlice<UInt8>) -> Int? {
        var d = data
        for _ in 0..<2 where hasPrefix(d, exifPrefix) { d = d.dropFirst(exifPrefix.count) }
        let b = Array(d)
        guard b.count >= 8 else { return nil }
        let little: Bool
        if b[0] == 0x49 && b[1] == 0x49 && b[2] == 42 && b[3] == 0 {
            little = true
        } else if b[0] == 0x4D && b[1] == 0x4D && b[2] == 0 && b[3] == 42 {
            little = false
        } else {
            return nil
        }
        func u16(_ i: Int) -> Int? {
            guard i >= 0, i + 2 <= b.count else { return nil }
            return little ? Int(b[i]) | Int(b[i + 1]) << 8 : Int(b[i]) << 8 | Int(b[i + 1])
        }
        func u32(_ i: Int) -> Int? {
            guard let lo = u16(little ? i : i + 2), let hi = u16(little ? i + 2 : i) else { return nil }
            return hi << 16 | lo
        }
        guard let ifd = u32(4), let count = u16(ifd) else { return nil }
        for e in 0..<count {
            let entry = ifd + 2 + e * 12
            guard let tag = u16(entry), let type = u16(entry + 2), let n = u32(entry + 4) else { return nil }
            guard tag == 0x0112 else { continue }
            guard n == 1 else { return nil }
            switch type {
            case 1, 7: return entry + 8 < b.count ? Int(b[entry + 8]) : nil  // BYTE, UNDEFINED
            case 3: return u16(entry + 8)  // SHORT
            case 4: return u32(entry + 8)  // LONG
            case 8: return u16(entry + 8).map { Int(Int16(truncatingIfNeeded: $0)) }  // SSHORT
            case 9: return u32(entry + 8).map { Int(Int32(truncatingIfNeeded: $0)) }  // SLONG
            default: return nil
            }
        }
        return nil
    }

    /// Pillow: `re.search(rb'tiff:Orientation(="|>)([0-9])', xmp)`.
    static func xmpOrientation(_ data: ArraySlice<UInt8>) -> Int? {
        let key = Array("tiff:Orientation".utf8)
        let b = Array(data)
        guard b.count > key.count + 1 else { return nil }
        var i = 0
        while i + key.count < b.count {
            if b[i] == key[0] && b[i..<(i + key.count)].elementsEqual(key) {
                var j = i + key.count
                if b[j] == UInt8(ascii: "=") {
                    j += 1
                    if j < b.count && b[j] == UInt8(ascii: "\"") { j += 1 } else { i += 1; continue }
                } else if b[j] == UInt8(ascii: ">") {
                    j += 1
                } else {
                    i += 1
                    continue
                }
                if j < b.count, b[j] >= UInt8(ascii: "0"), b[j] <= UInt8(ascii: "9") {
                    return Int(b[j] - UInt8(ascii: "0"))
                }
            }
            i += 1
        }
        return nil
    }
}
