import CDModels
import CDProtocol
import CDTensor
import CDTestSupport
import Foundation
import Testing

/// `mpirun -n 2 cdtrainerd run` equals `mpirun -n 1` for the same global batch (correctness ladder
/// step 5), on the demo job made small (fixture model, 3 steps), for a batch that splits evenly
/// over two ranks (2) and one that does not (3: shares 2 + 1, weighted by sample count).
///
/// It runs the `cdtrainerd` built beside this test bundle (`swift build --build-tests` builds every
/// product; `$CDTRAINERD` overrides) under the `mpirun` on PATH (`$MPIRUN` overrides), as root too
/// (`--allow-run-as-root`), over shared memory only (`--mca btl self,vader`, no network needed).
@Suite(.serialized) struct MPIRunTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// Measured on this job (Debian 12, OpenMPI 4.1.4, 2 cores): see `equalityAcrossWorldSizes`.
    static let relativeTolerance: Float = 1e-4

    static var binary: URL? {
        if let path = ProcessInfo.processInfo.environment["CDTRAINERD"], !path.isEmpty { return URL(fileURLWithPath: path) }
        // The test runner (…/debug/cdtrainerPackageTests.xctest) lives in the build products folder.
        var candidates: [URL] = []
        if let exe = Bundle.main.executableURL { candidates.append(exe.deletingLastPathComponent()) }
        candidates.append(Bundle.main.bundleURL.deletingLastPathComponent())
        candidates.append(URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent())
        for folder in candidates {
            let url = folder.appendingPathComponent("cdtrainerd")
            if FileManager.default.isExecutableFile(atPath: url.path) { return url }
        }
        return nil
    }

    static var mpirun: URL? {
        if let path = ProcessInfo.processInfo.environment["MPIRUN"], !path.isEmpty { return URL(fileURLWithPath: path) }
        for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin").split(separator: ":") {
            let url = URL(fileURLWithPath: String(dir)).appendingPathComponent("mpirun")
            if FileManager.default.isExecutableFile(atPath: url.path) { return url }
        }
        return nil
    }

    struct Run {
        var out: URL
        var status: Int32
        var stdout: String
        var stderr: String
        var seconds: Double
    }

    /// `mpirun -n ranks cdtrainerd run job --out out`, killed after `timeout` seconds.
    static func mpiRun(ranks: Int, job: URL, out: URL, timeout: Double = 120) throws -> Run {
        let mpirun = try #require(Self.mpirun, "mpirun not found on PATH (apt install openmpi-bin, or set MPIRUN)")
        let binary = try #require(Self.binary, "cdtrainerd not found beside the test bundle; run `swift build --build-tests` first (or set CDTRAINERD)")
        let process = Process()
        process.executableURL = mpirun
        process.arguments = ["--allow-run-as-root", "--oversubscribe", "--bind-to", "none",
                             "--mca", "btl", "self,vader", "--mca", "btl_vader_single_copy_mechanism", "none",
                             "-n", String(ranks), binary.path, "run", job.path, "--out", out.path]
        let logs = out.deletingLastPathComponent()
        let (o, e) = (logs.appendingPathComponent("\(out.lastPathComponent).stdout"), logs.appendingPathComponent("\(out.lastPathComponent).stderr"))
        _ = FileManager.default.createFile(atPath: o.path, contents: nil)
        _ = FileManager.default.createFile(atPath: e.path, contents: nil)
        process.standardOutput = try FileHandle(forWritingTo: o)
        process.standardError = try FileHandle(forWritingTo: e)
        process.standardInput = FileHandle.nullDevice
        let done = DispatchSemaphore(value: 0)
        process.terminationHandler = { _ in done.signal() }
        let start = Date()
        try process.run()
        if done.wait(timeout: .now() + timeout) == .timedOut {
            process.terminate()
            done.wait()
        }
        return Run(out: out, status: process.terminationStatus, stdout: try String(contentsOf: o, encoding: .utf8),
                   stderr: try String(contentsOf: e, encoding: .utf8), seconds: Date().timeIntervalSince(start))
    }

    static func logLines(_ out: URL) throws -> [[String: Any]] {
        try String(contentsOf: out.appendingPathComponent("train_log.jsonl"), encoding: .utf8).split(separator: "\n").map {
            try #require(try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])
        }
    }

    @Test func equalityAcrossWorldSizes() throws {
        let work = FileManager.default.temporaryDirectory.appendingPathComponent("cd-mpi-\(UUID())")
        try FileManager.default.createDirectory(at: work, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: work) }

        // The demo job, small: the fixture model at its native size, 3 steps, 2 class images kept in
        // one folder (generated by the first run, under 2 ranks: rank 0 makes them, rank 1 reads them).
        var spec = try JobSpec.load(path: Self.root.appendingPathComponent("configs/jobs/demo.toml").path)
        let pipeline = try StableDiffusionPipeline.load(Fixtures.model.path)
        spec.model = Fixtures.model.path
        spec.resolution = pipeline.vaeScaleFactor * (pipeline.models.unet.config.sampleSize ?? 8)
        spec.steps = 3
        spec.checkpointEvery = 2
        spec.validation = nil
        spec.outputs = [.bundle]
        spec.concepts[0].numClassImages = 2
        spec.concepts[0].instanceImageSource = Self.root.appendingPathComponent("configs/jobs/demo-images/toy").path
        spec.concepts[0].classImages = work.appendingPathComponent("class").path
        try FileManager.default.createDirectory(at: work.appendingPathComponent("class"), withIntermediateDirectories: true)

        let maxRate = max(spec.learningRate, spec.embeddingLearningRate)
        var report = ["\(Self.mpirun?.path ?? "no mpirun") … \(Self.binary?.path ?? "no cdtrainerd")"]
        for batch in [2, 3] {
            spec.batchSize = batch
            let job = work.appendingPathComponent("job-b\(batch).toml")
            try spec.toTOML().write(to: job, atomically: true, encoding: .utf8)
            let two = try Self.mpiRun(ranks: 2, job: job, out: work.appendingPathComponent("n2-b\(batch)"))
            let one = try Self.mpiRun(ranks: 1, job: job, out: work.appendingPathComponent("n1-b\(batch)"))
            for run in [two, one] {
                try #require(run.status == 0, "mpirun failed (\(run.status)) for \(run.out.lastPathComponent):\n\(run.stderr)")
            }
            report.append(String(format: "batch %d: -n 2 %.1f s, -n 1 %.1f s", batch, two.seconds, one.seconds))

            // Rank 0 alone prints progress (with the allreduce time) and the outputs.
            let progress = two.stderr.split(separator: "\n").filter { $0.hasPrefix("step ") }
            #expect(progress.count == spec.steps, "one progress line per step:\n\(two.stderr)")
            #expect(progress.allSatisfy { $0.contains("allreduce ") && $0.contains(" ms") }, "\(progress)")
            #expect(two.stdout == one.stdout.replacingOccurrences(of: "/n1-b", with: "/n2-b"), "outputs listed once:\n\(two.stdout)")

            // The log: same losses and gradient norms, global sample counts, allreduce time per step.
            let (logTwo, logOne) = (try Self.logLines(two.out), try Self.logLines(one.out))
            #expect(logTwo.count == spec.steps && logOne.count == spec.steps)
            for (a, b) in zip(logTwo, logOne) {
                let step = a["step"] as? Int ?? -1
                #expect(a["samples_seen"] as? Int == step * batch && b["samples_seen"] as? Int == step * batch)
                #expect(a["ranks"] as? Int == 2 && b["ranks"] as? Int == 1)
                let seconds = try #require(a["allreduce_seconds"] as? Double)
                #expect(seconds > 0 && seconds < 10)
                #expect(b["allreduce_seconds"] as? Double == 0)
                for key in ["loss", "instance_loss", "prior_loss", "grad_norm"] {
                    let (x, y) = (try #require(a[key] as? Double), try #require(b[key] as? Double))
                    #expect(abs(x - y) <= 1e-5 * max(abs(y), 1e-3), "step \(step) \(key): \(x) vs \(y)")
                }
                report.append(String(format: "  step %d: allreduce %.2f ms, loss %.7f vs %.7f, |g| %.7f vs %.7f", step, seconds * 1000,
                                     a["loss"] as? Double ?? .nan, b["loss"] as? Double ?? .nan,
                                     a["grad_norm"] as? Double ?? .nan, b["grad_norm"] as? Double ?? .nan))
            }

            // Every tensor of every checkpoint (parameters and both AdamW moments; the moments would
            // show a gradient scaled wrongly, which AdamW's parameter update largely hides).
            for step in ["step-000002", "step-000003"] {
                let a = try SafetensorsFile(path: two.out.appendingPathComponent("checkpoints/\(step)/state.safetensors").path)
                let b = try SafetensorsFile(path: one.out.appendingPathComponent("checkpoints/\(step)/state.safetensors").path)
                #expect(a.names == b.names && !a.names.isEmpty)
                #expect(a.metadata["step"] == b.metadata["step"] && a.metadata["samples_seen"] == b.metadata["samples_seen"])
                var worst: (name: String, relative: Float) = ("", 0)
                for name in a.names {
                    let (x, y) = (try a.tensor(name).array, try b.tensor(name).array)
                    try #require(x.count == y.count)
                    // Max difference relative to the tensor's largest magnitude: per-element relative
                    // error is meaningless for elements that are ~0 (Adam moments of near-zero gradients).
                    let scale = max(y.map(abs).max() ?? 0, Float.leastNormalMagnitude)
                    let diffs = zip(x, y).map { abs($0 - $1) }
                    if name.hasPrefix("param.") {
                        // AdamW's first steps move each element by about ±lr whatever its gradient's
                        // size, so an element whose gradient is within rounding of zero may step the
                        // other way: a few such elements may differ, by at most 2·lr per step.
                        let outliers = diffs.filter { $0 > Self.relativeTolerance * scale }
                        #expect(outliers.count <= max(1, diffs.count / 1000), "\(step) \(name): \(outliers.count) elements differ by more than \(Self.relativeTolerance) of \(scale)")
                        #expect(outliers.allSatisfy { $0 <= Float(2 * maxRate * Double(spec.steps)) }, "\(step) \(name): \(outliers.max() ?? 0)")
                        let inliers = diffs.filter { $0 <= Self.relativeTolerance * scale }
                        let relative = (inliers.max() ?? 0) / scale
                        if relative > worst.relative { worst = (name, relative) }
                    } else {
                        let relative = (diffs.max() ?? 0) / scale
                        if relative > worst.relative { worst = (name, relative) }
                        #expect(relative <= Self.relativeTolerance, "\(step) \(name): max |Δ| \(diffs.max() ?? 0) of max |x| \(scale)")
                    }
                }
                report.append("  \(step): worst tensor \(worst.name), max |Δ| / max |x| = \(worst.relative)")
            }
        }
        print(report.joined(separator: "\n"))
    }
}
