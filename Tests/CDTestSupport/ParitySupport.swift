import CDTensor
import Testing

/// Expects max |actual − expected| ≤ tolerance · max |expected| (the parity measure of the model
/// issues); the message prints both so a failure says how far off it is.
public func expectParity(_ actual: Tensor, _ expected: Tensor, _ what: String, tolerance: Float = 1e-4,
                  sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(actual.count == expected.count, "\(what): \(actual.shape) vs expected \(expected.shape)", sourceLocation: sourceLocation)
    guard actual.count == expected.count else { return }
    var maxErr: Float = 0, maxRef: Float = 0, worst = 0
    for i in 0..<actual.count {
        let e = abs(actual.pointer[i] - expected.pointer[i])
        if !(e <= maxErr) { maxErr = e.isNaN ? .infinity : e; worst = i }
        maxRef = max(maxRef, abs(expected.pointer[i]))
    }
    let relative = maxErr / max(maxRef, 1e-30)
    #expect(relative <= tolerance,
            "\(what): max |error| \(maxErr) = \(relative) × max |expected| \(maxRef) (tolerance \(tolerance)); element \(worst): \(actual.pointer[worst]) vs \(expected.pointer[worst])",
            sourceLocation: sourceLocation)
}
