/// One row of a packed forward batch: a token of some sequence at some position.
///
/// Prefill chunks are chains (each row's parent is the row before it), plain decoding is a single
/// row with no parent, and a draft tree is a tree. A row attends to its sequence's cached
/// positions, then to its ancestors among this step's rows (root first), then to itself.
public struct BatchRow: Sendable, Equatable {
    /// The KV-cache slot of the row's sequence.
    public var slot: Int
    public var token: Int32
    /// Absolute position: the slot's cached length plus the number of ancestors in this step.
    public var position: Int
    /// Index of the parent row in the same batch (an earlier row of the same slot), or -1 for a
    /// row that follows the cached positions directly.
    public var parent: Int
    /// Whether the caller wants this row's logits.
    public var wantsLogits: Bool

    public init(slot: Int, token: Int32, position: Int, parent: Int = -1, wantsLogits: Bool = true) {
        self.slot = slot
        self.token = token
        self.position = position
        self.parent = parent
        self.wantsLogits = wantsLogits
    }

    /// A chain of rows for `tokens` in `slot`, starting at `startPosition`, each row the parent of
    /// the next; only the last row asks for logits unless `allLogits`. `firstRow` is the index the
    /// chain's first row will have in the batch.
    public static func chain(slot: Int, tokens: some Collection<Int32>, startPosition: Int, firstRow: Int = 0,
                             allLogits: Bool = false) -> [BatchRow] {
        var rows: [BatchRow] = []
        rows.reserveCapacity(tokens.count)
        for (i, t) in tokens.enumerated() {
            rows.append(BatchRow(slot: slot, token: t, position: startPosition + i, parent: i == 0 ? -1 : firstRow + i - 1,
                                 wantsLogits: allLogits || i == tokens.count - 1))
        }
        return rows
    }
}
