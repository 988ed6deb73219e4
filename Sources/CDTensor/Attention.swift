import Foundation

/// Multi-head scaled-dot-product attention, diffusers layout: q[B, Tq, H·D], k and v [B, Tk, H·D],
/// head h owning columns h·D ..< (h+1)·D; out[B, Tq, H·D] = softmax(q·kᵀ/√D [+ causal mask])·v.
/// The causal mask is PyTorch's `is_causal` (top-left aligned): query i sees keys 0…i.
///
/// Memory: scores are never materialized for a whole head. Each task handles one (batch, head,
/// block of query rows) and keeps only a [rows, Tk] tile in per-thread scratch (at most
/// `tileFloats`, 4 MiB by default), so 8 heads × 4096 × 4096 need a few tiles, not 512 MiB. Forward saves out and the per-row
/// log-sum-exp [B, H, Tq]; backward recomputes each probability tile from them (as
/// FlashAttention does) instead of storing probabilities.
public struct AttentionShape: Sendable, Equatable {
    public let batch: Int, queries: Int, keys: Int, heads: Int, headDim: Int
    public let causal: Bool
    /// Floats of scores per tile (see `blockRows`).
    public let tileFloats: Int

    /// 1 Mi floats (4 MiB): large tiles amortize the GEMM's packing of Kᵀ and V over more rows,
    /// and two tiles per thread still fit in L3. Measured with `bench kernels` on oneDNN's sgemm:
    /// 256 Ki floats ran self-attention about 8 % slower, 512 Ki to 2 Mi the same within noise.
    public static let defaultTileFloats = 1_048_576

    public init(q: Tensor, k: Tensor, v: Tensor, heads: Int, causal: Bool, tileFloats: Int = defaultTileFloats) {
        precondition(q.rank == 3 && k.rank == 3 && v.rank == 3, "attention needs [B, T, H·D] tensors")
        precondition(k.shape == v.shape && q.shape[0] == k.shape[0] && q.shape[2] == k.shape[2],
                     "attention shapes q \(q.shape) k \(k.shape) v \(v.shape)")
        precondition(heads > 0 && q.shape[2] % heads == 0, "\(q.shape[2]) channels do not split into \(heads) heads")
        batch = q.shape[0]; queries = q.shape[1]; keys = k.shape[1]
        self.heads = heads; headDim = q.shape[2] / heads
        self.causal = causal
        self.tileFloats = tileFloats
    }

    var width: Int { heads * headDim }
    var scale: Float { 1 / Float(headDim).squareRoot() }
    /// Row stride of a score tile: keys rounded up to 16, the padding held at −∞ (probability 0) so
    /// the exp passes run whole 8-lane blocks. GEMMs read only the first `keys` columns.
    var tileStride: Int { (keys + 15) & ~15 }
    /// Query rows per tile: `tileFloats / keys`, between 8 and 1024.
    var blockRows: Int { max(8, min(1024, tileFloats / max(keys, 1))) }
    var blocks: Int { (queries + blockRows - 1) / blockRows }
    /// Last key visible to query row i: i when causal (PyTorch's `tril(ones(Tq, Tk))`), else all.
    @inline(__always) func lastKey(_ row: Int) -> Int { causal ? min(row, keys - 1) : keys - 1 }
    /// FLOPs of the two forward products (q·kᵀ and p·v).
    public var forwardFlops: Double { 4 * Double(batch * heads) * Double(queries) * Double(keys) * Double(headDim) }
}

public func attentionForward(q: Tensor, k: Tensor, v: Tensor, heads: Int, causal: Bool = false,
                             out: Tensor, logSumExp: Tensor, tileFloats: Int = AttentionShape.defaultTileFloats) {
    let timing = OpTimer.begin(.attention)
    defer { OpTimer.end(timing) }
    let s = AttentionShape(q: q, k: k, v: v, heads: heads, causal: causal, tileFloats: tileFloats)
    precondition(out.shape == q.shape, "attention output \(out.shape), expected \(q.shape)")
    precondition(logSumExp.count == s.batch * heads * s.queries, "logSumExp must be [B, H, Tq]")
    FlopCounter.add(.attention, s.forwardFlops)
    let (tk, w, d, ld) = (s.keys, s.width, s.headDim, s.tileStride)
    ThreadPool.shared.parallelFor(s.batch * heads * s.blocks) { task, _ in
        let (b, h, r0, rows) = tile(s, task)
        let qp = q.pointer + (b * s.queries + r0) * w + h * d
        let kp = k.pointer + b * tk * w + h * d
        let vp = v.pointer + b * tk * w + h * d
        Scratch.with { arena in
            let sc = arena.tensor([rows, ld], zeroed: false).pointer
            // S = scale · Q_blk · Kᵀ   [rows, Tk]
            BLAS.gemm(transB: true, m: rows, n: tk, k: d, alpha: s.scale, a: qp, lda: w, b: kp, ldb: w,
                      c: sc, ldc: ld)
            let lse = logSumExp.pointer + (b * heads + h) * s.queries + r0
            // Unnormalized E = exp(S − rowmax); the 1/Σ goes onto the [rows, D] output
            // instead of a third pass over the [rows, Tk] tile.
            let sums = arena.tensor([rows], zeroed: false).pointer
            for i in 0..<rows {
                let row = sc + i * ld
                maskRow(s, row, r0 + i)
                (lse[i], sums[i]) = expRow(row, ld)  // lse holds the row max until below
            }
            addLogs(lse, sums, rows)  // lse = max + log Σ
            // O_blk = E · V, then row i scaled by 1/Σ_i   [rows, D]
            let op = out.pointer + (b * s.queries + r0) * w + h * d
            BLAS.gemm(m: rows, n: d, k: tk, a: sc, lda: ld, b: vp, ldb: w, c: op, ldc: w)
            for i in 0..<rows {
                let sum = sums[i]
                scaleInPlace(op + i * w, d, by: sum == 0 ? 0 : 1 / sum)  // NaN stays NaN
            }
        }
    }
}

/// Gradients of `attentionForward`, accumulated into any of dq, dk, dv that are given.
///   forward: S = scale·Q·Kᵀ, P = softmax(S), O = P·V
///   dV += Pᵀ·dO;  dP = dO·Vᵀ;  dS = P ∘ (dP − rowsum(dO ∘ O));  dQ += scale·dS·K;  dK += scale·dSᵀ·Q
/// Query-row tiles of one head add into the same dK/dV rows, so those go to per-worker buffers
/// that are summed at the end.
public func attentionBackward(q: Tensor, k: Tensor, v: Tensor, heads: Int, causal: Bool = false,
                              out: Tensor, logSumExp: Tensor, dOut: Tensor,
                              dq: Tensor?, dk: Tensor?, dv: Tensor?, tileFloats: Int = AttentionShape.defaultTileFloats) {
    let timing = OpTimer.begin(.attention)
    defer { OpTimer.end(timing) }
    let s = AttentionShape(q: q, k: k, v: v, heads: heads, causal: causal, tileFloats: tileFloats)
    precondition(out.shape == q.shape && dOut.shape == q.shape, "attention out \(out.shape) / dOut \(dOut.shape) for q \(q.shape)")
    precondition(logSumExp.count == s.batch * heads * s.queries, "logSumExp must be [B, H, Tq]")
    precondition((dq?.shape ?? q.shape) == q.shape && (dk?.shape ?? k.shape) == k.shape && (dv?.shape ?? v.shape) == v.shape,
                 "attention gradients must have the shapes of q, k, v")
    if dq == nil && dk == nil && dv == nil { return }
    // Recomputed scores, then dV, dP, dQ, dK: each a product of the forward's size (2·Tq·Tk·D).
    let products = 2 + (dv == nil ? 0 : 1) + (dq == nil ? 0 : 1) + (dk == nil ? 0 : 1)
    FlopCounter.add(.attention, s.forwardFlops / 2 * Double(products))
    let (tk, w, d, ld) = (s.keys, s.width, s.headDim, s.tileStride)
    let pool = ThreadPool.shared
    let tasks = s.batch * heads * s.blocks, chunks = min(pool.threadCount, tasks)
    let headFloats = tk * d
    // Tiles of one head add into the same dK/dV rows. Chunk c runs tiles tileRange(c) in order;
    // a head whose tiles all lie in one chunk adds straight into dk/dv, and a head split across
    // chunks (only a chunk's first or last head can be) goes to one of that chunk's two slots
    // [Tk, D], summed in afterwards in chunk order: no locks, no per-thread copies of dK/dV,
    // and the same result whatever the timing.
    func tileRange(_ c: Int) -> Range<Int> { (tasks * c / chunks)..<(tasks * (c + 1) / chunks) }
    func owned(_ bh: Int, _ range: Range<Int>) -> Bool { bh * s.blocks >= range.lowerBound && (bh + 1) * s.blocks <= range.upperBound }
    func headOffset(_ bh: Int) -> Int { (bh / heads) * tk * w + (bh % heads) * d }
    Scratch.with { arena in
    // slots[c][first or last head][dK or dV], each [Tk, D]
    let slots = (dk != nil || dv != nil) ? arena.tensor([chunks, 2, 2, headFloats]) : nil
    pool.parallelFor(chunks) { c, _ in
        let range = tileRange(c)
        let firstHead = range.lowerBound / s.blocks
        for task in range {
            let (b, h, r0, rows) = tile(s, task)
            let bh = b * heads + h
            let rowOffset = (b * s.queries + r0) * w + h * d
            let qp = q.pointer + rowOffset, dop = dOut.pointer + rowOffset, op = out.pointer + rowOffset
            let kp = k.pointer + headOffset(bh), vp = v.pointer + headOffset(bh)
            let direct = owned(bh, range)
            let slot = slots.map { $0.pointer + (c * 2 + (bh == firstHead ? 0 : 1)) * 2 * headFloats }
            let ldkv = direct ? w : d
            let dkp = direct ? dk.map { $0.pointer + headOffset(bh) } : (dk == nil ? nil : slot)
            let dvp = direct ? dv.map { $0.pointer + headOffset(bh) } : (dv == nil ? nil : slot.map { $0 + headFloats })
            let lse = logSumExp.pointer + bh * s.queries + r0
            Scratch.with { arena in
                let p = arena.tensor([rows, ld], zeroed: false).pointer
                let dp = arena.tensor([rows, ld], zeroed: false).pointer
                // P = exp(scale·Q·Kᵀ − lse), recomputed.
                BLAS.gemm(transB: true, m: rows, n: tk, k: d, alpha: s.scale, a: qp, lda: w, b: kp, ldb: w,
                          c: p, ldc: ld)
                for i in 0..<rows {
                    let row = p + i * ld
                    maskRow(s, row, r0 + i)
                    expShifted(row, ld, shift: lse[i])
                }
                if let dvp {  // dV += Pᵀ · dO
                    BLAS.gemm(transA: true, m: tk, n: d, k: rows, a: p, lda: ld, b: dop, ldb: w,
                              beta: 1, c: dvp, ldc: ldkv)
                }
                guard dq != nil || dkp != nil else { return }
                // dP = dO · Vᵀ, then dS = P ∘ (dP − Σ_j dO·O) in place.
                BLAS.gemm(transB: true, m: rows, n: tk, k: d, a: dop, lda: w, b: vp, ldb: w, c: dp, ldc: ld)
                for i in 0..<rows {
                    let delta = Vec8(repeating: Float(dotProduct(dop + i * w, op + i * w, d)))
                    let pr = p + i * ld, dr = dp + i * ld
                    for j in tk..<ld { dr[j] = 0 }  // padding: never written by the GEMM
                    var j = 0
                    while j < ld { store8(load8(pr + j) * (load8(dr + j) - delta), dr + j); j += 8 }
                }
                if let dq {  // dQ += scale · dS · K
                    BLAS.gemm(m: rows, n: d, k: tk, alpha: s.scale, a: dp, lda: ld, b: kp, ldb: w,
                              beta: 1, c: dq.pointer + rowOffset, ldc: w)
                }
                if let dkp {  // dK += scale · dSᵀ · Q
                    BLAS.gemm(transA: true, m: tk, n: d, k: rows, alpha: s.scale, a: dp, lda: ld, b: qp, ldb: w,
                              beta: 1, c: dkp, ldc: ldkv)
                }
            }
        }
    }
    guard let slots else { return }
    for c in 0..<chunks {
        let range = tileRange(c)
        let ends = Set([range.lowerBound / s.blocks, (range.upperBound - 1) / s.blocks]).sorted()
        for bh in ends where !owned(bh, range) {
            let slot = slots.pointer + (c * 2 + (bh == ends[0] ? 0 : 1)) * 2 * headFloats
            for (grad, part) in [(dk, slot), (dv, slot + headFloats)] {
                guard let grad else { continue }
                let dst = grad.pointer + headOffset(bh)
                for r in 0..<tk { addInPlace(dst + r * w, part + r * d, d) }
            }
        }
    }
    }
}

/// (batch, head, first row, row count) of tile `task`.
@inline(__always) private func tile(_ s: AttentionShape, _ task: Int) -> (Int, Int, Int, Int) {
    let block = task % s.blocks, bh = task / s.blocks
    let r0 = block * s.blockRows
    return (bh / s.heads, bh % s.heads, r0, min(s.blockRows, s.queries - r0))
}

/// Sets the scores after the causal horizon of query `row`, and the tile padding, to −∞.
@inline(__always) private func maskRow(_ s: AttentionShape, _ scores: UnsafeMutablePointer<Float>, _ row: Int) {
    // A loop, not update(repeating:): most calls fill a few padding floats, where memset's
    // call overhead showed in profiles.
    for j in (s.lastKey(row) + 1)..<s.tileStride { scores[j] = -.infinity }
}

/// lse[i] += log(sums[i]), eight rows at a time.
@inline(__always) private func addLogs(_ lse: UnsafeMutablePointer<Float>, _ sums: UnsafePointer<Float>, _ n: Int) {
    var i = 0
    while i + 8 <= n { store8(load8(lse + i) + log8(load8(sums + i)), lse + i); i += 8 }
    while i < n { lse[i] += Foundation.log(sums[i]); i += 1 }
}

/// x[0..<n] *= s
@inline(__always) private func scaleInPlace(_ x: UnsafeMutablePointer<Float>, _ n: Int, by s: Float) {
    let sv = Vec8(repeating: s)
    var i = 0
    while i + 8 <= n { store8(load8(x + i) * sv, x + i); i += 8 }
    while i < n { x[i] *= s; i += 1 }
}

/// x = exp(x − shift), in place (−∞ → 0).
@inline(__always) private func expShifted(_ x: UnsafeMutablePointer<Float>, _ n: Int, shift: Float) {
    let sv = Vec8(repeating: shift)
    var i = 0
    while i + 8 <= n { store8(exp8(load8(x + i) - sv), x + i); i += 8 }
    while i < n { x[i] = exp1(x[i] - shift); i += 1 }
}

// MARK: - Naive reference (full score matrices, Double)

public func attentionForwardNaive(q: Tensor, k: Tensor, v: Tensor, heads: Int, causal: Bool = false, out: Tensor) {
    let s = AttentionShape(q: q, k: k, v: v, heads: heads, causal: causal)
    let (w, d) = (s.width, s.headDim)
    for b in 0..<s.batch { for h in 0..<heads { for i in 0..<s.queries {
        let probs = naiveProbabilities(s, q, k, b, h, i)
        for c in 0..<d {
            var acc = 0.0
            for j in 0..<s.keys { acc += probs[j] * Double(v.pointer[(b * s.keys + j) * w + h * d + c]) }
            out.pointer[(b * s.queries + i) * w + h * d + c] = Float(acc)
        }
    } } }
}

public func attentionBackwardNaive(q: Tensor, k: Tensor, v: Tensor, heads: Int, causal: Bool = false,
                                   dOut: Tensor, dq: Tensor?, dk: Tensor?, dv: Tensor?) {
    let s = AttentionShape(q: q, k: k, v: v, heads: heads, causal: causal)
    let (w, d) = (s.width, s.headDim)
    let scale = Double(s.scale)
    for b in 0..<s.batch { for h in 0..<heads { for i in 0..<s.queries {
        let probs = naiveProbabilities(s, q, k, b, h, i)
        let qi = (b * s.queries + i) * w + h * d
        var dp = [Double](repeating: 0, count: s.keys)
        for j in 0..<s.keys {
            let kj = (b * s.keys + j) * w + h * d
            for c in 0..<d {
                dp[j] += Double(dOut.pointer[qi + c]) * Double(v.pointer[kj + c])
                dv?.pointer[kj + c] += Float(probs[j] * Double(dOut.pointer[qi + c]))
            }
        }
        let dot = zip(probs, dp).reduce(0) { $0 + $1.0 * $1.1 }
        for j in 0..<s.keys {
            let ds = probs[j] * (dp[j] - dot) * scale
            let kj = (b * s.keys + j) * w + h * d
            for c in 0..<d {
                dq?.pointer[qi + c] += Float(ds * Double(k.pointer[kj + c]))
                dk?.pointer[kj + c] += Float(ds * Double(q.pointer[qi + c]))
            }
        }
    } } }
}

private func naiveProbabilities(_ s: AttentionShape, _ q: Tensor, _ k: Tensor, _ b: Int, _ h: Int, _ i: Int) -> [Double] {
    let (w, d) = (s.width, s.headDim)
    var scores = [Double](repeating: -.infinity, count: s.keys)
    for j in 0...s.lastKey(i) {
        var acc = 0.0
        for c in 0..<d {
            acc += Double(q.pointer[(b * s.queries + i) * w + h * d + c]) * Double(k.pointer[(b * s.keys + j) * w + h * d + c])
        }
        scores[j] = acc * Double(s.scale)
    }
    let mx = scores.max() ?? 0
    let e = scores.map { Foundation.exp($0 - mx) }
    let sum = e.reduce(0, +)
    return e.map { $0 / sum }
}
