/// What the engine tells a drafter about one sequence it wants a candidate tree for.
public struct DraftInput: Sendable {
    /// The sequence's KV-cache slot.
    public var slot: Int
    /// Prompt and generated tokens; the last one is the root (this step's decode row, not yet in
    /// the KV cache, which holds `history.count - 1` positions).
    public var history: [Int32]
    /// Node and depth caps for the candidate tree.
    public var maxNodes: Int
    public var maxDepth: Int

    public init(slot: Int, history: [Int32], maxNodes: Int, maxDepth: Int) {
        self.slot = slot
        self.history = history
        self.maxNodes = maxNodes
        self.maxDepth = maxDepth
    }
}

/// A source of draft trees. The engine asks once per step for all sequences that may speculate,
/// calibrates the trees' raw confidences against observed acceptance, and lets the planner keep a
/// prefix of the candidates (see shared/design/CAST.md).
///
/// Thread-safety: engine thread only.
public protocol Drafter: AnyObject {
    /// Name used in configuration, metrics and calibration (`ngram`, `recycle`, `skip`).
    var name: String { get }
    /// Whether drafting runs the model (its time D matters to the planner); false for lookups.
    var usesModel: Bool { get }
    /// One candidate tree per input, in order; an empty tree proposes nothing. Node confidences
    /// are raw per-edge estimates in [0, 1].
    func propose(_ inputs: [DraftInput]) throws -> [DraftTree]
    /// The target's next-token logits `[vocabularySize]` at a verified row whose input token was
    /// `token`, preceded by `previous` (-1: none) (called for every root and accepted node after
    /// a step). Default: ignored.
    func observe(previous: Int32, token: Int32, logits: UnsafePointer<Float>, vocabularySize: Int)
    /// A sequence has finished: its prompt and generated tokens. Default: ignored.
    func finished(history: [Int32])
}

extension Drafter {
    public var usesModel: Bool { false }
    public func observe(previous: Int32, token: Int32, logits: UnsafePointer<Float>, vocabularySize: Int) {}
    public func finished(history: [Int32]) {}
}

/// Where a draft node came from (`DraftTree.sources`): calibration learns each source's
/// acceptance separately.
public enum DraftSource {
    /// The recycle table: the target's recorded successors of the last token.
    public static let recycle: UInt8 = 0
    /// Prompt lookup in the sequence's own text.
    public static let promptLookup: UInt8 = 1
    /// The recycle table's successors of the last two tokens.
    public static let recyclePair: UInt8 = 2
    /// The global corpus of earlier requests (suffix drafter).
    public static let corpus: UInt8 = 3
    /// A model (skip drafter).
    public static let model: UInt8 = 4
    /// Tokens a request's output grammar forces.
    public static let forced: UInt8 = 5
    /// Number of sources (calibration cells per depth and bucket).
    public static let count = 6
}

/// Several drafters as one: every drafter proposes for every input and the trees are merged per
/// sequence by token path (a node proposed twice keeps the first proposer's source and the higher
/// confidence), within the input's caps. Observations and finished sequences reach every drafter.
public final class MergedDrafter: Drafter {
    public let drafters: [Drafter]
    public let name: String

    public init(_ drafters: [Drafter]) {
        precondition(!drafters.isEmpty)
        self.drafters = drafters
        name = drafters.map(\.name).joined(separator: "+")
    }

    public var usesModel: Bool { drafters.contains { $0.usesModel } }

    public func propose(_ inputs: [DraftInput]) throws -> [DraftTree] {
        var merged = try drafters[0].propose(inputs)
        for drafter in drafters.dropFirst() {
            let more = try drafter.propose(inputs)
            for (i, tree) in more.enumerated() where i < merged.count {
                merged[i].merge(tree, maxNodes: inputs[i].maxNodes)
            }
        }
        return merged
    }

    public func observe(previous: Int32, token: Int32, logits: UnsafePointer<Float>, vocabularySize: Int) {
        for d in drafters { d.observe(previous: previous, token: token, logits: logits, vocabularySize: vocabularySize) }
    }

    public func finished(history: [Int32]) {
        for d in drafters { d.finished(history: history) }
    }
}
