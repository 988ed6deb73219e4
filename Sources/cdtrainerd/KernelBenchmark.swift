import CDTensor
import Foundation

/// `cdtrainerd bench kernels`: machine limits first (sgemm GFLOP/s, memory GB/s), then each kernel
/// at SD1.5 sizes, forward and backward, as the best of `repeats` timed runs after one warm-up.
struct KernelBenchmark {
    let repeats: Int
    let only: String?

    struct Result: Codable {
        let name: String
        let pass: String            // "forward" | "backward"
        let seconds: Double
        let gflops: Double          // achieved, from the FLOPs the kernel must do
        let ratioToSgemm: Double
        let gbps: Double            // achieved, from the bytes the kernel must move
        let bound: String           // "gemm" or "memory": the limit it is measured against
        let boundFraction: Double   // time at that limit / measured time (1 = at the limit)
    }

    struct Report: Codable {
        let sgemmGflops: Double
        let sgemmSize: Int
        let memoryGbps: Double
        let threads: Int
        let gemmLibrary: String
        /// `ComputePrecision` of convolutions and frozen-weight matmuls (the sgemm figure is fp32).
        let precision: String
        let results: [Result]

        var table: String {
            var lines = [String(format: "sgemm %dx%d: %.1f GFLOP/s   memory copy: %.1f GB/s   threads: %d   GEMM: %@   precision: %@",
                                sgemmSize, sgemmSize, sgemmGflops, memoryGbps, threads, gemmLibrary, precision)]
            lines.append("kernel                                         pass        seconds   GFLOP/s  x sgemm    GB/s  bound  at bound")
            for r in results {
                let label = r.name.padding(toLength: 46, withPad: " ", startingAt: 0) + " " + r.pass.padding(toLength: 9, withPad: " ", startingAt: 0)
                lines.append(label + String(format: " %9.5f %9.1f %8.2f %7.1f  ", r.seconds, r.gflops, r.ratioToSgemm, r.gbps)
                             + r.bound.padding(toLength: 6, withPad: " ", startingAt: 0) + String(format: " %7.0f%%", 100 * r.boundFraction))
            }
            return lines.joined(separator: "\n")
        }
    }

    /// One benchmark case: its work and a closure per pass.
    private struct Case {
        let name: String
        let pass: String
        let flops: Double
        let bytes: Double
        let bound: String
        let body: () -> Void
    }

    func run(progress: (String) -> Void) -> Report {
        let sgemmSize = 3072
        let sgemm = measureSgemm(size: sgemmSize, repeats: max(3, repeats))
        progress(String(format: "sgemm %d: %.1f GFLOP/s", sgemmSize, sgemm))
        let bandwidth = measureBandwidth()
        progress(String(format: "memory copy: %.1f GB/s", bandwidth))
        var results: [Result] = []
        for c in cases() where only.map({ c.name.contains($0) }) ?? true {
            let seconds = best(of: repeats, c.body)
            let gflops = c.flops / seconds / 1e9
            let gbps = c.bytes / seconds / 1e9
            let boundSeconds = c.bound == "gemm" ? c.flops / (sgemm * 1e9) : c.bytes / (bandwidth * 1e9)
            let r = Result(name: c.name, pass: c.pass, seconds: seconds, gflops: gflops, ratioToSgemm: gflops / sgemm,
                           gbps: gbps, bound: c.bound, boundFraction: boundSeconds / seconds)
            results.append(r)
            progress(String(format: "%@ %@: %.5f s, %.1f GFLOP/s (%.2f of sgemm), %.0f%% of %@ bound",
                            r.name, r.pass, seconds, gflops, r.ratioToSgemm, 100 * r.boundFraction, r.bound))
        }
        return Report(sgemmGflops: sgemm, sgemmSize: sgemmSize, memoryGbps: bandwidth,
                      threads: ThreadPool.shared.threadCount, gemmLibrary: BLAS.gemmLibrary,
                      precision: ComputePrecision.current.rawValue, results: results)
    }

    private func cases() -> [Case] {
        var all: [Case] = []
        all += convCases(channels: 320, size: 64)
        all += convCases(channels: 1280, size: 8)
        all += attentionCases(name: "self-attention 4096 tokens, 8 heads x 40", queries: 4096, keys: 4096)
        all += attentionCases(name: "cross-attention 4096x77, 8 heads x 40", queries: 4096, keys: 77)
        all += groupNormCases(silu: false)
        all += groupNormCases(silu: true)
        all += linearCases(m: 4096, k: 320, n: 1280)
        return all
    }

    private func convCases(channels c: Int, size: Int) -> [Case] {
        let x = randomTensor([1, c, size, size]), w = randomTensor([c, c, 3, 3], scale: 0.02), b = randomTensor([c])
        w.storage.freeze()  // as a loaded model's (bf16 keeps a converted copy)
        let p = Conv2dParameters(stride: 1, padding: 1)
        let g = Conv2dGeometry(input: x.shape, weight: w.shape, parameters: p)
        let y = Tensor(zeros: g.outputShape), dy = randomTensor(g.outputShape), dx = Tensor(zeros: x.shape)
        let name = "conv3x3 \(c)->\(c) \(size)x\(size)"
        // Custom Diffusion freezes every conv, so backward is the input gradient only.
        return [
            Case(name: name, pass: "forward", flops: g.flops, bytes: 4 * Double(x.count + w.count + y.count), bound: "gemm") {
                conv2dForward(x: x, weight: w, bias: b, out: y, parameters: p)
            },
            Case(name: name + " (dx)", pass: "backward", flops: g.flops, bytes: 4 * Double(2 * x.count + w.count + dy.count), bound: "gemm") {
                conv2dBackward(x: x, weight: w, dOut: dy, dx: dx, dWeight: nil, dBias: nil, parameters: p)
            },
        ]
    }

    private func attentionCases(name: String, queries: Int, keys: Int) -> [Case] {
        let (heads, dim) = (8, 40)
        let q = randomTensor([1, queries, heads * dim]), k = randomTensor([1, keys, heads * dim]), v = randomTensor([1, keys, heads * dim])
        let out = Tensor(zeros: q.shape), lse = Tensor(zeros: [1, heads, queries]), dOut = randomTensor(q.shape)
        let dq = Tensor(zeros: q.shape), dk = Tensor(zeros: k.shape), dv = Tensor(zeros: v.shape)
        let forwardFlops = 4 * Double(heads * queries * keys * dim)
        let io = 4 * Double(2 * q.count + 2 * k.count)
        return [
            Case(name: name, pass: "forward", flops: forwardFlops, bytes: io, bound: "gemm") {
                attentionForward(q: q, k: k, v: v, heads: heads, out: out, logSumExp: lse)
            },
            // Recomputed scores plus dP, dQ, dK, dV: five products of the forward's size.
            Case(name: name, pass: "backward", flops: 2.5 * forwardFlops, bytes: 2 * io, bound: "gemm") {
                attentionBackward(q: q, k: k, v: v, heads: heads, out: out, logSumExp: lse, dOut: dOut, dq: dq, dk: dk, dv: dv)
            },
        ]
    }

    private func groupNormCases(silu: Bool) -> [Case] {
        let (c, size, groups) = (320, 64, 32)
        let x = randomTensor([1, c, size, size]), gamma = randomTensor([c]), beta = randomTensor([c])
        let y = Tensor(zeros: x.shape), dy = randomTensor(x.shape), dx = Tensor(zeros: x.shape)
        let stats = GroupNormStats(batch: 1, groups: groups)
        let n = Double(x.count)
        let name = "group norm\(silu ? "+SiLU" : "") 320x64x64, 32 groups"
        groupNormForward(x: x, gamma: gamma, beta: beta, groups: groups, eps: 1e-5, silu: silu, out: y, stats: stats)
        // Bytes: forward reads x and writes y; backward reads x and dy and updates dx.
        return [
            Case(name: name, pass: "forward", flops: (silu ? 12 : 7) * n, bytes: 8 * n, bound: "memory") {
                groupNormForward(x: x, gamma: gamma, beta: beta, groups: groups, eps: 1e-5, silu: silu, out: y, stats: stats)
            },
            Case(name: name, pass: "backward", flops: (silu ? 24 : 12) * n, bytes: 16 * n, bound: "memory") {
                groupNormBackward(x: x, gamma: gamma, beta: beta, groups: groups, silu: silu, stats: stats, dOut: dy,
                                  dx: dx, dGamma: nil, dBeta: nil)
            },
        ]
    }

    private func linearCases(m: Int, k: Int, n: Int) -> [Case] {
        let x = randomTensor([m, k]), w = randomTensor([n, k], scale: 0.05), b = randomTensor([n])
        w.storage.freeze()  // as a loaded model's; dW is still computed (in fp32), as for a trained weight
        let y = Tensor(zeros: [m, n]), dy = randomTensor([m, n]), dx = Tensor(zeros: x.shape)
        let dw = Tensor(zeros: w.shape), db = Tensor(zeros: [n])
        let flops = 2 * Double(m * k * n)
        let name = "linear \(m)x\(k)x\(n)"
        return [
            Case(name: name, pass: "forward", flops: flops, bytes: 4 * Double(x.count + w.count + y.count), bound: "gemm") {
                linearForward(x: x, weight: w, bias: b, out: y)
            },
            Case(name: name + " (dx, dW, db)", pass: "backward", flops: 2 * flops, bytes: 4 * Double(2 * x.count + 2 * w.count + dy.count), bound: "gemm") {
                linearBackward(x: x, weight: w, dOut: dy, dx: dx, dWeight: dw, dBias: db)
            },
        ]
    }

    /// Parallel copy of 256 MiB (well beyond any cache); bytes read + written per second.
    private func measureBandwidth() -> Double {
        let count = 64 << 20
        let src = randomTensor([count]), dst = Tensor(zeros: [count])
        let seconds = best(of: 3) {
            ThreadPool.shared.parallelRanges(count, grain: 1 << 20) { r in
                (dst.pointer + r.lowerBound).update(from: src.pointer + r.lowerBound, count: r.count)
            }
        }
        return 8 * Double(count) / seconds / 1e9
    }

    private func best(of n: Int, _ body: () -> Void) -> Double {
        body()  // warm-up: page faults, scratch growth, oneDNN's GEMM buffers
        var best = Double.infinity
        let clock = ContinuousClock()
        for _ in 0..<n {
            let d = clock.measure(body)
            best = min(best, Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18)
        }
        return best
    }

    private func randomTensor(_ shape: [Int], scale: Float = 1) -> Tensor {
        var rng = SplitMix64(seed: UInt64(shape.reduce(1, *)))
        return rng.uniformTensor(shape, -scale, scale)
    }
}
