/// Fully connected layer, PyTorch layout: y[M,N] = x[M,K] · W[N,K]ᵀ + b[N].
/// Leading dimensions of `x`/`y` are flattened into M (e.g. [B, T, C] → [B·T, C]).

@inline(__always) private func linearDims(_ x: Tensor, _ weight: Tensor, _ out: Tensor) -> (m: Int, n: Int, k: Int) {
    precondition(weight.rank == 2, "linear weight must be [out, in], got \(weight.shape)")
    let n = weight.shape[0], k = weight.shape[1]
    precondition(x.dim(-1) == k, "linear input \(x.shape) does not end in \(k)")
    let m = x.count / max(k, 1)
    precondition(out.count == m * n && out.dim(-1) == n, "linear output \(out.shape), expected [\(m), \(n)]")
    return (m, n, k)
}

/// `ComputePrecision.bf16` covers the products with a frozen weight (y and dx); a trained weight's
/// products, dW among them, stay fp32.
@inline(__always) private func bf16Applies(_ weight: Tensor) -> Bool {
    ComputePrecision.current == .bf16 && weight.storage.isFrozen
}

public func linearForward(x: Tensor, weight: Tensor, bias: Tensor?, out: Tensor) {
    let timing = OpTimer.begin(.matmul)
    defer { OpTimer.end(timing) }
    let (m, n, k) = linearDims(x, weight, out)
    FlopCounter.add(.matmul, 2 * Double(m) * Double(n) * Double(k))
    if !(bf16Applies(weight) && OneDNNMatmul.product(m: m, n: n, k: k, a: x.pointer, weight: weight, transB: true,
                                                      c: out.pointer, accumulate: false)) {
        BLAS.gemm(transB: true, m: m, n: n, k: k, a: x.pointer, lda: k, b: weight.pointer, ldb: k,
                  beta: 0, c: out.pointer, ldc: n)
    }
    if let bias { addRowBias(out.pointer, rows: m, cols: n, bias: bias) }
}

/// Gradients of `linearForward`; each is accumulated (`+=`). A nil `dWeight`/`dBias` is a frozen
/// parameter and its GEMM/reduction is skipped; a nil `dx` skips the input gradient.
///   forward: y = x·Wᵀ + b
///   dx += dy·W,  dW += dyᵀ·x,  db += Σ_rows dy
public func linearBackward(x: Tensor, weight: Tensor, dOut: Tensor,
                           dx: Tensor?, dWeight: Tensor?, dBias: Tensor?) {
    let timing = OpTimer.begin(.matmul)
    defer { OpTimer.end(timing) }
    let (m, n, k) = linearDims(x, weight, dOut)
    FlopCounter.add(.matmul, 2 * Double(m) * Double(n) * Double(k) * Double((dx == nil ? 0 : 1) + (dWeight == nil ? 0 : 1)))
    if let dx {
        precondition(dx.count == x.count)
        if !(bf16Applies(weight) && OneDNNMatmul.product(m: m, n: k, k: n, a: dOut.pointer, weight: weight, transB: false,
                                                          c: dx.pointer, accumulate: true)) {
            BLAS.gemm(m: m, n: k, k: n, a: dOut.pointer, lda: n, b: weight.pointer, ldb: k,
                      beta: 1, c: dx.pointer, ldc: k)
        }
    }
    if let dWeight {
        precondition(dWeight.count == weight.count)
        BLAS.gemm(transA: true, m: n, n: k, k: m, a: dOut.pointer, lda: n, b: x.pointer, ldb: k,
                  beta: 1, c: dWeight.pointer, ldc: k)
    }
    if let dBias {
        precondition(dBias.count == n)
        sumRows(dOut.pointer, rows: m, cols: n, into: dBias.pointer)
    }
}

public func linearForwardNaive(x: Tensor, weight: Tensor, bias: Tensor?, out: Tensor) {
    let (m, n, k) = linearDims(x, weight, out)
    BLAS.gemmNaive(transB: true, m: m, n: n, k: k, a: x.pointer, lda: k, b: weight.pointer, ldb: k,
                   c: out.pointer, ldc: n)
    if let bias {
        for i in 0..<m { for j in 0..<n { out.pointer[i * n + j] += bias.pointer[j] } }
    }
}

public func linearBackwardNaive(x: Tensor, weight: Tensor, dOut: Tensor,
                                dx: Tensor?, dWeight: Tensor?, dBias: Tensor?) {
    let (m, n, k) = linearDims(x, weight, dOut)
    let x = x.pointer, w = weight.pointer, dy = dOut.pointer
    if let dx {
        for i in 0..<m { for p in 0..<k {
            var s = 0.0
            for j in 0..<n { s += Double(dy[i * n + j]) * Double(w[j * k + p]) }
            dx.pointer[i * k + p] += Float(s)
        } }
    }
    if let dWeight {
        for j in 0..<n { for p in 0..<k {
            var s = 0.0
            for i in 0..<m { s += Double(dy[i * n + j]) * Double(x[i * k + p]) }
            dWeight.pointer[j * k + p] += Float(s)
        } }
    }
    if let dBias {
        for j in 0..<n {
            var s = 0.0
            for i in 0..<m { s += Double(dy[i * n + j]) }
            dBias.pointer[j] += Float(s)
        }
    }
}

/// y[i, j] += b[j] for a [rows, cols] matrix.
func addRowBias(_ y: UnsafeMutablePointer<Float>, rows: Int, cols: Int, bias: Tensor) {
    precondition(bias.count == cols, "bias \(bias.shape) for \(cols) columns")
    let b = bias.pointer
    ThreadPool.shared.parallelRanges(rows, grain: max(1, 16384 / max(cols, 1))) { range in
        for i in range { addInPlace(y + i * cols, b, cols) }
    }
}

/// into[j] += Σ_i a[i, j], reduced in Double per column block so long columns stay exact enough.
func sumRows(_ a: UnsafePointer<Float>, rows: Int, cols: Int, into: UnsafeMutablePointer<Float>) {
    ThreadPool.shared.parallelRanges(cols, grain: 64) { range in
        var acc = [Double](repeating: 0, count: range.count)
        for i in 0..<rows {
            let row = a + i * cols + range.lowerBound
            for j in 0..<range.count { acc[j] += Double(row[j]) }
        }
        for j in 0..<range.count { into[range.lowerBound + j] += Float(acc[j]) }
    }
}
