import Grammar

/// What the speculator tells a drafter about one sequence it wants a candidate tree for.
public struct DraftInput: Sendable {
    /// The sequence's KV-cache slot.
    public var slot: Int
    /// Prompt and generated tokens; the last one is the root (this step's decode row, not yet in
    /// the KV cache, which holds `history.count - 1` positions).
    public var history: [Int32]
    /// Node and depth caps for the candidate tree.
    public var maxNodes: Int
    public var maxDepth: Int
    /// The request's output grammar and where the output is in it, the root included (nil: none);
    /// `GrammarDrafter` drafts the runs it forces.
    public var grammar: TokenGrammar?
    public var grammarState: GrammarState?

    public init(slot: Int, history: [Int32], maxNodes: Int, maxDepth: Int, grammar: TokenGrammar? = nil,
                grammarState: GrammarState? = nil) {
        self.slot = slot
        self.history = history
        self.maxNodes = maxNodes
        self.maxDepth = maxDepth
        self.grammar = grammar
        self.grammarState = grammarState
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

    /// As `propose(_:)`, for a drafter that spends time per frontier layer: before each layer it
    /// asks `gate` how many of its frontier nodes the layer should expand (CAST's breadth and depth
    /// rule). Default: `propose(_:)`, ungated.
    func propose(_ inputs: [DraftInput], gate: LayerGate?) throws -> [DraftTree]
    /// What one frontier layer costs by rows (nil: drafting does not run in layers of weights).
    /// A drafter with a layer cost is sized by the planner's rule, not by fixed shallow caps.
    var layerCost: LayerCost? { get }
    /// Whether the drafter reads the target's features (`observeFeature`); the engine skips the
    /// copies otherwise. Default: false.
    var readsFeatures: Bool { get }
    /// The target's feature (the residual after its last layer, before the output norm,
    /// `[embeddingLength]`, valid during the call) of the row at `position` of the sequence in
    /// `slot` whose logits gave the sequence's next root token (at `position + 1`): the last
    /// accepted row of a step, or the last prompt row after prefill. Default: ignored.
    func observeFeature(slot: Int, position: Int, feature: UnsafePointer<Float>)
    /// The sequence in `slot` has left it (finished, failed, cancelled or preempted): per-slot
    /// state is dropped. Default: ignored.
    func release(slot: Int)
    /// Slots whose per-slot state the drafter holds. Default: 0.
    var slotsHeld: Int { get }
    /// Saves what the drafter learned that is worth keeping across restarts to `path` (the
    /// recycle table). Default: nothing to save.
    func saveState(to path: String) throws
}

extension Drafter {
    public var usesModel: Bool { false }
    public func observe(previous: Int32, token: Int32, logits: UnsafePointer<Float>, vocabularySize: Int) {}
    public func finished(history: [Int32]) {}
    public func propose(_ inputs: [DraftInput], gate: LayerGate?) throws -> [DraftTree] { try propose(inputs) }
    public var layerCost: LayerCost? { nil }
    public var readsFeatures: Bool { false }
    public func observeFeature(slot: Int, position: Int, feature: UnsafePointer<Float>) {}
    public func release(slot: Int) {}
    public var slotsHeld: Int { 0 }
    public func saveState(to path: String) throws {}
}

/// A frontier node a layered drafter may expand next: tree `tree` (an index into the drafter's
/// inputs) and its node `node` (-1: the root).
public struct FrontierNode: Sendable, Equatable {
    public var tree: Int
    public var node: Int
    public init(tree: Int, node: Int) {
        self.tree = tree
        self.node = node
    }
}

/// Decides how far a drafter that spends time per frontier layer expands (the speculator, with
/// the step's cost model and the calibration): CAST's breadth and depth rule.
public protocol LayerGate: AnyObject {
    /// How many of `frontier` (best first) the next layer expands; 0 stops drafting.
    /// - Parameters:
    ///   - trees: the raw trees drafted so far, one per input (index `FrontierNode.tree`).
    ///   - inputs: the drafter's inputs.
    ///   - source: the `DraftSource` of the nodes the layer would add.
    ///   - spentMilliseconds: drafting time spent so far in this call.
    ///   - layerMilliseconds: a layer's predicted cost by rows.
    func expansion(of frontier: [FrontierNode], trees: [DraftTree], inputs: [DraftInput], source: UInt8, spentMilliseconds: Double,
                   layerMilliseconds: (Int) -> Double) -> Int
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
    /// The learned drafter (a feature-level head trained on the target's own outputs).
    public static let learned: UInt8 = 6
    /// Number of sources (calibration cells per depth and bucket).
    public static let count = 7
}

/// Several drafters as one: every drafter proposes for every input and the trees are merged per
/// sequence by token path (a node proposed twice keeps the first proposer's source and the higher
/// confidence), up to the input's node cap times the number of drafters: each member's candidates
/// get in, and the speculator keeps the best `maxNodes` after calibrating them per source
/// (`Speculator.calibrated`). Observations, features and finished sequences reach every drafter.
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
        try propose(inputs, gate: nil)
    }

    public func propose(_ inputs: [DraftInput], gate: LayerGate?) throws -> [DraftTree] {
        var merged = try drafters[0].propose(inputs, gate: gate)
        for drafter in drafters.dropFirst() {
            let more = try drafter.propose(inputs, gate: gate)
            for (i, tree) in more.enumerated() where i < merged.count {
                merged[i].merge(tree, maxNodes: inputs[i].maxNodes * drafters.count)
            }
        }
        return merged
    }

    /// The first member's layer cost (a merge holds at most one layered drafter).
    public var layerCost: LayerCost? { drafters.lazy.compactMap(\.layerCost).first }

    public var readsFeatures: Bool { drafters.contains { $0.readsFeatures } }

    public func observeFeature(slot: Int, position: Int, feature: UnsafePointer<Float>) {
        for d in drafters where d.readsFeatures { d.observeFeature(slot: slot, position: position, feature: feature) }
    }

    public func release(slot: Int) {
        for d in drafters { d.release(slot: slot) }
    }

    public var slotsHeld: Int { drafters.reduce(0) { $0 + $1.slotsHeld } }

    public func saveState(to path: String) throws {
        for d in drafters { try d.saveState(to: path) }
    }

    public func observe(previous: Int32, token: Int32, logits: UnsafePointer<Float>, vocabularySize: Int) {
        for d in drafters { d.observe(previous: previous, token: token, logits: logits, vocabularySize: vocabularySize) }
    }

    public func finished(history: [Int32]) {
        for d in drafters { d.finished(history: history) }
    }
}
