import CDTensor

/// Classifier-free guidance over a UNet output computed on [uncond; cond] (diffusers order):
/// ε̂ = ε_u + s·(ε_c − ε_u), for B samples stacked as [2B, …].
public func classifierFreeGuidance(_ output: Tensor, scale: Float) -> Tensor {
    let b = output.shape[0] / 2
    precondition(b * 2 == output.shape[0], "guidance needs [uncond; cond] stacked on the batch")
    let u = output.slice(0..<b), c = output.slice(b..<(2 * b))
    let out = Tensor(zeros: [b] + output.shape.dropFirst())
    for i in 0..<out.count { out.pointer[i] = u.pointer[i] + scale * (c.pointer[i] - u.pointer[i]) }
    return out
}

/// The denoising loop of StableDiffusionPipeline from given initial latents (N(0, I), before the
/// sampler's `initNoiseSigma`): returns the final latents. `embeddings` is [uncond; cond]
/// stacked ([2B, S, D]) when `guidance` > 1, else [B, S, D]. `observe(step, unetInput,
/// unetOutput, guided, latents)` sees each step.
public func denoise(unet: UNet2DConditionModel, sampler: inout Sampler, initialLatents: Tensor, embeddings: Tensor,
                    guidance: Float, noise: () -> Tensor,
                    observe: ((Int, Tensor, Tensor, Tensor, Tensor) -> Void)? = nil) -> Tensor {
    let guided = guidance > 1
    var latents = initialLatents.copy()
    scaleForward(latents, by: sampler.initNoiseSigma, out: latents)
    for (i, t) in sampler.timesteps.enumerated() {
        let scaled = sampler.scaleModelInput(latents, step: i)
        let input: Tensor
        if guided {
            input = Tensor(zeros: [2 * scaled.shape[0]] + scaled.shape.dropFirst())
            input.slice(0..<scaled.shape[0]).copy(from: scaled)
            input.slice(scaled.shape[0]..<(2 * scaled.shape[0])).copy(from: scaled)
        } else {
            input = scaled
        }
        let output = unet.forward(sample: input, timesteps: Array(repeating: t, count: input.shape[0]), context: embeddings)
        let prediction = guided ? classifierFreeGuidance(output, scale: guidance) : output
        latents = sampler.step(modelOutput: prediction, step: i, sample: latents, noise: noise)
        observe?(i, input, output, prediction, latents)
    }
    return latents
}
