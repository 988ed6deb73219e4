import CDModels
import CDTensor

/// The new tokens a job learns (`<new1>`, `<new2>`, …), added to the tokenizer with ids after the
/// vocabulary and initialized from an initializer token's embedding row (spec 2.2, diffusers order:
/// the i-th modifier from the i-th initializer). The rows live in their own [n, dim] tensor
/// (`EmbeddingOverride`), so the 49408-row table stays frozen and shared.
public struct ModifierTokens: @unchecked Sendable {
    public let names: [String]
    public let ids: [Int]
    /// Initializer ids, one per token (the row each started from).
    public let initializerIDs: [Int]
    /// The trainable rows [n, dim].
    public let rows: Tensor

    public var override: EmbeddingOverride { EmbeddingOverride(rowIds: ids, rows: rows) }

    /// Adds `tokens` (name, initializer) to `tokenizer` and copies each initializer's row of
    /// `table` [V, dim]. An initializer that is itself a vocabulary entry (e.g. `ktn`, id 42170, a
    /// word piece) uses that row, as diffusers did with transformers 4; otherwise it must encode
    /// to exactly one token.
    /// `tokenizer` changes only when every token is valid.
    public init(_ tokens: [(name: String, initializer: String)], tokenizer original: inout CLIPTokenizer, table: Tensor) throws {
        var tokenizer = original
        precondition(table.rank == 2, "embedding table must be [V, dim]")
        let (vocab, dim) = (table.shape[0], table.shape[1])
        var names: [String] = [], ids: [Int] = [], initial: [Int] = []
        for (name, initializer) in tokens {
            let id: Int
            do { id = try tokenizer.addToken(name) } catch {
                throw TrainingError.invalidToken(token: name, reason: "\(error)")
            }
            let source: Int
            if let direct = tokenizer.id(of: initializer), direct < vocab {
                source = direct
            } else {
                let encoded = tokenizer.encode(initializer)
                guard encoded.count == 1, let only = encoded.first, only < vocab else {
                    let pieces = encoded.map { tokenizer.token(for: $0) ?? "\($0)" }.joined(separator: " ")
                    throw TrainingError.invalidToken(token: name, reason: "initializer '\(initializer)' is not one vocabulary token (it encodes to \(encoded.count): \(pieces)); pick a single-token word")
                }
                source = only
            }
            names.append(name); ids.append(id); initial.append(source)
        }
        let rows = Tensor(zeros: [names.count, dim])
        for (r, source) in initial.enumerated() { rows[r].copy(from: table[source]) }
        original = tokenizer
        self.names = names
        self.ids = ids
        self.initializerIDs = initial
        self.rows = rows
    }

}
