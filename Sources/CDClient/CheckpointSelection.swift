import CDProtocol

/// Which files of a checkpoint a format is (the layout `JobRunner` writes into
/// `checkpoints/step-NNNNNN/`): `diffusers/…`, `a1111/…`, `NAME.concept.safetensors`, and
/// `state.safetensors`, the training state needed only to resume.
public enum CheckpointFormat: String, CaseIterable, Sendable {
    /// Files under `diffusers/`.
    case diffusers
    /// Files under `a1111/`.
    case a1111
    /// `*.concept.safetensors` (our bundle).
    case bundle
    /// Every file but the training state.
    case all
}

/// Picking a checkpoint and its files, and checking where a listed file may be written: pure
/// functions over the daemon's listings.
public enum CheckpointSelection {
    /// The training state of a checkpoint (optimizer moments; large, and useless outside the daemon).
    public static let stateFile = "state.safetensors"

    /// The checkpoint at `step`, or the newest (highest step) when `step` is nil; nil when there is none.
    public static func checkpoint(_ list: [CheckpointInfo], step: Int?) -> CheckpointInfo? {
        if let step { return list.last { $0.step == step } }
        return list.max { $0.step < $1.step }
    }

    /// The files of `format`, in listing order; `withState` adds `state.safetensors`.
    public static func files(_ files: [CheckpointFile], format: CheckpointFormat, withState: Bool = false) -> [CheckpointFile] {
        files.filter { f in
            if f.path == stateFile { return withState }
            switch format {
            case .diffusers: return f.path.hasPrefix("diffusers/")
            case .a1111: return f.path.hasPrefix("a1111/")
            case .bundle: return f.path.hasSuffix(".concept.safetensors")
            case .all: return true
            }
        }
    }

    /// The components of a listed (relative, `/`-separated) path, or nil when it could name
    /// something outside the destination folder: absolute, empty, `.` or `..` components,
    /// backslashes or NUL.
    public static func safeComponents(_ path: String) -> [String]? {
        guard !path.hasPrefix("/") else { return nil }
        let parts = path.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        guard !parts.isEmpty else { return nil }
        for p in parts where p.isEmpty || p == "." || p == ".." || p.contains("\\") || p.contains("\0") {
            return nil
        }
        return parts
    }
}
