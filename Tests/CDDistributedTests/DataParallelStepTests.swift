import CDDistributed
import CDModels
import CDProtocol
import CDTensor
import CDTestSupport
@testable import CDTraining
import Foundation
import Testing

/// A two-rank world played one rank at a time in this process: broadcasts from the root are
/// recorded and replayed to the other rank; an allreduce adds a scripted addend (the other rank's
/// recorded contribution) or, with none left, records this rank's buffer and stops the step.
final class ScriptedCommunicator: Communicator {
    struct Stop: Error {}
    let rank: Int, size: Int
    var sent: [[UInt8]] = [], incoming: [[UInt8]]
    var addends: [[Float]], contributions: [[Float]] = []

    init(rank: Int, size: Int = 2, incoming: [[UInt8]] = [], addends: [[Float]] = []) {
        self.rank = rank
        self.size = size
        self.incoming = incoming
        self.addends = addends
    }

    func allreduceSum(_ buffer: UnsafeMutablePointer<Float>, count: Int) throws {
        contributions.append(Array(UnsafeBufferPointer(start: buffer, count: count)))
        guard !addends.isEmpty else { throw Stop() }
        let other = addends.removeFirst()
        precondition(other.count == count, "addend of \(other.count) for \(count)")
        for i in 0..<count { buffer[i] += other[i] }
    }

    func broadcast(_ buffer: UnsafeMutablePointer<Float>, count: Int, root: Int) throws {
        let raw = UnsafeMutableRawBufferPointer(start: buffer, count: count * 4)
        if rank == root { sent.append(Array(raw)) } else {
            let data = incoming.removeFirst()
            precondition(data.count == raw.count)
            raw.copyBytes(from: data)
        }
    }

    func broadcast(bytes: inout [UInt8], root: Int) throws {
        if rank == root { sent.append(bytes) } else { bytes = incoming.removeFirst() }
    }

    func idleBroadcast(bytes: inout [UInt8], root: Int, pollInterval: Double) throws {
        try broadcast(bytes: &bytes, root: root)
    }

    func barrier() throws {}
}

/// The gradient exchange, state broadcast and divergence check of `DataParallelStep`, in process:
/// rank 1 runs its share of a global batch of 3 and records its allreduce buffer; rank 0 runs its
/// share, adds rank 1's buffer (what MPI's sum does) and updates; that equals one single-process
/// step on all 3 samples up to summation order.
@Suite(.serialized) struct DataParallelStepTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    func setup() throws -> (StableDiffusionPipeline, JobRunner, TrainingSamples) {
        var spec = try JobSpec.load(path: Self.root.appendingPathComponent("configs/jobs/demo.toml").path)
        let pipeline = try StableDiffusionPipeline.load(Fixtures.model.path)
        spec.model = Fixtures.model.path
        spec.resolution = pipeline.vaeScaleFactor * (pipeline.models.unet.config.sampleSize ?? 8)
        spec.batchSize = 3
        // The demo images double as class images: nothing is generated or written.
        let images = Self.root.appendingPathComponent("configs/jobs/demo-images/toy").path
        spec.concepts[0].classImages = images
        spec.concepts[0].numClassImages = 2
        let runner = JobRunner(spec: spec, outputDirectory: FileManager.default.temporaryDirectory.appendingPathComponent("unused-\(UUID())")) { _ in }
        let reference = try runner.makeTrainer(pipeline)
        return (pipeline, runner, try runner.makeSamples(pipeline, trainer: reference, instances: try runner.loadInstances(),
                                                         classes: try runner.distributeClassImages(pipeline)))
    }

    func state(_ t: CustomDiffusionTrainer) -> [[Float]] { t.stateTensors.map(\.array) }

    @Test func unevenSharesEqualTheSingleProcessStep() throws {
        let (pipeline, runner, samples) = try setup()
        let reference = try runner.makeTrainer(pipeline), rank0 = try runner.makeTrainer(pipeline), rank1 = try runner.makeTrainer(pipeline)
        let single = try reference.step([samples.batch([0, 1, 2], withPrior: true)])

        let world1 = ScriptedCommunicator(rank: 1)
        #expect(throws: ScriptedCommunicator.Stop.self) {
            try DataParallelStep(trainer: rank1, communicator: world1).step([samples.batch([2], withPrior: true)], globalBatch: 3)
        }
        let step = DataParallelStep(trainer: rank0, communicator: ScriptedCommunicator(rank: 0, addends: world1.contributions))
        #expect(step.elementCount == world1.contributions[0].count)
        let report = try step.step([samples.batch([0, 1], withPrior: true)], globalBatch: 3)
        #expect(report.localSamples == 2 && report.step.step == 1 && rank0.samplesSeen == 3 && reference.samplesSeen == 3)
        #expect(abs(report.step.losses.loss - single.losses.loss) <= 1e-5 * single.losses.loss)
        #expect(abs(report.step.update.gradientNorm - single.update.gradientNorm) <= 1e-5 * single.update.gradientNorm)
        #expect(abs((report.step.losses.prior ?? .nan) - (single.losses.prior ?? 0)) <= 1e-5 * (single.losses.prior ?? 0))
        for (a, b) in zip(state(rank0), state(reference)) {
            let scale = b.map(abs).max()!, diff = zip(a, b).map { abs($0 - $1) }.max()!
            #expect(diff <= 1e-4 * scale, "max |Δ| \(diff) of \(scale)")
        }

        // A rank with no samples contributes zeros and still ends with the same update.
        let empty = try runner.makeTrainer(pipeline)
        let idle = ScriptedCommunicator(rank: 2, size: 3)
        #expect(throws: ScriptedCommunicator.Stop.self) { try DataParallelStep(trainer: empty, communicator: idle).step([], globalBatch: 3) }
        #expect(idle.contributions[0].allSatisfy { $0 == 0 })
    }

    @Test func stateBroadcastAndDivergenceCheck() throws {
        let (pipeline, runner, samples) = try setup()
        let lead = try runner.makeTrainer(pipeline), other = try runner.makeTrainer(pipeline)
        _ = try lead.step([samples.batch([0, 1, 2], withPrior: true)])
        #expect(lead.stateHash != other.stateHash)

        // Rank 0's parameters, moments, step and sample position replace rank 1's.
        let sender = ScriptedCommunicator(rank: 0)
        try lead.broadcastState(root: 0, over: sender)
        try other.broadcastState(root: 0, over: ScriptedCommunicator(rank: 1, incoming: sender.sent))
        #expect(state(other) == state(lead) && other.step == 1 && other.samplesSeen == lead.samplesSeen)
        #expect(other.stateHash == lead.stateHash)

        // Agreeing ranks: nothing moves.
        let agree0 = ScriptedCommunicator(rank: 0, addends: [[0]])
        #expect(try DataParallelStep(trainer: lead, communicator: agree0).verifyIdentical() == 0)
        #expect(try DataParallelStep(trainer: other, communicator: ScriptedCommunicator(rank: 1, incoming: agree0.sent, addends: [[0]])).verifyIdentical() == 0)

        // One element off on rank 1: both ranks see it and rank 1 gets rank 0's state back.
        let key = other.trainableKeys[0]
        other.parameter(key)!.pointer[0] += 1e-6
        let lead0 = ScriptedCommunicator(rank: 0, addends: [[1]])
        #expect(try DataParallelStep(trainer: lead, communicator: lead0).verifyIdentical() == 1)
        let late1 = ScriptedCommunicator(rank: 1, incoming: lead0.sent, addends: [[0]])
        #expect(try DataParallelStep(trainer: other, communicator: late1).verifyIdentical() == 1)
        #expect(late1.contributions == [[1]] && state(other) == state(lead))
    }
}
