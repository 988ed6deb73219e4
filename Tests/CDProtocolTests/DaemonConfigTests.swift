import CDProtocol
import Foundation
import Testing

/// `configs/cdtrainerd.toml` and the daemon configuration's checks.
struct DaemonConfigTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    func problems(_ toml: String) -> [String] {
        do {
            _ = try DaemonConfig.parse(toml: toml, file: "cdtrainerd.toml", folder: "/etc/cdtrainerd")
            return []
        } catch let e as JobFileError {
            return e.problems.map { "\($0.field): \($0.message)" }
        } catch {
            return ["\(error)"]
        }
    }

    @Test func theShippedFileIsTheDefaults() throws {
        let c = try DaemonConfig.load(path: Self.root.appendingPathComponent("configs/cdtrainerd.toml").path)
        #expect(c == DaemonConfig())
    }

    @Test func valuesPathsAndModels() throws {
        let c = try DaemonConfig.parse(toml: """
            [server]
            host = "0.0.0.0"
            port = 9000
            token_file = "token"
            max_upload_mib = 8
            [state]
            dir = "/srv/cd"
            work_dir = "scratch"
            keep_checkpoints = 2
            [models]
            sd15 = "/models/sd15"
            tiny = "models/tiny"
            [defaults]
            model = "sd15"
            sample_steps = 10
            sample_guidance = 4
            sample_scheduler = "ddim"
            max_steps = 1000
            [log]
            level = "debug"
            """, file: "x.toml", folder: "/etc/cdtrainerd")
        #expect(c.host == "0.0.0.0" && c.port == 9000 && c.maxUploadMiB == 8)
        #expect(c.tokenFile == "/etc/cdtrainerd/token")
        #expect(c.stateDirectory == "/srv/cd" && c.workDirectory == "/etc/cdtrainerd/scratch" && c.keepCheckpoints == 2)
        #expect(c.models == ["sd15": "/models/sd15", "tiny": "/etc/cdtrainerd/models/tiny"])
        #expect(c.defaultModel == "sd15" && c.sampleSteps == 10 && c.sampleGuidance == 4 && c.sampleScheduler == .ddim && c.maxSteps == 1000)
        #expect(c.logLevel == "debug")
        #expect(c.modelPath("sd15") == "/models/sd15")
        #expect(c.modelPath("/models/sd15/") == "/models/sd15", "a model's path names it too")
        #expect(c.modelPath("/models/other") == nil && c.modelPath("sd21") == nil)
        #expect(c.modelName("/models/sd15/") == "sd15" && c.modelName("tiny") == "tiny" && c.modelName("/x") == nil)
    }

    @Test func everyProblemNamesItsKey() {
        let p = problems("""
            listen = 1
            [server]
            prot = 80
            port = "x"
            [state]
            keep_checkpoints = -1
            [models]
            empty = ""
            [defaults]
            model = "nope"
            sample_scheduler = "plms"
            [log]
            level = "loud"
            """)
        for field in ["listen:", "server.prot:", "server.port:", "state.keep_checkpoints:", "models.empty:", "defaults.model:",
                      "defaults.sample_scheduler:", "log.level:"] {
            #expect(p.contains { $0.hasPrefix(field) }, "no problem for \(field) in \(p)")
        }
        #expect(p.contains { $0.hasPrefix("server.prot:") && $0.contains("port") }, "a suggestion for a misspelt key")
        #expect(problems("[server\nport = 1").first?.contains("TOML syntax error") == true)
        #expect(problems("server = 3").first?.hasPrefix("server:") == true)
    }
}
