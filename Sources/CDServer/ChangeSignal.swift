import CDProtocol
import Foundation

/// A counter that writers bump and readers wait on: lets a streaming endpoint sleep until the
/// store has news instead of polling the database.
final class ChangeSignal: @unchecked Sendable {
    private let lock = NSLock()
    private var generation: UInt64 = 0
    private var waiters: [UInt64: CheckedContinuation<Void, Never>] = [:]
    /// Waiters whose wait ended (timeout, cancellation) before their continuation was registered.
    private var expired: Set<UInt64> = []
    /// Waits in progress (registered or not yet).
    private var active: Set<UInt64> = []
    private var nextWaiter: UInt64 = 0

    var current: UInt64 {
        lock.lock()
        defer { lock.unlock() }
        return generation
    }

    /// Bumps the generation and wakes every waiter.
    func signal() {
        lock.lock()
        generation &+= 1
        let woken = waiters
        waiters = [:]
        lock.unlock()
        for c in woken.values { c.resume() }
    }

    /// Returns once the generation differs from `seen`, after `timeout`, or when the task is
    /// cancelled, whichever comes first.
    func wait(changedFrom seen: UInt64, timeout: Duration) async {
        guard let id = beginWait(seen) else { return }
        let timer = Task { [weak self] in
            try? await Task.sleep(for: timeout)
            self?.end(id)
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                if !register(c, id: id, seen: seen) { c.resume() }
            }
        } onCancel: {
            self.end(id)
        }
        timer.cancel()
        finishWait(id)
    }

    /// A waiter id, or nil when the generation moved on already.
    private func beginWait(_ seen: UInt64) -> UInt64? {
        lock.lock()
        defer { lock.unlock() }
        if generation != seen { return nil }
        let id = nextWaiter
        nextWaiter &+= 1
        active.insert(id)
        return id
    }

    /// Stores the continuation; false when the wait is over already (resume it at once).
    private func register(_ c: CheckedContinuation<Void, Never>, id: UInt64, seen: UInt64) -> Bool {
        lock.lock()
        defer { lock.unlock() }
        if generation != seen || expired.remove(id) != nil { return false }
        waiters[id] = c
        return true
    }

    private func finishWait(_ id: UInt64) {
        lock.lock()
        defer { lock.unlock() }
        active.remove(id)
        expired.remove(id)
    }

    /// Ends one wait: resumes it when registered, or marks it so it returns at once when it registers.
    private func end(_ id: UInt64) {
        lock.lock()
        if let c = waiters.removeValue(forKey: id) {
            lock.unlock()
            c.resume()
        } else {
            if active.contains(id) { expired.insert(id) }
            lock.unlock()
        }
    }
}
