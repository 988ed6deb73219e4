import Foundation
import TOMLKit

/// `cdtrainerd serve --config FILE`: every key of `configs/cdtrainerd.toml`, with its defaults.
/// Problems (unknown keys with suggestions, wrong types, impossible values) come as one
/// `JobFileError` naming the file and each field.
public struct DaemonConfig: Sendable, Equatable {
    // [server]
    public var host = "127.0.0.1"
    public var port = 8470
    /// Absolute (resolved against the config file's folder); nil: no token file.
    public var tokenFile: String?
    public var maxUploadMiB = 64
    // [state]
    public var stateDirectory = "/var/lib/cdtrainerd"
    /// "" → `$TMPDIR/cdtrainerd-work-<uid>`.
    public var workDirectory = ""
    public var keepCheckpoints = 0
    public var maxCrashRestarts = 3
    // [models]: name → absolute path.
    public var models: [String: String] = [:]
    // [defaults]
    public var defaultModel = ""
    public var sampleSteps = 25
    public var sampleGuidance = 6.0
    public var sampleScheduler = SchedulerName.dpmSolverPP2M
    public var maxSteps = 0
    // [log]
    public var logLevel = "info"

    public static let logLevels = ["trace", "debug", "info", "notice", "warning", "error", "critical"]

    public init() {}

    /// Reads and checks `path`; relative paths in it are taken relative to its folder.
    public static func load(path: String) throws -> DaemonConfig {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw JobFileError(file: path, problems: [.init(field: "", message: "cannot read the configuration file: \(error.localizedDescription)")])
        }
        return try parse(toml: text, file: path, folder: (Paths.absolute(path, relativeTo: FileManager.default.currentDirectoryPath) as NSString).deletingLastPathComponent)
    }

    public static func parse(toml: String, file: String, folder: String) throws -> DaemonConfig {
        let table: TOMLTable
        do {
            table = try TOMLTable(string: toml)
        } catch let e as TOMLParseError {
            throw JobFileError(file: file, problems: [.init(field: "", message: "TOML syntax error: \(e.description)",
                                                            line: e.source.begin.line, column: e.source.begin.column)])
        }
        let d = Diagnostics()
        var c = DaemonConfig()
        let top = TableReader(table: table, prefix: "", diag: d)
        let sections = ["server", "state", "models", "defaults", "log"]
        top.reportUnknown(known: sections, aliases: ["storage": "state", "model": "models", "logging": "log", "api": "server"])
        func section(_ name: String) -> TableReader? {
            guard let v = table[name] else { return nil }
            guard let t = v.table else {
                d.typeMismatch(name, expected: "a table ([\(name)])", found: v)
                return nil
            }
            return TableReader(table: t, prefix: name + ".", diag: d)
        }
        func path(_ value: String) -> String { Paths.absolute(value, relativeTo: folder) }

        if let r = section("server") {
            r.reportUnknown(known: ["host", "port", "token_file", "max_upload_mib"], aliases: ["address": "host", "listen": "host", "token": "token_file"])
            if let v = r.string("host") { c.host = v }
            if let v = r.int("port") { c.port = v }
            if let v = r.string("token_file") { c.tokenFile = v.isEmpty ? nil : path(v) }
            if let v = r.int("max_upload_mib") { c.maxUploadMiB = v }
        }
        if let r = section("state") {
            r.reportUnknown(known: ["dir", "work_dir", "keep_checkpoints", "max_crash_restarts"],
                            aliases: ["state_dir": "dir", "directory": "dir", "path": "dir", "max_restarts": "max_crash_restarts"])
            if let v = r.string("dir") { c.stateDirectory = path(v) }
            if let v = r.string("work_dir") { c.workDirectory = v.isEmpty ? "" : path(v) }
            if let v = r.int("keep_checkpoints") { c.keepCheckpoints = v }
            if let v = r.int("max_crash_restarts") { c.maxCrashRestarts = v }
        }
        if let r = section("models") {
            for name in r.table.keys.sorted() {
                if let v = r.string(name) {
                    if v.isEmpty { d.add("models.\(name)", "empty path") } else { c.models[name] = path(v) }
                }
            }
        }
        if let r = section("defaults") {
            r.reportUnknown(known: ["model", "sample_steps", "sample_guidance", "sample_scheduler", "max_steps"],
                            aliases: ["steps": "sample_steps", "guidance": "sample_guidance", "scheduler": "sample_scheduler"])
            if let v = r.string("model") { c.defaultModel = v }
            if let v = r.int("sample_steps") { c.sampleSteps = v }
            if let v = r.double("sample_guidance") { c.sampleGuidance = v }
            if let v = r.string("sample_scheduler") {
                if let s = SchedulerName(rawValue: v) { c.sampleScheduler = s } else {
                    d.add("defaults.sample_scheduler", "unknown scheduler \(quoted(v)) (one of \(SchedulerName.allCases.map(\.rawValue).joined(separator: ", ")))")
                }
            }
            if let v = r.int("max_steps") { c.maxSteps = v }
        }
        if let r = section("log") {
            r.reportUnknown(known: ["level"], aliases: ["log_level": "level"])
            if let v = r.string("level") { c.logLevel = v }
        }

        if !(0...65535).contains(c.port) { d.add("server.port", "must be 0…65535 (got \(c.port))") }
        if !(1...65536).contains(c.maxUploadMiB) { d.add("server.max_upload_mib", "must be 1…65536 (got \(c.maxUploadMiB))") }
        if c.maxCrashRestarts < 0 { d.add("state.max_crash_restarts", "must be 0 (no limit) or more (got \(c.maxCrashRestarts))") }
        if c.keepCheckpoints < 0 { d.add("state.keep_checkpoints", "must be 0 (keep all) or more (got \(c.keepCheckpoints))") }
        if c.sampleSteps < 1 { d.add("defaults.sample_steps", "must be at least 1 (got \(c.sampleSteps))") }
        if !(c.sampleGuidance >= 0 && c.sampleGuidance.isFinite) { d.add("defaults.sample_guidance", "must be a number ≥ 0") }
        if c.maxSteps < 0 { d.add("defaults.max_steps", "must be 0 (no limit) or more (got \(c.maxSteps))") }
        if !c.defaultModel.isEmpty, c.models[c.defaultModel] == nil {
            d.add("defaults.model", "\(quoted(c.defaultModel)) is not a name in [models]" + (c.models.isEmpty ? " (which is empty)" : " (\(c.models.keys.sorted().joined(separator: ", ")))"))
        }
        if !logLevels.contains(c.logLevel) { d.add("log.level", "must be one of \(logLevels.joined(separator: ", ")) (got \(quoted(c.logLevel)))") }
        if !d.problems.isEmpty { throw JobFileError(file: file, problems: d.problems) }
        return c
    }

    /// The path of the model a job names: a `[models]` name, or a path equal to one of their paths;
    /// nil for anything else.
    public func modelPath(_ model: String) -> String? {
        modelName(model).flatMap { models[$0] }
    }

    /// The `[models]` name of the model a job names (a name, or a path equal to one of theirs).
    public func modelName(_ model: String) -> String? {
        if models[model] != nil { return model }
        let standard = (model as NSString).standardizingPath
        return models.first { ($0.value as NSString).standardizingPath == standard }?.key
    }

    /// `workDirectory`, or its default.
    public var resolvedWorkDirectory: String {
        if !workDirectory.isEmpty { return workDirectory }
        let tmp = ProcessInfo.processInfo.environment["TMPDIR"].flatMap { $0.isEmpty ? nil : $0 } ?? "/tmp"
        return (tmp as NSString).appendingPathComponent("cdtrainerd-work-\(getuid())")
    }
}
