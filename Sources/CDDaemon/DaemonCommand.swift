import CDProtocol
import CDTraining
import Foundation

/// What rank 0 sends every rank when it has something for them: end, or run a job.
///
/// Encoding: kind byte (0 shutdown, 1 job); for a job: JSON length (u32 LE), the `JobOrder` JSON,
/// then a `FilePackage` of the job's images (relative to the job's folder).
enum DaemonCommand: Equatable {
    case shutdown
    case job(JobOrder, FilePackage)

    func encoded() throws -> [UInt8] {
        switch self {
        case .shutdown:
            return [0]
        case let .job(order, files):
            let json = try JSONEncoder().encode(order)
            var out: [UInt8] = [1]
            withUnsafeBytes(of: UInt32(json.count).littleEndian) { out.append(contentsOf: $0) }
            return out + json + files.encoded()
        }
    }

    init(decoding bytes: [UInt8]) throws {
        switch bytes.first {
        case 0:
            self = .shutdown
        case 1 where bytes.count >= 5:
            let n = Int(bytes[1..<5].reversed().reduce(UInt32(0)) { $0 << 8 | UInt32($1) })
            guard bytes.count >= 5 + n else { throw DaemonError.badCommand("truncated job order") }
            let order = try JSONDecoder().decode(JobOrder.self, from: Data(bytes[5..<(5 + n)]))
            self = .job(order, try FilePackage(decoding: Array(bytes[(5 + n)...])))
        default:
            throw DaemonError.badCommand("unknown command of \(bytes.count) bytes")
        }
    }
}

/// A job as every rank runs it: the stored spec with images named as uploaded (`JobUpload`) and
/// the model resolved to its path.
struct JobOrder: Codable, Equatable {
    var jobID: String
    var spec: JobSpec
}

public enum DaemonError: Error, CustomStringConvertible {
    case badCommand(String)
    case unknownModel(String, known: [String])

    public var description: String {
        switch self {
        case let .badCommand(why): "bad command from rank 0: \(why)"
        case let .unknownModel(name, known):
            "unknown model '\(name)': the daemon knows " + (known.isEmpty ? "none (add it to [models] in the configuration)" : known.joined(separator: ", "))
        }
    }
}
