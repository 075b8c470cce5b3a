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
}

extension Drafter {
    public var usesModel: Bool { false }
    public func observe(previous: Int32, token: Int32, logits: UnsafePointer<Float>, vocabularySize: Int) {}
}
