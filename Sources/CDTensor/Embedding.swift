/// Token embedding lookup: out[i, :] = table[ids[i], :], table [V, D].
///
/// Custom Diffusion trains only a few rows (the modifier tokens). Those rows live in their own
/// small tensor `rows` [R, D] for ids `rowIds`; the forward reads them instead of the table, and
/// the backward accumulates only into them, so the frozen [V, D] table never gets a gradient.
/// Ids of added tokens may lie past the table (49408… for a 49408-row CLIP table).
public struct EmbeddingOverride {
    public let rowIds: [Int]
    public let rows: Tensor
    public init(rowIds: [Int], rows: Tensor) {
        precondition(rows.rank == 2 && rows.shape[0] == rowIds.count, "override rows \(rows.shape) for \(rowIds.count) ids")
        self.rowIds = rowIds
        self.rows = rows
    }
    func index(of id: Int) -> Int? { rowIds.firstIndex(of: id) }
}

public func embeddingForward(ids: [Int], table: Tensor, override: EmbeddingOverride? = nil, out: Tensor) {
    precondition(table.rank == 2, "embedding table must be [V, D], got \(table.shape)")
    let (v, d) = (table.shape[0], table.shape[1])
    precondition(out.count == ids.count * d, "embedding output \(out.shape) for \(ids.count) ids of width \(d)")
    if let override { precondition(override.rows.shape[1] == d, "override width \(override.rows.shape) vs table \(table.shape)") }
    for (i, id) in ids.enumerated() {
        let src: UnsafeMutablePointer<Float>
        if let override, let r = override.index(of: id) {
            src = override.rows.pointer + r * d
        } else {
            precondition(id >= 0 && id < v, "token id \(id) outside vocabulary of \(v) and not in the override rows")
            src = table.pointer + id * d
        }
        (out.pointer + i * d).update(from: src, count: d)
    }
}

/// forward: out[i] = row(ids[i]);  dRows[r] += Σ_{i: ids[i] = rowIds[r]} dOut[i]. Other ids get nothing.
public func embeddingBackward(ids: [Int], dOut: Tensor, override: EmbeddingOverride, dRows: Tensor) {
    let d = override.rows.shape[1]
    precondition(dRows.shape == override.rows.shape && dOut.count == ids.count * d, "embedding gradient shapes")
    for (i, id) in ids.enumerated() {
        if let r = override.index(of: id) { addInPlace(dRows.pointer + r * d, dOut.pointer + i * d, d) }
    }
}

public func embeddingBackwardNaive(ids: [Int], dOut: Tensor, override: EmbeddingOverride, dRows: Tensor) {
    let d = override.rows.shape[1]
    for (r, rowId) in override.rowIds.enumerated() {
        for c in 0..<d {
            var s = 0.0
            for (i, id) in ids.enumerated() where id == rowId { s += Double(dOut.pointer[i * d + c]) }
            dRows.pointer[r * d + c] += Float(s)
        }
    }
}
