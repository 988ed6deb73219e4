import Foundation

/// The loss curve of a run as a small standalone SVG: raw per-step loss (light) and its
/// exponential moving average (dark), step on x, loss on y.
public enum LossPlot {
    public static func svg(steps: [Int], losses: [Double], title: String) -> String {
        let (w, h, pad) = (640.0, 360.0, 48.0)
        let points = zip(steps, losses).filter { $0.1.isFinite }
        guard let first = points.first else {
            return "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"640\" height=\"360\"><text x=\"20\" y=\"30\">no steps yet</text></svg>\n"
        }
        let x0 = Double(first.0), x1 = Double(max(points.last!.0, first.0 + 1))
        let lo = points.map(\.1).min()!, hi = max(points.map(\.1).max()!, lo + 1e-12)
        func px(_ s: Int) -> Double { pad + (Double(s) - x0) / (x1 - x0) * (w - 2 * pad) }
        func py(_ v: Double) -> Double { h - pad - (v - lo) / (hi - lo) * (h - 2 * pad) }
        var ema = first.1, smooth: [(Int, Double)] = []
        for (s, v) in points { ema = 0.9 * ema + 0.1 * v; smooth.append((s, ema)) }
        func polyline(_ p: [(Int, Double)], _ style: String) -> String {
            "<polyline fill=\"none\" \(style) points=\"" + p.map { String(format: "%.1f,%.1f", px($0.0), py($0.1)) }.joined(separator: " ") + "\"/>"
        }
        var svg = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(w))\" height=\"\(Int(h))\" font-family=\"sans-serif\" font-size=\"12\">\n"
        svg += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
        svg += "<text x=\"\(Int(pad))\" y=\"20\" font-size=\"14\">\(escape(title))</text>\n"
        svg += String(format: "<line x1=\"%.0f\" y1=\"%.0f\" x2=\"%.0f\" y2=\"%.0f\" stroke=\"black\"/>\n", pad, h - pad, w - pad, h - pad)
        svg += String(format: "<line x1=\"%.0f\" y1=\"%.0f\" x2=\"%.0f\" y2=\"%.0f\" stroke=\"black\"/>\n", pad, pad, pad, h - pad)
        svg += String(format: "<text x=\"%.0f\" y=\"%.0f\">%d</text><text x=\"%.0f\" y=\"%.0f\" text-anchor=\"end\">step %d</text>\n",
                      pad, h - pad + 16, Int(x0), w - pad, h - pad + 16, Int(x1))
        svg += String(format: "<text x=\"4\" y=\"%.0f\">%.4g</text><text x=\"4\" y=\"%.0f\">%.4g</text>\n", py(hi) + 4, hi, py(lo), lo)
        svg += polyline(points.map { ($0.0, $0.1) }, "stroke=\"#9ecae1\" stroke-width=\"1\"") + "\n"
        svg += polyline(smooth, "stroke=\"#08519c\" stroke-width=\"2\"") + "\n"
        svg += "<text x=\"\(Int(w - pad))\" y=\"20\" text-anchor=\"end\" fill=\"#08519c\">loss (EMA 0.9)</text>\n</svg>\n"
        return svg
    }

    private static func escape(_ s: String) -> String {
        s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
    }
}
