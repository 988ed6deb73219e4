import Foundation

/// Sinusoidal timestep features, as diffusers `get_timestep_embedding` (all in fp32):
///   half = dim/2, freq_k = exp(−ln(maxPeriod)·k / (half − freqShift)), arg = scale·t·freq_k,
///   emb = [sin(arg), cos(arg)], or [cos(arg), sin(arg)] when `flipSinToCos`; zero-padded if dim is odd.
/// Returns [timesteps.count, dim]. The input is an integer timestep, so there is no backward: the
/// learned part (`time_embedding.linear_1/2`) is a `linearForward` on this output.
public func timestepEmbedding(timesteps: [Float], dim: Int, flipSinToCos: Bool, freqShift: Float,
                              scale: Float = 1, maxPeriod: Float = 10000) -> Tensor {
    precondition(dim >= 2, "timestep embedding dim \(dim)")
    let half = dim / 2
    let out = Tensor(zeros: [timesteps.count, dim])
    let freqs = (0..<half).map { k -> Float in
        // torch: exponent = -log(max_period) * arange(half) (fp32), / (half - shift), exp (fp32).
        let exponent = -Float(Foundation.log(Double(maxPeriod))) * Float(k)
        return Foundation.exp(exponent / (Float(half) - freqShift))
    }
    for (i, t) in timesteps.enumerated() {
        let row = out.pointer + i * dim
        for k in 0..<half {
            let arg = scale * (t * freqs[k])
            let (s, c) = (Foundation.sin(arg), Foundation.cos(arg))
            row[k] = flipSinToCos ? c : s
            row[half + k] = flipSinToCos ? s : c
        }
    }
    return out
}
