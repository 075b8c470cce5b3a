import Foundation
import Kernels
import Model

/// Self-speculative drafting: the target model itself, run through a subset of its layers and
/// then its output norm and head, proposes the tree. The subset is either a prefix (early exit)
/// or, better, all layers but a few in the middle (layer skipping: the last layers map hidden
/// states into the output space, and an early exit without trained exit heads is rarely right).
///
/// Each layer run attends to the target's own keys and values of the committed positions for
/// that layer (for a prefix these are exactly what the drafter would compute; after a skipped
/// layer they are the target's, a good approximation): the drafter keeps no cache of its own.
/// It writes only the cache's step area (never commits), which the engine's real step
/// overwrites afterwards; it also overwrites `model.logits`, so it copies what it needs at once.
/// An optional head shortlist (`headTokens`) computes logits for the first token ids only.
///
/// Drafting is batched over all sequences and grows the trees level by level: level 1 runs every
/// root and adds its `width` most likely next tokens as children; each later level runs, in one
/// forward over the subset, the best unexpanded nodes of every tree (best-first by path score,
/// at most `levelRows` rows in all) and adds their top-`width` tokens below them. A level
/// computes only its new rows: the earlier levels' rows stay in the step area as ancestors
/// (`Transformer.forward(_:cache:only:headTokens:computedRows:)`). Levels stop at the deepest
/// `maxDepth`, when no node could still make a tree's best `maxNodes`, or when the step area is
/// full; each tree is then pruned to its `maxNodes` best nodes.
///
/// Raw confidence of an edge: the drafter's softmax probability of its token (over the
/// shortlist). Scratch: `width` entries per logit row, reused (nothing proportional to the
/// vocabulary is allocated per call). Thread-safety: engine thread only (it runs the shared
/// model and cache).
public final class SkipDrafter: Drafter {
    public let name = "skip"
    public var usesModel: Bool { true }
    public let model: Transformer
    public let cache: KVCache
    /// The target's layers the drafter runs, in order (a prefix: early exit).
    public let layers: [Int]
    /// Logits are computed for token ids `0..<headTokens` only (the shortlist the drafter can
    /// propose; the whole vocabulary by default).
    public let headTokens: Int
    /// Children added below each expanded node (its most likely next tokens).
    public let width: Int
    /// Most new rows one level computes, over all sequences (at least one per sequence).
    public let levelRows: Int

    /// Cumulative drafting counters, for benchmarks and metrics.
    public struct Statistics: Sendable, Equatable {
        /// `propose` calls that ran at least one level.
        public var proposals = 0
        /// Forward calls (levels), and the rows they computed.
        public var levels = 0
        public var rows = 0
        /// Wall time spent in `propose`, in seconds.
        public var seconds: Double = 0
    }
    public private(set) var statistics = Statistics()

    /// Top-`width` scratch for one logit row.
    private var topIDs: [Int32]
    private var topValues: [Float]

    /// Early exit: drafts with the target's first `layers` layers.
    /// - Throws: `SpeculationError` for `layers` outside `1...model.config.layerCount` or a
    ///   `width` or `levelRows` below one.
    public convenience init(model: Transformer, cache: KVCache, layers: Int, width: Int = 3, levelRows: Int = 32) throws {
        guard layers >= 1 && layers <= model.config.layerCount else {
            throw SpeculationError.invalidSkipLayers(requested: layers, available: model.config.layerCount)
        }
        try self.init(model: model, cache: cache, layers: Array(0..<layers), width: width, levelRows: levelRows)
    }

    /// Drafts with the listed layers of the target (increasing; skipping some in the middle
    /// keeps the last layers, which map into the output space) and, optionally, a shortlist head.
    /// - Throws: `SpeculationError` for an empty or invalid layer list, a `headTokens` outside
    ///   `1...vocabularySize`, or a `width` or `levelRows` below one.
    public init(model: Transformer, cache: KVCache, layers: [Int], headTokens: Int? = nil, width: Int = 3,
                levelRows: Int = 32) throws {
        let count = model.config.layerCount
        guard !layers.isEmpty, zip(layers, layers.dropFirst()).allSatisfy({ $0 < $1 }), layers.first! >= 0, layers.last! < count else {
            throw SpeculationError.invalidLayerList(layers, available: count)
        }
        let head = headTokens ?? model.config.vocabularySize
        guard head >= 1 && head <= model.config.vocabularySize else {
            throw SpeculationError.invalidHeadTokens(head, vocabularySize: model.config.vocabularySize)
        }
        guard width >= 1 else { throw SpeculationError.invalidDraftWidth(parameter: "width", value: width) }
        guard levelRows >= 1 else { throw SpeculationError.invalidDraftWidth(parameter: "levelRows", value: levelRows) }
        self.model = model
        self.cache = cache
        self.layers = layers
        self.headTokens = head
        self.width = width
        self.levelRows = levelRows
        topIDs = [Int32](repeating: 0, count: width)
        topValues = [Float](repeating: 0, count: width)
    }

    /// The measured default layer set: all layers but a short run early in the middle,
    /// `[L/6, L/6 + L/10)` (layers 5, 6, 7 of 30). On SmolLM2-135M, dropping early-middle layers
    /// costs the least acceptance (top-1 = target greedy at depth 1: 85%, against 11% for an
    /// early exit after 20 layers), and keeping the last layers is essential.
    public static func defaultLayers(layerCount: Int) -> [Int] {
        let start = layerCount / 6, end = min(layerCount - 1, start + max(1, layerCount / 10))
        return (0..<layerCount).filter { $0 < start || $0 >= end }
    }

    /// Default head shortlist: token ids below 16,384 (92% of the target's greedy tokens on the
    /// bench prompts; a quarter of the head's cost with SmolLM2's 49,152 tokens).
    public static let defaultHeadTokens = 16384

    /// The measured default: `defaultLayers` and the `defaultHeadTokens` shortlist (the whole
    /// vocabulary when it is smaller).
    public convenience init(model: Transformer, cache: KVCache) throws {
        try self.init(model: model, cache: cache, layers: Self.defaultLayers(layerCount: model.config.layerCount),
                      headTokens: min(Self.defaultHeadTokens, model.config.vocabularySize))
    }

    /// One sequence's tree under construction.
    private struct Growing {
        var input: Int
        var slot: Int
        var rootPosition: Int
        var maxDepth: Int
        var maxNodes: Int
        var rootRow: Int
        var tree = DraftTree()
        /// Step row of each node once expanded (run), else -1.
        var nodeRows: [Int] = []
    }

    public func propose(_ inputs: [DraftInput]) throws -> [DraftTree] {
        var result = [DraftTree](repeating: DraftTree(), count: inputs.count)
        let maxRows = min(model.maxStepRows, cache.maxStepRows)
        var rows: [BatchRow] = []
        /// For each row: which growing tree, and which node (-1: the root).
        var owners: [(tree: Int, node: Int)] = []
        var growing: [Growing] = []
        for (k, input) in inputs.enumerated() {
            guard let root = input.history.last, input.maxNodes > 0, input.maxDepth > 0,
                  input.slot >= 0, input.slot < cache.slotCount, rows.count < min(maxRows, model.maxLogitRows) else { continue }
            let position = input.history.count - 1
            // The cache must hold everything before the root; a node at depth d sits at position + d.
            guard cache.lengths[input.slot] == position, Int(root) >= 0, Int(root) < model.config.vocabularySize else { continue }
            let depth = min(input.maxDepth, cache.capacity - 1 - position)
            guard depth > 0 else { continue }
            growing.append(Growing(input: k, slot: input.slot, rootPosition: position, maxDepth: depth,
                                   maxNodes: input.maxNodes, rootRow: rows.count))
            owners.append((growing.count - 1, -1))
            rows.append(BatchRow(slot: input.slot, token: root, position: position))
        }
        guard !growing.isEmpty else { return result }
        let start = DispatchTime.now().uptimeNanoseconds
        defer {
            statistics.proposals += 1
            statistics.seconds += Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        }

        let deepest = growing.reduce(0) { max($0, $1.maxDepth) }
        var computed = 0
        for level in 1...deepest {
            let logitRows = try model.forward(rows, cache: cache, only: layers, headTokens: headTokens, computedRows: computed)
            statistics.levels += 1
            statistics.rows += rows.count - computed
            precondition(logitRows == rows.count - computed, "every drafted row asks for logits")
            let vocabulary = model.config.vocabularySize
            for j in 0..<logitRows {
                let (g, node) = owners[computed + j]
                let found = top(model.logits + j * vocabulary, count: headTokens)
                for c in 0..<found {
                    growing[g].tree.add(token: topIDs[c], parent: node, confidence: topValues[c], source: DraftSource.model)
                    growing[g].nodeRows.append(-1)
                }
            }
            computed = rows.count
            guard level < deepest else { break }
            if !addLevel(&rows, &owners, &growing, maxRows: maxRows) { break }
        }
        for g in growing { result[g.input] = g.tree.pruned(to: g.maxNodes) }
        return result
    }

    /// Appends the next level's rows: per tree, its best unexpanded nodes that are shallow
    /// enough and rank high enough for a child to make the tree's best `maxNodes`, at most
    /// `levelRows` in all (shared evenly), within the step area and logit rows. Returns whether
    /// any row was added.
    private func addLevel(_ rows: inout [BatchRow], _ owners: inout [(tree: Int, node: Int)], _ growing: inout [Growing],
                          maxRows: Int) -> Bool {
        let budget = min(levelRows, maxRows - rows.count, model.maxLogitRows)
        guard budget > 0 else { return false }
        let quota = max(1, budget / growing.count)
        var added = 0
        for g in growing.indices where added < budget {
            let tree = growing[g].tree
            // Planning order: decreasing score, shallower first (as `DraftTree.pruned`). A child of
            // the node at rank i ranks below i + 1 nodes, so only ranks below maxNodes - 1 help.
            let order = (0..<tree.count).sorted {
                tree.scores[$0] != tree.scores[$1] ? tree.scores[$0] > tree.scores[$1] : tree.depths[$0] < tree.depths[$1]
            }
            var taken = 0
            for (rank, node) in order.enumerated() {
                guard rank < growing[g].maxNodes - 1, taken < quota, added < budget else { break }
                guard growing[g].nodeRows[node] < 0, tree.depths[node] < growing[g].maxDepth else { continue }
                let parent = tree.parents[node]
                growing[g].nodeRows[node] = rows.count
                owners.append((g, node))
                rows.append(BatchRow(slot: growing[g].slot, token: tree.tokens[node], position: growing[g].rootPosition + tree.depths[node],
                                     parent: parent < 0 ? growing[g].rootRow : growing[g].nodeRows[parent]))
                taken += 1
                added += 1
            }
        }
        return added > 0
    }

    /// The `width` largest logits of a row into `topIDs` (most likely first) with their softmax
    /// probabilities into `topValues` (`Ops.topK`: two SIMD passes); returns how many were found
    /// (fewer only for a vocabulary smaller than `width`).
    private func top(_ logits: UnsafePointer<Float>, count: Int) -> Int {
        let k = min(width, count)
        guard k > 0 else { return 0 }
        let logSumExp = topIDs.withUnsafeMutableBufferPointer { ids in
            topValues.withUnsafeMutableBufferPointer { values in
                Ops.topK(logits, count: count, k: k, ids: ids.baseAddress!, values: values.baseAddress!)
            }
        }
        for j in 0..<k { topValues[j] = expf(topValues[j] - logSumExp) }
        return k
    }
}
