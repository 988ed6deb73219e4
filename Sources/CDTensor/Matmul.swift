/// Matrix product with either operand transposed: out[M,N] = alpha · op(A) · op(B), where op(A) is
/// [M,K] (A stored [K,M] when `transA`) and op(B) is [K,N] (B stored [N,K] when `transB`).
/// Used for products of activations (e.g. attention scores); weights go through `linearForward`.
public struct MatmulShape: Sendable, Equatable {
    public let m: Int, n: Int, k: Int
    public let transA: Bool, transB: Bool

    public init(a: Tensor, b: Tensor, transA: Bool, transB: Bool) {
        precondition(a.rank == 2 && b.rank == 2, "matmul needs matrices, got \(a.shape) and \(b.shape)")
        m = transA ? a.shape[1] : a.shape[0]
        k = transA ? a.shape[0] : a.shape[1]
        n = transB ? b.shape[0] : b.shape[1]
        let kb = transB ? b.shape[1] : b.shape[0]
        precondition(k == kb, "matmul inner sizes differ: \(a.shape)\(transA ? "ᵀ" : "") · \(b.shape)\(transB ? "ᵀ" : "")")
        self.transA = transA
        self.transB = transB
    }

    var lda: Int { transA ? m : k }
    var ldb: Int { transB ? k : n }
}

public func matmulForward(a: Tensor, b: Tensor, transA: Bool = false, transB: Bool = false,
                          alpha: Float = 1, out: Tensor) {
    let timing = OpTimer.begin(.matmul)
    defer { OpTimer.end(timing) }
    let s = MatmulShape(a: a, b: b, transA: transA, transB: transB)
    precondition(out.count == s.m * s.n, "matmul output \(out.shape), expected [\(s.m), \(s.n)]")
    FlopCounter.add(.matmul, 2 * Double(s.m) * Double(s.n) * Double(s.k))
    BLAS.gemm(transA: transA, transB: transB, m: s.m, n: s.n, k: s.k, alpha: alpha,
              a: a.pointer, lda: s.lda, b: b.pointer, ldb: s.ldb, c: out.pointer, ldc: s.n)
}

/// Accumulates dA and dB (either may be nil) of `out = alpha · op(A) · op(B)`:
///   d op(A) = alpha · dOut · op(B)ᵀ,   d op(B) = alpha · op(A)ᵀ · dOut
public func matmulBackward(a: Tensor, b: Tensor, transA: Bool = false, transB: Bool = false,
                           alpha: Float = 1, dOut: Tensor, dA: Tensor?, dB: Tensor?) {
    let timing = OpTimer.begin(.matmul)
    defer { OpTimer.end(timing) }
    let s = MatmulShape(a: a, b: b, transA: transA, transB: transB)
    let (m, n, k) = (s.m, s.n, s.k)
    precondition(dOut.count == m * n, "matmul dOut \(dOut.shape), expected [\(m), \(n)]")
    FlopCounter.add(.matmul, 2 * Double(m) * Double(n) * Double(k) * Double((dA == nil ? 0 : 1) + (dB == nil ? 0 : 1)))
    if let dA {
        precondition(dA.count == a.count)
        if transA {  // dA[K,M] += alpha · op(B) · dOutᵀ
            BLAS.gemm(transA: transB, transB: true, m: k, n: m, k: n, alpha: alpha, a: b.pointer, lda: s.ldb,
                      b: dOut.pointer, ldb: n, beta: 1, c: dA.pointer, ldc: m)
        } else {     // dA[M,K] += alpha · dOut · op(B)ᵀ
            BLAS.gemm(transB: !transB, m: m, n: k, k: n, alpha: alpha, a: dOut.pointer, lda: n,
                      b: b.pointer, ldb: s.ldb, beta: 1, c: dA.pointer, ldc: k)
        }
    }
    if let dB {
        precondition(dB.count == b.count)
        if transB {  // dB[N,K] += alpha · dOutᵀ · op(A)
            BLAS.gemm(transA: true, transB: transA, m: n, n: k, k: m, alpha: alpha, a: dOut.pointer, lda: n,
                      b: a.pointer, ldb: s.lda, beta: 1, c: dB.pointer, ldc: k)
        } else {     // dB[K,N] += alpha · op(A)ᵀ · dOut
            BLAS.gemm(transA: !transA, m: k, n: n, k: m, alpha: alpha, a: a.pointer, lda: s.lda,
                      b: dOut.pointer, ldb: n, beta: 1, c: dB.pointer, ldc: n)
        }
    }
}

public func matmulForwardNaive(a: Tensor, b: Tensor, transA: Bool = false, transB: Bool = false,
                               alpha: Float = 1, out: Tensor) {
    let s = MatmulShape(a: a, b: b, transA: transA, transB: transB)
    BLAS.gemmNaive(transA: transA, transB: transB, m: s.m, n: s.n, k: s.k, alpha: alpha,
                   a: a.pointer, lda: s.lda, b: b.pointer, ldb: s.ldb, c: out.pointer, ldc: s.n)
}
