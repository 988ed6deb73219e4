import CDTensor

/// Two arenas used in turn by a chain of blocks (the VAE's resnets, attention, resamplers): each
/// block's output and temporaries come from the arena that does not hold its input, and the input's
/// arena is reset once the block returns. Memory then stays near the largest blocks' working sets
/// instead of adding up every block's output (at 512 px the encoder's outputs alone are 1.4 GB; an
/// arena keeps a block of each size it was asked for, so a decoder whose planes grow holds a few),
/// and it is released with this object instead of staying in the thread's scratch arena for the
/// rest of a job. The price is fresh page faults per call, small against a VAE pass.
final class BlockArenas {
    private var holding = Arena(), free = Arena()

    /// An arena that does not hold the last block's output: for work after the chain.
    var spare: Arena { free }

    func next(_ block: (Arena) -> Tensor) -> Tensor {
        let out = block(free)
        holding.reset()
        swap(&holding, &free)
        return out
    }
}
