import CDDistributed
import Testing

/// The split of a global batch over ranks: contiguous, covering, sizes within one of each other.
@Suite struct BatchShareTests {
    @Test(arguments: [1, 2, 3, 4, 5, 7, 8])
    func sharesCoverTheBatchOnce(size: Int) {
        for total in 0...17 {
            let shares = (0..<size).map { BatchShare.range(rank: $0, size: size, total: total) }
            #expect(shares.first?.lowerBound == 0 && shares.last?.upperBound == total, "\(total) over \(size)")
            for r in 1..<size { #expect(shares[r].lowerBound == shares[r - 1].upperBound, "contiguous: \(total) over \(size)") }
            let counts = shares.map(\.count)
            #expect(counts.max()! - counts.min()! <= 1, "balanced: \(counts)")
            #expect(counts == counts.sorted(by: >), "the larger shares come first: \(counts)")
            #expect(counts.reduce(0, +) == total)
        }
    }

    @Test func examples() {
        #expect((0..<2).map { BatchShare.range(rank: $0, size: 2, total: 2) } == [0..<1, 1..<2])
        #expect((0..<2).map { BatchShare.range(rank: $0, size: 2, total: 3) } == [0..<2, 2..<3])
        #expect((0..<3).map { BatchShare.range(rank: $0, size: 3, total: 7) } == [0..<3, 3..<5, 5..<7])
        // More ranks than samples: the last ranks get none (and contribute zeros to the allreduce).
        #expect((0..<4).map { BatchShare.range(rank: $0, size: 4, total: 2) } == [0..<1, 1..<2, 2..<2, 2..<2])
        #expect(BatchShare.range(rank: 0, size: 1, total: 5) == 0..<5)
    }

    /// Weighting each rank's mean by its share of the batch gives the global mean, uneven shares included.
    @Test func weightedSharesSumToTheGlobalMean() {
        let values: [Double] = [0.5, -1.25, 3, 7.75, 0.125]
        let mean = values.reduce(0, +) / Double(values.count)
        for size in 1...7 {
            var sum = 0.0
            for r in 0..<size {
                let share = BatchShare.range(rank: r, size: size, total: values.count)
                guard !share.isEmpty else { continue }
                let local = share.map { values[$0] }.reduce(0, +) / Double(share.count)
                sum += local * Double(share.count) / Double(values.count)
            }
            #expect(abs(sum - mean) < 1e-12, "\(size) ranks")
        }
    }

    @Test func singleProcessCollectivesLeaveBuffersAlone() throws {
        let world = SingleProcessCommunicator()
        #expect(world.rank == 0 && world.size == 1 && world.isLead)
        var values: [Float] = [1, 2, 3]
        try values.withUnsafeMutableBufferPointer { try world.allreduceSum($0.baseAddress!, count: 3) }
        try values.withUnsafeMutableBufferPointer { try world.broadcast($0.baseAddress!, count: 3, root: 0) }
        var bytes: [UInt8] = [9, 8]
        try world.broadcast(bytes: &bytes, root: 0)
        try world.barrier()
        #expect(values == [1, 2, 3] && bytes == [9, 8])
    }
}
