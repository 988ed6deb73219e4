import Foundation

/// The reference fixture directory: `$CD_FIXTURES` when set, else the project's copy of
/// `tiny-sd1` under Tests/Fixtures. Tests read every size from its config files.
public enum Fixtures {
    public static var directory: URL {
        if let path = ProcessInfo.processInfo.environment["CD_FIXTURES"], !path.isEmpty {
            return URL(fileURLWithPath: path, isDirectory: true)
        }
        return URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Fixtures/tiny-sd1", isDirectory: true)
    }

    /// Tables that belong to the project, not to a fixture model (the published LDM key maps):
    /// always the project's copy, whatever `$CD_FIXTURES` says.
    public static var keymaps: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fixtures/keymaps", isDirectory: true)
    }

    public static var model: URL { directory.appendingPathComponent("model", isDirectory: true) }
    public static func caseFile(_ name: String) -> URL { directory.appendingPathComponent("cases/\(name)") }
}
