@testable import CDProtocol
import Foundation
import Testing

@Suite("concepts_list JSON")
struct ConceptsListTests {
    static let twoConcepts = """
        [
          {"instance_prompt": "photo of a <new1> cat", "class_prompt": "cat",
           "instance_data_dir": "./data/cat", "class_data_dir": "./real_reg/samples_cat"},
          {"instance_prompt": "photo of a <new2> wooden pot", "class_prompt": "wooden pot",
           "instance_data_dir": "./data/wooden_pot", "class_data_dir": "/abs/samples_wooden_pot",
           "prompt_filename": "prompts/pot.txt"}
        ]
        """

    @Test func tokensAreAssignedInOrder() throws {
        try withTemporaryFolder { root in
            try write(Self.twoConcepts, to: root + "/concepts.json")
            let job = try JobSpec.parse(toml: """
                model = "sd15"
                concepts_list = "concepts.json"
                modifier_token = "<new1>+<new2>"
                initializer_token = "ktn+pll"
                num_class_images = 100
                """, file: root + "/job.toml")
            #expect(job.concepts.count == 2)
            #expect(job.concepts[0] == ConceptSpec(
                instancePrompt: "photo of a <new1> cat", instanceImageSource: "./data/cat", classPrompt: "cat",
                classImages: "./real_reg/samples_cat", numClassImages: 100, modifierToken: "<new1>", initializerToken: "ktn"))
            #expect(job.concepts[1] == ConceptSpec(
                instancePrompt: "photo of a <new2> wooden pot", instanceImageSource: "./data/wooden_pot", classPrompt: "wooden pot",
                classImages: "/abs/samples_wooden_pot", numClassImages: 100, modifierToken: "<new2>", initializerToken: "pll"))
            #expect(job.modifierTokens == [ModifierTokenSpec(token: "<new1>", initializerToken: "ktn"),
                                           ModifierTokenSpec(token: "<new2>", initializerToken: "pll")])
        }
    }

    @Test func initializersDefaultToDiffusersList() throws {
        try withTemporaryFolder { root in
            try write(Self.twoConcepts, to: root + "/concepts.json")
            let job = try JobSpec.parse(toml: """
                model = "sd15"
                concepts_list = "concepts.json"
                modifier_token = "<new1> + <new2>"
                """, file: root + "/job.toml")
            #expect(job.concepts.map(\.initializerToken) == ["ktn", "pll"])
            #expect(job.concepts.map(\.numClassImages) == [200, 200])
        }
    }

    @Test func oneTokenForEveryConcept() throws {
        try withTemporaryFolder { root in
            try write("""
                [{"instance_prompt": "<cat> sleeping", "class_prompt": "cat", "instance_data_dir": "a"},
                 {"instance_prompt": "<cat> running", "class_prompt": "cat", "instance_data_dir": "b"}]
                """, to: root + "/c.json")
            let job = try JobSpec.parse(toml: "model = \"m\"\nconcepts_list = \"c.json\"\nmodifier_token = \"<cat>\"", file: root + "/job.toml")
            #expect(job.concepts.map(\.modifierToken) == ["<cat>", "<cat>"])
            #expect(job.modifierTokens == [ModifierTokenSpec(token: "<cat>", initializerToken: "ktn")])
        }
    }

    @Test func noTokensTrainsOnlyTheUNet() throws {
        try withTemporaryFolder { root in
            try write(Self.twoConcepts.replacingOccurrences(of: "<new1> ", with: "").replacingOccurrences(of: "<new2> ", with: ""), to: root + "/c.json")
            let job = try JobSpec.parse(toml: "model = \"m\"\nconcepts_list = \"c.json\"", file: root + "/job.toml")
            #expect(job.modifierTokens.isEmpty)
        }
    }

    @Test func pathsInsideTheListAreRelativeToTheListsFolder() throws {
        try withTemporaryFolder { root in
            try write(Self.twoConcepts, to: root + "/lists/concepts.json")
            try makeFiles(root, ["lists/data/cat/1.jpg", "lists/data/wooden_pot/1.png", "lists/real_reg/samples_cat/", "job/"])
            let toml = """
                model = "sd15"
                concepts_list = "../lists/concepts.json"
                modifier_token = "<new1>+<new2>"
                with_prior_preservation = false
                """
            let job = try JobSpec.parse(toml: toml, file: root + "/job/job.toml")
            #expect(job.concepts.map(\.instanceImageSource) == ["../lists/data/cat", "../lists/data/wooden_pot"])
            #expect(job.concepts.map(\.classImages) == ["../lists/real_reg/samples_cat", "/abs/samples_wooden_pot"])
            try write(toml, to: root + "/job/job.toml")
            let loaded = try JobSpec.load(path: root + "/job/job.toml")
            #expect(loaded.concepts[0].instanceImages == [root + "/lists/data/cat/1.jpg"])
            #expect(loaded.concepts[1].instanceImages == [root + "/lists/data/wooden_pot/1.png"])
        }
    }

    @Test func listProblemsUseTheListsNames() throws {
        try withTemporaryFolder { root in
            try write("""
                [{"instance_prompt": "photo of a <new1> cat", "instance_data_dir": 5, "class_dir": "x"},
                 {"instance_prompt": "photo of a pot", "class_prompt": "pot", "instance_data_dir": "b"}]
                """, to: root + "/c.json")
            let p = problems("model = \"m\"\nconcepts_list = \"c.json\"\nmodifier_token = \"<new1>+<new2>\"", file: root + "/job.toml")
            #expect(p.map(\.field) == [
                "concepts_list[0].class_dir", "concepts_list[0].instance_data_dir",
                "concepts_list[0].class_prompt", "modifier_token",
            ])
            #expect(p.last?.message.contains("concepts_list[1]") == true)
        }
    }

    @Test(arguments: [
        ("model = \"m\"\nconcepts_list = \"c.json\"\nmodifier_token = \"<new1>+<new2>+<new3>\"", ["modifier_token"]),
        ("model = \"m\"\nconcepts_list = \"c.json\"\nmodifier_token = \"<new1>+<new2>\"\ninitializer_token = \"ktn\"", ["initializer_token"]),
        ("model = \"m\"\nconcepts_list = \"c.json\"\nmodifier_token = \"<new1>+<new1>\"", ["modifier_token"]),
        ("model = \"m\"\nconcepts_list = \"c.json\"\nmodifier_token = \"<new1>++<new2>\"", ["modifier_token"]),
        ("model = \"m\"\nconcepts_list = \"c.json\"\ninitializer_token = \"ktn\"", ["initializer_token"]),
        ("model = \"m\"\nconcepts_list = \"missing.json\"", ["concepts_list"]),
        ("model = \"m\"\nconcepts_list = \"bad.json\"", ["concepts_list"]),
        ("model = \"m\"\nconcepts_list = \"object.json\"", ["concepts_list"]),
        ("model = \"m\"\nconcepts_list = \"empty.json\"", ["concepts_list"]),
        ("model = \"m\"\nconcepts_list = \"nested.json\"", ["concepts_list[0]"]),
    ])
    func tokenAndFileProblems(_ toml: String, _ expected: [String]) throws {
        try withTemporaryFolder { root in
            try write(Self.twoConcepts, to: root + "/c.json")
            try write("[{", to: root + "/bad.json")
            try write("{\"instance_prompt\": \"x\"}", to: root + "/object.json")
            try write("[]", to: root + "/empty.json")
            try write("[[{\"instance_prompt\": \"x\"}]]", to: root + "/nested.json")
            #expect(problems(toml, file: root + "/job.toml").map(\.field) == expected)
        }
    }

    @Test func fourTokensNeedInitializers() throws {
        try withTemporaryFolder { root in
            let list = (1...4).map { "{\"instance_prompt\": \"<t\($0)> thing\", \"class_prompt\": \"thing\", \"instance_data_dir\": \"d\($0)\"}" }
            try write("[" + list.joined(separator: ",") + "]", to: root + "/c.json")
            let p = problems("model = \"m\"\nconcepts_list = \"c.json\"\nmodifier_token = \"<t1>+<t2>+<t3>+<t4>\"", file: root + "/job.toml")
            #expect(p.map(\.field) == ["initializer_token"])
            let job = try JobSpec.parse(toml: "model = \"m\"\nconcepts_list = \"c.json\"\nmodifier_token = \"<t1>+<t2>+<t3>+<t4>\"\ninitializer_token = \"a+b+c+d\"", file: root + "/job.toml")
            #expect(job.concepts.map(\.initializerToken) == ["a", "b", "c", "d"])
        }
    }
}
