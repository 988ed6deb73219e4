import Synchronization
import Testing
@testable import CDTensor

@Suite struct CoreTests {
    @Test func viewsShareStorage() {
        let t = Tensor((0..<24).map(Float.init), shape: [2, 3, 4])
        let row = t[1]
        #expect(row.shape == [3, 4] && row.pointer[0] == 12)
        row.pointer[0] = -1
        #expect(t.pointer[12] == -1)
        let flat = t.reshaped([6, 4]).slice(2..<4)
        #expect(flat.shape == [2, 4] && flat.pointer[0] == 8)
        let c = t.copy(); c.pointer[0] = 99
        #expect(t.pointer[0] == 0)
    }

    @Test func arenaAlignsReusesAndRewinds() {
        let arena = Arena(blockBytes: 4096)
        let a = arena.tensor([3])
        let b = arena.tensor([5, 7])
        #expect(Int(bitPattern: a.pointer) % 64 == 0 && Int(bitPattern: b.pointer) % 64 == 0)
        #expect(b.array.allSatisfy { $0 == 0 })
        let mark = arena.mark
        let big = arena.tensor([10_000])  // larger than a block: gets its own
        big.fill(1)
        arena.rewind(to: mark)
        let again = arena.tensor([10_000])
        #expect(again.pointer == big.pointer && again.pointer[0] == 0)
        arena.reset()
        #expect(arena.tensor([3]).pointer == a.pointer)
        #expect(arena.peakFloats >= 10_000)
    }

    @Test func threadPoolRunsEveryTaskOnceAndNests() {
        let pool = ThreadPool(threadCount: 3)
        let hits = Mutex([Int](repeating: 0, count: 1000))
        let workers = Mutex(Set<Int>())
        pool.parallelFor(1000) { task, worker in
            hits.withLock { $0[task] += 1 }
            workers.withLock { _ = $0.insert(worker) }
            // A nested call runs inline instead of deadlocking.
            var inner = 0
            pool.parallelFor(3) { _, _ in inner += 1 }
            precondition(inner == 3)
        }
        #expect(hits.withLock { $0.allSatisfy { $0 == 1 } })
        #expect(workers.withLock { $0.isSubset(of: [0, 1, 2]) })
        var total = 0
        pool.parallelRanges(10_007, grain: 100) { r in workers.withLock { _ in total += r.count } }
        #expect(total == 10_007)
    }

    @Test func droppedPoolIsReleased() {
        weak var weakPool: ThreadPool?
        do {
            let pool = ThreadPool(threadCount: 3)
            weakPool = pool
            var sum = 0
            let lock = Mutex(0)
            pool.parallelFor(10) { t, _ in lock.withLock { $0 += t } }
            sum = lock.withLock { $0 }
            #expect(sum == 45)
        }
        #expect(weakPool == nil, "a finished parallelFor kept the pool alive")
    }

    @Test func gemmMatchesNaiveWithLeadingDimensions() {
        var rng = SeededRandom(seed: 61)
        // A 3x4 block inside a 3x6 buffer, B 4x5 inside 4x7, C 3x5 inside 3x9 with beta.
        let a = rng.tensor([3, 6]), b = rng.tensor([4, 7]), c = rng.tensor([3, 9]), c2 = c.copy()
        BLAS.gemm(m: 3, n: 5, k: 4, alpha: 1.5, a: a.pointer, lda: 6, b: b.pointer, ldb: 7, beta: 0.5, c: c.pointer, ldc: 9)
        BLAS.gemmNaive(m: 3, n: 5, k: 4, alpha: 1.5, a: a.pointer, lda: 6, b: b.pointer, ldb: 7, beta: 0.5, c: c2.pointer, ldc: 9)
        expectClose(c, c2, "gemm with leading dimensions")
    }
}
