@testable import CDProtocol
import Foundation
import Testing

@Suite("Job file paths")
struct PathResolutionTests {
    /// The example's folders with dummy images; returns the job file's path.
    func exampleTree(_ root: String) throws -> String {
        try makeFiles(root, [
            "models/sd15/", "data/cat/b.jpg", "data/cat/a.PNG", "data/cat/c.webp", "data/cat/d.JPEG",
            "data/cat/.hidden.jpg", "data/cat/notes.txt", "data/cat/sub/e.jpg", "data/cat/f.jpg.txt", "reg/cat/",
        ])
        let job = root + "/cat-and-pot.toml"
        try write(exampleJob, to: job)
        return job
    }

    @Test func loadExpandsFoldersAndMakesPathsAbsolute() throws {
        try withTemporaryFolder { root in
            let job = try JobSpec.load(path: try exampleTree(root))
            let c = try #require(job.concepts.first)
            #expect(c.instanceImages == ["a.PNG", "b.jpg", "c.webp", "d.JPEG"].map { root + "/data/cat/" + $0 })
            #expect(c.instanceImageSource == "data/cat")
            #expect(c.classImages == root + "/reg/cat")
            #expect(job.model == root + "/models/sd15")
        }
    }

    @Test func resolvedFilesIsIdempotentAndMatchesLoad() throws {
        try withTemporaryFolder { root in
            let path = try exampleTree(root)
            let parsed = try JobSpec.parse(toml: exampleJob, file: path)
            let once = try parsed.resolvedFiles(relativeTo: root)
            #expect(try once.resolvedFiles(relativeTo: root) == once)
            #expect(try JobSpec.load(path: path) == once)
        }
    }

    @Test func pathsAreRelativeToTheJobFilesFolder() throws {
        try withTemporaryFolder { root in
            _ = try exampleTree(root)
            let job = try JobSpec.load(path: root + "/data/../cat-and-pot.toml")
            #expect(job.concepts[0].instanceImages.first == root + "/data/cat/a.PNG")
        }
    }

    @Test func listedFilesAreCheckedOneByOne() throws {
        try withTemporaryFolder { root in
            try makeFiles(root, ["dog/1.jpg", "dog/2.png", "dog/readme.md", "dog/sub/"])
            let toml = """
                model = "sd15-base"
                with_prior_preservation = false
                [[concept]]
                instance_prompt = "photo of a sks dog"
                instance_images = ["dog/2.png", "dog/1.jpg", "dog/3.jpg", "dog/readme.md", "dog/sub"]
                """
            try write(toml, to: root + "/job.toml")
            do {
                _ = try JobSpec.load(path: root + "/job.toml")
                Issue.record("load accepted missing files")
            } catch let e as JobFileError {
                #expect(e.fields == ["concept[0].instance_images[2]", "concept[0].instance_images[3]", "concept[0].instance_images[4]"])
                #expect(e.file == root + "/job.toml")
            }
            let ok = try JobSpec.parse(toml: toml.replacingOccurrences(of: ", \"dog/3.jpg\", \"dog/readme.md\", \"dog/sub\"", with: ""), file: "job.toml")
                .resolvedFiles(relativeTo: root)
            // A list keeps its order; the model name that is no file stays a name.
            #expect(ok.concepts[0].instanceImages == [root + "/dog/2.png", root + "/dog/1.jpg"])
            #expect(ok.model == "sd15-base")
        }
    }

    @Test(arguments: [
        // a missing instance folder, a folder without images, a file named as the folder,
        // a missing class folder, a class "folder" that is a file
        ("instance_images = \"nope\"", ["concept[0].instance_images"]),
        ("instance_images = \"empty\"", ["concept[0].instance_images"]),
        ("instance_images = \"data/cat/b.jpg\"", ["concept[0].instance_images"]),
        ("instance_images = \"data/cat\"\nclass_images = \"reg/dog\"", ["concept[0].class_images"]),
        ("instance_images = \"data/cat\"\nclass_images = \"data/cat/b.jpg\"", ["concept[0].class_images"]),
    ])
    func missingFilesAreNamed(_ lines: String, _ expected: [String]) throws {
        let label = lines
        try withTemporaryFolder { root in
            try makeFiles(root, ["data/cat/b.jpg", "empty/notes.txt", "empty/.x.jpg"])
            let spec = try JobSpec.parse(toml: """
                model = "m"
                [[concept]]
                instance_prompt = "a cat"
                class_prompt = "cat"
                \(lines)
                """, file: "j.toml")
            do {
                _ = try spec.resolvedFiles(relativeTo: root)
                Issue.record("\(label): accepted")
            } catch let e as JobFileError {
                #expect(e.fields == expected, "\(label)")
                #expect(e.file == root)
            }
        }
    }

    @Test func classFolderIsNotNeededWithoutPriorPreservation() throws {
        try withTemporaryFolder { root in
            try makeFiles(root, ["data/cat/b.jpg"])
            let spec = try JobSpec.parse(toml: """
                model = "m"
                with_prior_preservation = false
                [[concept]]
                instance_prompt = "a cat"
                instance_images = "data/cat"
                class_images = "reg/cat"
                """, file: "j.toml")
            #expect(try spec.resolvedFiles(relativeTo: root).concepts[0].classImages == root + "/reg/cat")
        }
    }

    @Test func modelPathsMustExist() throws {
        try withTemporaryFolder { root in
            try makeFiles(root, ["data/cat/b.jpg", "weights/sd15.safetensors"])
            func resolve(_ model: String) throws -> JobSpec {
                try JobSpec.parse(toml: """
                    model = "\(model)"
                    with_prior_preservation = false
                    [[concept]]
                    instance_prompt = "a cat"
                    instance_images = "data/cat"
                    """, file: "j.toml").resolvedFiles(relativeTo: root)
            }
            #expect(try resolve("weights/sd15.safetensors").model == root + "/weights/sd15.safetensors")
            #expect(try resolve("runwayml/stable-diffusion-v1-5").model == "runwayml/stable-diffusion-v1-5")
            for missing in ["./sd15", "weights/sd14.safetensors", "/nonexistent/model.ckpt"] {
                #expect(throws: JobFileError.self) { try resolve(missing) }
            }
        }
    }

    @Test func loadReportsTextAndFileProblemsTogether() throws {
        try withTemporaryFolder { root in
            try write(minimalJob(top: "steps = 0"), to: root + "/job.toml")
            do {
                _ = try JobSpec.load(path: root + "/job.toml")
                Issue.record("accepted")
            } catch let e as JobFileError {
                #expect(e.fields == ["steps", "concept[0].instance_images"])
                #expect(e.description.split(separator: "\n").allSatisfy { $0.hasPrefix(root + "/job.toml: ") })
            }
        }
    }

    @Test func unreadableJobFiles() throws {
        try withTemporaryFolder { root in
            #expect(throws: JobFileError(file: root + "/none.toml", problems: [.init(field: "", message: "no such file")])) {
                try JobSpec.load(path: root + "/none.toml")
            }
            #expect(throws: JobFileError.self) { try JobSpec.load(path: root) }
            try Data([0xFF, 0xFE, 0x00]).write(to: URL(fileURLWithPath: root + "/bin.toml"))
            #expect(throws: JobFileError(file: root + "/bin.toml", problems: [.init(field: "", message: "is not UTF-8 text")])) {
                try JobSpec.load(path: root + "/bin.toml")
            }
        }
    }

    @Test func imageFilesOfAFolder() throws {
        try withTemporaryFolder { root in
            try makeFiles(root, ["x/2.webp", "x/1.jpeg", "x/.3.png", "x/4.gif", "x/5.Jpg/"])
            #expect(try JobSpec.imageFiles(in: root + "/x") == [root + "/x/1.jpeg", root + "/x/2.webp"])
            #expect(throws: JobFileError.self) { try JobSpec.imageFiles(in: root + "/nothing") }
        }
    }

    @Test func lexicalPathHelpers() {
        #expect(Paths.normalized("a/./b//c/../d") == "a/b/d")
        #expect(Paths.normalized("../x/../../y") == "../../y")
        #expect(Paths.normalized("/../a") == "/a")
        #expect(Paths.join("lists", "./data/cat") == "lists/data/cat")
        #expect(Paths.join("lists", "/abs") == "/abs")
        #expect(Paths.parent("a/b.toml") == "a" && Paths.parent("b.toml") == "" && Paths.parent("/b.toml") == "/")
        #expect(Paths.absolute("x", relativeTo: "/r/s") == "/r/s/x")
        #expect(Paths.absolute("~/x", relativeTo: "/r").hasSuffix("/x"))
        #expect(!Paths.absolute("~/x", relativeTo: "/r").hasPrefix("~"))
    }
}
