/// Everything wrong with one job file, found in one pass: syntax, unknown keys, types, missing
/// fields, impossible values, inconsistent tokens, and (from `load`/`resolvedFiles`) missing files.
public struct JobFileError: Error, CustomStringConvertible, Equatable, Codable, Sendable {
    /// One problem at one place of the file.
    public struct Problem: CustomStringConvertible, Equatable, Codable, Sendable {
        /// Where: a key path such as `learning_rate`, `concept[1].instance_images` (blocks and list
        /// elements count from 0), `validation.steps`, `concepts_list[0].instance_data_dir`; empty
        /// for a problem of the whole file (syntax, unreadable file).
        public let field: String
        public let message: String
        /// Position of a syntax error (1-based), nil otherwise.
        public let line: Int?
        public let column: Int?

        public init(field: String, message: String, line: Int? = nil, column: Int? = nil) {
            self.field = field
            self.message = message
            self.line = line
            self.column = column
        }

        /// `field: message`, or `line L, column C: message`.
        public var description: String {
            if let line {
                return "line \(line)" + (column.map { ", column \($0)" } ?? "") + ": " + message
            }
            return field.isEmpty ? message : "\(field): \(message)"
        }
    }

    /// The job file (path as given, or a name for text that came from elsewhere).
    public let file: String
    public let problems: [Problem]

    public init(file: String, problems: [Problem]) {
        self.file = file
        self.problems = problems
    }

    /// Every problem on its own line, each prefixed by the file: `job.toml: steps: must be at least 1 (got 0)`.
    public var description: String {
        problems.map { "\(file): \($0)" }.joined(separator: "\n")
    }

    /// The field paths of the problems, in order (convenient in tests and UIs).
    public var fields: [String] { problems.map(\.field) }
}
