/// A dense, contiguous, row-major fp32 tensor: a shape over a range of a `TensorStorage`.
///
/// A `Tensor` is a view: copying the struct shares the data (as a PyTorch tensor does), and
/// `reshaped` / `slice` / `subscript` make new views without copying. Kernels write through
/// `pointer`; shapes are checked with preconditions because a wrong shape inside a kernel is a
/// programming error, not user input.
public struct Tensor: @unchecked Sendable {
    public let storage: TensorStorage
    public let offset: Int
    public let shape: [Int]
    public let count: Int

    public init(storage: TensorStorage, offset: Int = 0, shape: [Int]) {
        let n = shape.reduce(1, *)
        precondition(shape.allSatisfy { $0 >= 0 }, "negative dimension in \(shape)")
        precondition(offset >= 0 && offset + n <= storage.capacity,
                     "view [\(offset), \(offset + n)) outside storage of \(storage.capacity) floats")
        self.storage = storage
        self.offset = offset
        self.shape = shape
        self.count = n
    }

    /// A new zero-filled tensor.
    public init(zeros shape: [Int]) {
        self.init(storage: TensorStorage(capacity: shape.reduce(1, *)), shape: shape)
    }

    /// A new tensor holding `values` (row-major) with the given shape.
    public init(_ values: [Float], shape: [Int]) {
        precondition(values.count == shape.reduce(1, *), "\(values.count) values for shape \(shape)")
        self.init(zeros: shape)
        values.withUnsafeBufferPointer { pointer.update(from: $0.baseAddress!, count: values.count) }
    }

    public var pointer: UnsafeMutablePointer<Float> { storage.pointer + offset }
    public var rank: Int { shape.count }
    public var buffer: UnsafeMutableBufferPointer<Float> { UnsafeMutableBufferPointer(start: pointer, count: count) }

    public func dim(_ i: Int) -> Int { shape[i < 0 ? shape.count + i : i] }

    /// The same data with another shape of the same element count.
    public func reshaped(_ newShape: [Int]) -> Tensor {
        precondition(newShape.reduce(1, *) == count, "cannot reshape \(shape) to \(newShape)")
        return Tensor(storage: storage, offset: offset, shape: newShape)
    }

    /// Rows `range` of the first dimension, as a view.
    public func slice(_ range: Range<Int>) -> Tensor {
        precondition(!shape.isEmpty && range.lowerBound >= 0 && range.upperBound <= shape[0],
                     "slice \(range) outside first dimension of \(shape)")
        let inner = count / max(shape[0], 1)
        return Tensor(storage: storage, offset: offset + range.lowerBound * inner,
                      shape: [range.count] + shape.dropFirst())
    }

    /// Entry `i` of the first dimension, as a view with one dimension less.
    public subscript(i: Int) -> Tensor {
        slice(i..<(i + 1)).reshaped(Array(shape.dropFirst()))
    }

    public var array: [Float] { Array(buffer) }

    /// A new tensor with its own copy of the data.
    public func copy() -> Tensor {
        let t = Tensor(zeros: shape)
        t.pointer.update(from: pointer, count: count)
        return t
    }

    public func fill(_ value: Float) { pointer.update(repeating: value, count: count) }
    public func zero() { fill(0) }

    public func copy(from other: Tensor) {
        precondition(other.count == count, "copy of \(other.shape) into \(shape)")
        pointer.update(from: other.pointer, count: count)
    }
}

extension Tensor: CustomStringConvertible {
    public var description: String {
        let head = buffer.prefix(6).map { "\($0)" }.joined(separator: ", ")
        return "Tensor(\(shape): [\(head)\(count > 6 ? ", …" : "")])"
    }
}
