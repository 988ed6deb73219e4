import Foundation

/// The programs process-level tests start: the package's own binaries beside the test bundle
/// (`swift build --build-tests` builds every product) and `mpirun` from PATH; an environment
/// variable overrides each.
public enum Executables {
    /// `name` (e.g. `cdtrainerd`, `cdctl`) from `$override` or the build products folder.
    public static func product(_ name: String, override: String) -> URL? {
        if let path = ProcessInfo.processInfo.environment[override], !path.isEmpty { return URL(fileURLWithPath: path) }
        // The test runner (…/debug/cdtrainerPackageTests.xctest) lives in the build products folder.
        var candidates: [URL] = []
        if let exe = Bundle.main.executableURL { candidates.append(exe.deletingLastPathComponent()) }
        candidates.append(Bundle.main.bundleURL.deletingLastPathComponent())
        candidates.append(URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent())
        for folder in candidates {
            let url = folder.appendingPathComponent(name)
            if FileManager.default.isExecutableFile(atPath: url.path) { return url }
        }
        return nil
    }

    /// `$MPIRUN`, else the first `mpirun` on PATH.
    public static var mpirun: URL? {
        if let path = ProcessInfo.processInfo.environment["MPIRUN"], !path.isEmpty { return URL(fileURLWithPath: path) }
        for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin").split(separator: ":") {
            let url = URL(fileURLWithPath: String(dir)).appendingPathComponent("mpirun")
            if FileManager.default.isExecutableFile(atPath: url.path) { return url }
        }
        return nil
    }
}
