import CDTestSupport
import CDTensor
import Foundation
import Testing
@testable import CDModels

@Suite struct SamplerTests {
    static func schedulerConfig() throws -> SchedulerConfig {
        try readConfig(SchedulerConfig.self, from: Fixtures.model.appendingPathComponent("scheduler/scheduler_config.json"))
    }

    @Test func noiseScheduleMatchesDiffusers() throws {
        let ref = try SafetensorsFile(path: Fixtures.caseFile("schedulers.safetensors").path)
        let schedule = NoiseSchedule(try Self.schedulerConfig())
        expectParity(Tensor(schedule.betas, shape: [schedule.betas.count]), try ref.tensor("betas"), "betas", tolerance: 1e-6)
        expectParity(Tensor(schedule.alphasCumprod, shape: [schedule.alphasCumprod.count]), try ref.tensor("alphas_cumprod"), "alphas_cumprod", tolerance: 1e-6)
        let noisy = schedule.addNoise(try ref.tensor("add_noise.original"), noise: try ref.tensor("add_noise.noise"),
                                      timesteps: try ref.integers("add_noise.timesteps"))
        expectParity(noisy, try ref.tensor("add_noise.out"), "add_noise", tolerance: 1e-6)
    }

    @Test func ddimStepsMatchDiffusers() throws {
        let ref = try SafetensorsFile(path: Fixtures.caseFile("schedulers.safetensors").path)
        let expected = try ref.integers("ddim.timesteps")
        var sampler = makeSampler(.ddim, config: try Self.schedulerConfig(), steps: expected.count)
        #expect(sampler.timesteps.map { Int($0) } == expected)
        for i in 0..<expected.count {
            let out = sampler.step(modelOutput: try ref.tensor("step.model_output"), step: i, sample: try ref.tensor("step.sample"), noise: { fatalError("eta 0") })
            expectParity(out, try ref.tensor("ddim.step\(i).prev_sample"), "ddim step \(i)", tolerance: 1e-5)
        }
    }

    @Test func eulerStepsMatchDiffusers() throws {
        let ref = try SafetensorsFile(path: Fixtures.caseFile("schedulers.safetensors").path)
        let expected = try ref.tensor("euler.timesteps")
        var sampler = makeSampler(.euler, config: try Self.schedulerConfig(), steps: expected.count)
        #expect(sampler.timesteps == expected.array)
        #expect(abs(sampler.initNoiseSigma - (try ref.tensor("euler.init_noise_sigma")).pointer[0]) < 1e-5)
        // The fixture feeds the same (sample, model output) pair to each step in turn.
        let sample = try ref.tensor("step.sample")
        for i in 0..<expected.count {
            expectParity(sampler.scaleModelInput(sample, step: i), try ref.tensor("euler.step\(i).scaled_model_input"), "euler scale \(i)", tolerance: 1e-5)
            let out = sampler.step(modelOutput: try ref.tensor("step.model_output"), step: i, sample: sample, noise: { fatalError("not ancestral") })
            expectParity(out, try ref.tensor("euler.step\(i).prev_sample"), "euler step \(i)", tolerance: 1e-5)
        }
    }

    @Test(arguments: ["ddim_sample", "euler_sample"])
    func guidedSamplingMatchesThePipeline(_ name: String) throws {
        let ref = try SafetensorsFile(path: Fixtures.caseFile("\(name).safetensors").path)
        let info = try JSONSerialization.jsonObject(with: Data(contentsOf: Fixtures.caseFile("\(name).json"))) as! [String: Any]
        let unet = try UNet2DConditionModel.load(directory: Fixtures.model.appendingPathComponent("unet"))
        let vae = try AutoencoderKL.load(directory: Fixtures.model.appendingPathComponent("vae"))
        let steps = info["num_inference_steps"] as! Int, guidance = Float(info["guidance_scale"] as! Double)
        var sampler = makeSampler(name == "ddim_sample" ? .ddim : .euler, config: try Self.schedulerConfig(), steps: steps)
        let expectedTimesteps: [Float] = try (try? ref.integers("timesteps").map(Float.init)) ?? ref.tensor("timesteps").array
        #expect(sampler.timesteps == expectedTimesteps)
        let latents = denoise(unet: unet, sampler: &sampler, initialLatents: try ref.tensor("latents_initial"),
                              embeddings: try ref.tensor("prompt_embeds"), guidance: guidance, noise: { fatalError("deterministic") }) { i, input, output, guided, latents in
            expectParity(input, try! ref.tensor("step\(i).unet_input"), "\(name) step \(i) UNet input")
            expectParity(output, try! ref.tensor("step\(i).unet_output"), "\(name) step \(i) UNet output")
            expectParity(guided, try! ref.tensor("step\(i).noise_pred"), "\(name) step \(i) guided prediction")
            expectParity(latents, try! ref.tensor("step\(i).latents"), "\(name) step \(i) latents")
        }
        let z = Tensor(zeros: latents.shape)
        scaleForward(latents, by: 1 / vae.config.scalingFactor, out: z)
        expectParity(z, try ref.tensor("vae_decode_input"), "\(name) decode input")
        expectParity(vae.decode(z), try ref.tensor("vae_decode_output"), "\(name) decoded image")
    }
}

@Suite struct SamplerScheduleTests {
    let config = SchedulerConfig.sd

    func timesteps(_ kind: SamplerKind, _ steps: Int, spacing: String) -> [Int] {
        var c = config
        c.timestepSpacing = spacing
        return makeSampler(kind, config: c, steps: steps).timesteps.map { Int($0.rounded()) }
    }

    @Test func spacingsMatchDiffusersTables() {
        // sd-architecture-spec §9.3 (diffusers 0.42.1), T = 1000, steps_offset 1.
        #expect(timesteps(.ddim, 50, spacing: "leading") == Array(stride(from: 981, through: 1, by: -20)))
        #expect(timesteps(.ddim, 20, spacing: "leading") == Array(stride(from: 951, through: 1, by: -50)))
        #expect(timesteps(.ddim, 20, spacing: "trailing") == Array(stride(from: 999, through: 49, by: -50)))
        let linspace = timesteps(.ddim, 20, spacing: "linspace")
        #expect(linspace.prefix(3) == [999, 946, 894] && linspace.suffix(2) == [53, 0])
        #expect(timesteps(.ddim, 50, spacing: "trailing").prefix(3) == [999, 979, 959])
        let dpm = timesteps(.dpmSolverPP2M, 20, spacing: "linspace")
        #expect(dpm.count == 20 && dpm.prefix(2) == [999, 949] && dpm.suffix(2) == [100, 50])
        // numpy's own arithmetic decides .5 cases: linspace is i·((T−1)/(N)), arange start + i·delta.
        #expect(timesteps(.dpmSolverPP2M, 30, spacing: "linspace").contains(499) && !timesteps(.dpmSolverPP2M, 30, spacing: "linspace").contains(500))
        let trailing48 = timesteps(.ddim, 48, spacing: "trailing")
        #expect([936, 686, 436, 186].allSatisfy(trailing48.contains) && !trailing48.contains(937))
        let dpmLeading = timesteps(.dpmSolverPP2M, 20, spacing: "leading")
        #expect(dpmLeading.prefix(2) == [941, 894] && dpmLeading.suffix(2) == [95, 48])
    }

    @Test func stepCountsBeyondTheScheduleAreRefused() {
        // leading spacing with steps_offset 1 would need timestep 1000; linspace DPM repeats timesteps.
        #expect(samplerProblem(.ddim, config: config, steps: 1000)?.contains("use fewer steps") == true)
        var linspace = config
        linspace.timestepSpacing = "linspace"
        #expect(samplerProblem(.dpmSolverPP2M, config: linspace, steps: 1000)?.contains("use fewer steps") == true)
        #expect(samplerProblem(.ddim, config: config, steps: 1001)?.contains("steps must be") == true)
        #expect(samplerProblem(.euler, config: config, steps: 50) == nil)
    }

    @Test func eulerInitialNoiseFollowsSpacing() {
        var c = config
        c.timestepSpacing = "leading"
        let leading = makeSampler(.euler, config: c, steps: 20)
        #expect(abs(leading.initNoiseSigma - 11.0736) < 1e-3, "leading init sigma \(leading.initNoiseSigma)")
        c.timestepSpacing = "linspace"
        #expect(abs(makeSampler(.euler, config: c, steps: 20).initNoiseSigma - 14.6146) < 1e-3)
        c.timestepSpacing = nil  // Euler's class default is linspace
        #expect(abs(makeSampler(.eulerAncestral, config: c, steps: 20).initNoiseSigma - 14.6146) < 1e-3)
    }

    /// With a model that knows the clean sample x0 (it returns the exact noise of its input),
    /// every sampler must land on x0: the update rules are exact for that case.
    @Test(arguments: SamplerKind.allCases)
    func oracleModelRecoversTheCleanSample(_ kind: SamplerKind) {
        var c = config
        c.setAlphaToOne = true  // DDIM's last step then reaches ᾱ = 1 exactly
        c.timestepSpacing = "trailing"
        var sampler = makeSampler(kind, config: c, steps: 12)
        let schedule = NoiseSchedule(c)
        var rng = SplitMix64(seed: 5)
        let x0 = rng.uniformTensor([1, 4, 3, 3]), start = rng.normalTensor([1, 4, 3, 3])
        var x = Tensor(zeros: start.shape)
        scaleForward(start, by: sampler.initNoiseSigma, out: x)
        for i in 0..<sampler.timesteps.count {
            let eps = Tensor(zeros: x.shape)
            switch sampler {
            case let s as EulerSampler:  // x = x0 + σ·ε
                for j in 0..<x.count { eps.pointer[j] = (x.pointer[j] - x0.pointer[j]) / s.sigmas[i] }
            case let s as DPMSolverPP2MSampler:  // x = α·x0 + σα·ε, α = 1/√(σ²+1)
                let a = 1 / (s.sigmas[i] * s.sigmas[i] + 1).squareRoot()
                for j in 0..<x.count { eps.pointer[j] = (x.pointer[j] - a * x0.pointer[j]) / (s.sigmas[i] * a) }
            default:  // DDIM: x = √ᾱ·x0 + √(1−ᾱ)·ε
                let acp = schedule.alphasCumprod[Int(sampler.timesteps[i])]
                for j in 0..<x.count { eps.pointer[j] = (x.pointer[j] - acp.squareRoot() * x0.pointer[j]) / (1 - acp).squareRoot() }
            }
            x = sampler.step(modelOutput: eps, step: i, sample: x, noise: { rng.normalTensor(x0.shape) })
        }
        var worst: Float = 0
        for j in 0..<x.count { worst = max(worst, abs(x.pointer[j] - x0.pointer[j])) }
        #expect(worst < 2e-3, "\(kind) ended \(worst) away from x0")
    }
}
