import Foundation

/// Per-thread scratch memory for kernel temporaries (im2col columns, attention score tiles).
/// Each thread has its own grow-only `Arena`; `withScratch` rewinds it afterwards, so nested uses
/// stack and a steady-state training step allocates nothing.
public enum Scratch {
    private static let key = "cdtrainer.scratch"

    public static func with<R>(_ body: (Arena) throws -> R) rethrows -> R {
        let dict = Thread.current.threadDictionary
        let arena: Arena
        if let existing = dict[key] as? Arena {
            arena = existing
        } else {
            arena = Arena(blockBytes: 16 << 20)
            dict[key] = arena
        }
        let mark = arena.mark
        defer { arena.rewind(to: mark) }
        return try body(arena)
    }
}
