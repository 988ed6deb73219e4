import CDProtocol
import Foundation

/// Follows a job's events with the long poll until the job is finished: every event is handed
/// over once, in order, including those written in the moment the job finished.
public struct JobFollower: Sendable {
    public let client: APIClient
    /// Seconds the daemon holds each poll open when there is nothing new.
    public let wait: Int

    public init(client: APIClient, wait: Int = 30) {
        self.client = client
        self.wait = wait
    }

    /// Hands every event with `seq > after` to `onEvent` and returns the job once it is finished
    /// (succeeded, failed or cancelled) and its last event has been handed over.
    public func follow(_ id: String, after: Int = 0, onEvent: (JobEvent) throws -> Void) async throws -> Job {
        var after = after
        while true {
            let events = try await client.events(id, after: after, wait: wait)
            for e in events {
                try onEvent(e)
                after = e.seq
            }
            let finishing = events.contains { $0.kind == .state && JobState(rawValue: $0.payload["to"]?.stringValue ?? "")?.isTerminal == true }
            // An empty poll is a timeout: ask the job itself (it may have finished before `after`).
            guard events.isEmpty || finishing else { continue }
            let job = try await client.job(id)
            guard job.state.isTerminal else { continue }
            // The job is over, so no event comes after these.
            while true {
                let rest = try await client.events(id, after: after)
                if rest.isEmpty { return job }
                for e in rest {
                    try onEvent(e)
                    after = e.seq
                }
            }
        }
    }
}
