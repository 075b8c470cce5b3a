import Foundation
import Kernels
import Model

/// The learned drafter: a feature-level MLP (`LearnedDrafterWeights`) run on the project's kernels,
/// autoregressive over the tree's depth and batched over the frontier of every sequence.
///
/// Each sequence's root input is the target's feature of its last accepted row (kept per slot from
/// `observeFeature`, dropped by `release`) and its root token. A frontier layer computes, in one
/// matmul per weight, every node it expands across all sequences: each node's predicted feature
/// (the input of its children) and its top `width` tokens of the draft vocabulary, added below it
/// with their softmax probability as raw confidence (`DraftSource.learned`). Layer 1 expands the
/// roots; each later layer the best unexpanded nodes (best first by path score, at most
/// `nodesPerLayer` per tree and `layerRows` in all, only nodes that can still make their tree's best
/// `maxNodes`). Before every layer the gate (the speculator) says how many of the frontier pay for
/// the layer's cost; without a gate every candidate is expanded, to the inputs' depth caps.
///
/// No KV cache: the drafter's only state per sequence is its root feature. Buffers are allocated
/// at init (`layerRows` rows per layer, `maxLayers` layers per call); drafting allocates only the
/// trees it returns. Thread-safety: engine thread only (it shares the target's thread pool).
public final class LearnedDrafter: Drafter {
    public let name = "learned"
    public var usesModel: Bool { true }
    public var readsFeatures: Bool { true }
    public let weights: LearnedDrafterWeights
    /// Children added below each expanded node.
    public let width: Int
    /// Most nodes one layer expands, over all sequences, and per tree.
    public let layerRows: Int
    public let nodesPerLayer: Int
    /// Most layers one call runs (deeper caps are cut to it).
    public let maxLayers: Int
    /// Sequence slots the drafter keeps a root feature for.
    public let slotCount: Int
    /// D: one layer's cost by rows (measured at init, corrected online).
    public private(set) var cost: LayerCost
    public var layerCost: LayerCost? { cost }

    /// Cumulative drafting counters, for benchmarks and metrics.
    public struct Statistics: Sendable, Equatable {
        /// `propose` calls that ran at least one layer; layers run and the rows they computed.
        public var proposals = 0
        public var layers = 0
        public var rows = 0
        /// Layers the gate stopped (0 of the frontier expanded), and rows it left out of a layer.
        public var gatedLayers = 0
        public var gatedRows = 0
        /// Wall time of the layers, in seconds.
        public var seconds: Double = 0
    }
    public private(set) var statistics = Statistics()

    // MARK: - State and scratch (allocated at init)

    private let d: Int, m: Int, k: Int
    /// Per slot: the root feature `[slotCount x d]` and the position of its row (-1: none).
    private let slotFeatures: UnsafeMutablePointer<Float>
    private var slotPositions: [Int]
    /// Output features of the nodes expanded in one call: `[layerRows * maxLayers x d]`.
    private let nodeFeatures: UnsafeMutablePointer<Float>
    private let nodeFeatureCapacity: Int
    /// One layer's rows: input features (pointers into `slotFeatures` or `nodeFeatures`), tokens.
    private var rowFeatures: [UnsafePointer<Float>]
    private var rowTokens: [Int32]
    private let activations: QuantizedActivations
    private let joined: UnsafeMutablePointer<Float>     // [layerRows x 2d]: [u | v]
    private let hidden: UnsafeMutablePointer<Float>     // [layerRows x d]: z
    private let normed: UnsafeMutablePointer<Float>     // [layerRows x d]
    private let gateUpOut: UnsafeMutablePointer<Float>  // [layerRows x 2m]
    private let projected: UnsafeMutablePointer<Float>  // [layerRows x d]
    private let logits: UnsafeMutablePointer<Float>     // [layerRows x K]
    private var topIDs: [Int32]
    private var topValues: [Float]

    /// - Parameters:
    ///   - slots: sequence slots (the engine's KV-cache slots).
    ///   - cost: a layer cost to use; nil measures one now (a few milliseconds of real layers).
    /// - Throws: `SpeculationError.invalidDraftWidth` for a parameter below one.
    public init(weights: LearnedDrafterWeights, slots: Int, width: Int = 3, layerRows: Int = 64, nodesPerLayer: Int = 4,
                maxLayers: Int = 8, cost: LayerCost? = nil) throws {
        for (parameter, value) in [("width", width), ("layerRows", layerRows), ("nodesPerLayer", nodesPerLayer), ("maxLayers", maxLayers),
                                   ("slots", slots)] where value < 1 {
            throw SpeculationError.invalidDraftWidth(parameter: parameter, value: value)
        }
        self.weights = weights
        self.width = min(width, weights.vocabularyCount)
        self.layerRows = max(layerRows, slots)
        self.nodesPerLayer = nodesPerLayer
        self.maxLayers = maxLayers
        slotCount = slots
        d = weights.embeddingLength
        m = weights.feedForwardLength
        k = weights.vocabularyCount
        let rows = self.layerRows
        func buffer(_ n: Int) -> UnsafeMutablePointer<Float> {
            let p = UnsafeMutablePointer<Float>.allocate(capacity: max(n, 1))
            p.initialize(repeating: 0, count: max(n, 1))
            return p
        }
        slotFeatures = buffer(slots * d)
        slotPositions = [Int](repeating: -1, count: slots)
        nodeFeatureCapacity = rows * maxLayers
        nodeFeatures = buffer(nodeFeatureCapacity * d)
        rowFeatures = [UnsafePointer<Float>](repeating: UnsafePointer(slotFeatures), count: rows)
        rowTokens = [Int32](repeating: 0, count: rows)
        activations = QuantizedActivations(maxRows: rows, maxInFeatures: max(2 * d, m))
        joined = buffer(rows * 2 * d)
        hidden = buffer(rows * d)
        normed = buffer(rows * d)
        gateUpOut = buffer(rows * 2 * m)
        projected = buffer(rows * d)
        logits = buffer(rows * k)
        topIDs = [Int32](repeating: 0, count: self.width)
        topValues = [Float](repeating: 0, count: self.width)
        self.cost = LayerCost(points: [(1, 0.01)])
        self.cost = cost ?? measureCost()
    }

    deinit {
        for p in [slotFeatures, nodeFeatures, joined, hidden, normed, gateUpOut, projected, logits] { p.deallocate() }
    }

    // MARK: - Per-slot state

    public func observeFeature(slot: Int, position: Int, feature: UnsafePointer<Float>) {
        guard slot >= 0 && slot < slotCount else { return }
        (slotFeatures + slot * d).update(from: feature, count: d)
        slotPositions[slot] = position
    }

    public func release(slot: Int) {
        guard slot >= 0 && slot < slotCount else { return }
        slotPositions[slot] = -1
    }

    /// The position of the feature held for `slot` (nil: none; the sequence cannot draft).
    public func featurePosition(slot: Int) -> Int? {
        slot >= 0 && slot < slotCount && slotPositions[slot] >= 0 ? slotPositions[slot] : nil
    }

    /// Slots holding a root feature.
    public var slotsHeld: Int { slotPositions.reduce(0) { $0 + ($1 >= 0 ? 1 : 0) } }

    // MARK: - Drafting

    public func propose(_ inputs: [DraftInput]) throws -> [DraftTree] {
        try propose(inputs, gate: nil)
    }

    /// One sequence's tree under construction.
    private struct Growing {
        var input: Int
        var slot: Int
        var maxDepth: Int
        var maxNodes: Int
        var tree = DraftTree()
        /// Index into `nodeFeatures` of each node's output feature once expanded, else -1.
        var expanded: [Int] = []
        /// The root's output feature (the input of the depth-1 nodes), once expanded.
        var rootExpanded = -1
    }

    public func propose(_ inputs: [DraftInput], gate: LayerGate?) throws -> [DraftTree] {
        var result = [DraftTree](repeating: DraftTree(), count: inputs.count)
        var growing: [Growing] = []
        for (i, input) in inputs.enumerated() where growing.count < layerRows {
            // The slot's feature must be the one of the row before the root (history.count - 2).
            guard input.maxNodes > 0, input.maxDepth > 0, let root = input.history.last,
                  featurePosition(slot: input.slot) == input.history.count - 2, root >= 0,
                  Int(root) < weights.target.config.vocabularySize else { continue }
            growing.append(Growing(input: i, slot: input.slot, maxDepth: min(input.maxDepth, maxLayers), maxNodes: input.maxNodes))
        }
        guard !growing.isEmpty else { return result }
        let clock = ContinuousClock()
        let start = clock.now
        var usedFeatures = 0
        var frontier = growing.indices.map { FrontierNode(tree: $0, node: -1) }
        var ranLayer = false
        for _ in 1...maxLayers {
            guard !frontier.isEmpty else { break }
            var count = min(frontier.count, layerRows, nodeFeatureCapacity - usedFeatures)
            if let gate {
                // The gate sees trees and frontier by input index.
                var trees = [DraftTree](repeating: DraftTree(), count: inputs.count)
                for g in growing { trees[g.input] = g.tree }
                let candidates = frontier.prefix(count).map { FrontierNode(tree: growing[$0.tree].input, node: $0.node) }
                let spent = (clock.now - start).seconds * 1000
                let chosen = gate.expansion(of: candidates, trees: trees, inputs: inputs, source: DraftSource.learned,
                                            spentMilliseconds: spent, layerMilliseconds: { self.cost.milliseconds(rows: $0) })
                statistics.gatedRows += count - min(max(chosen, 0), count)
                if chosen <= 0 { statistics.gatedLayers += 1 }
                count = min(max(chosen, 0), count)
            }
            guard count > 0 else { break }
            for (r, f) in frontier.prefix(count).enumerated() {
                let g = growing[f.tree]
                if f.node < 0 {
                    rowFeatures[r] = UnsafePointer(slotFeatures + g.slot * d)
                    rowTokens[r] = inputs[g.input].history.last!
                } else {
                    let parent = g.tree.parents[f.node]
                    let source = parent < 0 ? g.rootExpanded : g.expanded[parent]
                    rowFeatures[r] = UnsafePointer(nodeFeatures + source * d)
                    rowTokens[r] = g.tree.tokens[f.node]
                }
            }
            let layerStart = clock.now
            runLayer(rows: count, into: nodeFeatures + usedFeatures * d)
            let ms = (clock.now - layerStart).seconds * 1000
            cost.observe(rows: count, ms: ms)
            statistics.layers += 1
            statistics.rows += count
            statistics.seconds += ms / 1000
            ranLayer = true
            for (r, f) in frontier.prefix(count).enumerated() {
                if f.node < 0 { growing[f.tree].rootExpanded = usedFeatures + r } else { growing[f.tree].expanded[f.node] = usedFeatures + r }
                let found = top(logits + r * k)
                for c in 0..<found {
                    growing[f.tree].tree.add(token: weights.vocabulary[Int(topIDs[c])], parent: f.node, confidence: topValues[c],
                                             source: DraftSource.learned)
                    growing[f.tree].expanded.append(-1)
                }
            }
            usedFeatures += count
            frontier = nextFrontier(growing)
        }
        if ranLayer { statistics.proposals += 1 }
        for g in growing { result[g.input] = g.tree.pruned(to: g.maxNodes) }
        return result
    }

    /// The next layer's candidates, best first by path score (ties: shallower first): per tree its
    /// unexpanded nodes above the depth cap that rank high enough for a child to make the tree's
    /// best `maxNodes`, at most `nodesPerLayer` of them.
    private func nextFrontier(_ growing: [Growing]) -> [FrontierNode] {
        var out: [(score: Float, depth: Int, node: FrontierNode)] = []
        for (t, g) in growing.enumerated() {
            let tree = g.tree
            let order = (0..<tree.count).sorted {
                tree.scores[$0] != tree.scores[$1] ? tree.scores[$0] > tree.scores[$1] : tree.depths[$0] < tree.depths[$1]
            }
            var taken = 0
            for (rank, node) in order.enumerated() {
                guard rank < g.maxNodes - 1, taken < nodesPerLayer else { break }
                guard g.expanded[node] < 0, tree.depths[node] < g.maxDepth else { continue }
                out.append((tree.scores[node], tree.depths[node], FrontierNode(tree: t, node: node)))
                taken += 1
            }
        }
        out.sort { $0.score != $1.score ? $0.score > $1.score : $0.depth < $1.depth }
        return out.map(\.node)
    }

    /// The `width` largest draft logits of a row into `topIDs` (draft-vocabulary indices, most
    /// likely first) with their softmax probabilities over the draft vocabulary into `topValues`.
    private func top(_ row: UnsafePointer<Float>) -> Int {
        let n = min(width, k)
        guard n > 0 else { return 0 }
        let logSumExp = topIDs.withUnsafeMutableBufferPointer { ids in
            topValues.withUnsafeMutableBufferPointer { values in
                Ops.topK(row, count: k, k: n, ids: ids.baseAddress!, values: values.baseAddress!, kernels: weights.target.kernels)
            }
        }
        for j in 0..<n { topValues[j] = expf(topValues[j] - logSumExp) }
        return n
    }

    // MARK: - The forward pass of one layer

    /// Runs rows `0..<rows` of `rowFeatures`/`rowTokens`: writes each row's predicted feature to
    /// `features + row * d` and its draft logits to `logits + row * K`. One matmul per weight for
    /// all rows; every row's result is the same whatever else is in the layer (row-wise kernels).
    private func runLayer(rows n: Int, into features: UnsafeMutablePointer<Float>) {
        let w = weights
        let pool = w.target.pool, kernels = w.target.kernels
        for r in 0..<n {
            let u = joined + r * 2 * d
            w.target.tokenEmbedding(rowTokens[r], into: u)
            w.embeddingNorm.withUnsafeBufferPointer { Ops.rmsNorm(u, weight: $0.baseAddress!, count: d, epsilon: w.epsilon, into: u, kernels: kernels) }
            w.featureNorm.withUnsafeBufferPointer {
                Ops.rmsNorm(rowFeatures[r], weight: $0.baseAddress!, count: d, epsilon: w.epsilon, into: u + d, kernels: kernels)
            }
        }
        activations.quantize(joined, rows: n, inFeatures: 2 * d, pool: pool, kernels: kernels)
        w.input.apply(activations, into: hidden, ldy: d, pool: pool, kernels: kernels)
        w.inputBias.withUnsafeBufferPointer { b in
            w.middleNorm.withUnsafeBufferPointer { g in
                for r in 0..<n {
                    let z = hidden + r * d
                    for j in 0..<d { z[j] += b[j] }
                    Ops.rmsNorm(z, weight: g.baseAddress!, count: d, epsilon: w.epsilon, into: normed + r * d, kernels: kernels)
                }
            }
        }
        activations.quantize(normed, rows: n, inFeatures: d, pool: pool, kernels: kernels)
        w.gateUp.apply(activations, into: gateUpOut, ldy: 2 * m, pool: pool, kernels: kernels)
        for r in 0..<n { Ops.siluMul(gateUpOut + r * 2 * m, gateUpOut + r * 2 * m + m, count: m, kernels: kernels) }
        activations.quantize(gateUpOut, rows: n, inFeatures: m, ldx: 2 * m, pool: pool, kernels: kernels)
        w.down.apply(activations, into: projected, ldy: d, pool: pool, kernels: kernels)
        w.outputNorm.withUnsafeBufferPointer { o in
            for r in 0..<n {
                let f = features + r * d, z = hidden + r * d, y = projected + r * d
                for j in 0..<d { f[j] = z[j] + y[j] }
                Ops.rmsNorm(f, weight: o.baseAddress!, count: d, epsilon: w.epsilon, into: normed + r * d, kernels: kernels)
            }
        }
        activations.quantize(normed, rows: n, inFeatures: d, pool: pool, kernels: kernels)
        w.head.apply(activations, into: logits, ldy: k, pool: pool, kernels: kernels)
        if let cap = w.softcap {
            for i in 0..<(n * k) { logits[i] = cap * tanhf(logits[i] / cap) }
        }
    }

    /// One layer over given inputs, for tests and tools (allocates): `features` `[rows x d]`
    /// and `tokens` `[rows]` in; the predicted features `[rows x d]` and draft logits `[rows x K]` out.
    public func forward(features: [Float], tokens: [Int32]) -> (features: [Float], logits: [Float]) {
        let n = tokens.count
        precondition(n >= 1 && n <= layerRows && features.count == n * d, "forward: \(n) rows of \(d) features, at most \(layerRows) rows")
        var out = [Float](repeating: 0, count: n * d)
        features.withUnsafeBufferPointer { f in
            for r in 0..<n {
                rowFeatures[r] = f.baseAddress! + r * d
                rowTokens[r] = tokens[r]
            }
            out.withUnsafeMutableBufferPointer { runLayer(rows: n, into: $0.baseAddress!) }
        }
        return (out, Array(UnsafeBufferPointer(start: logits, count: n * k)))
    }

    // MARK: - Cost

    /// D measured now: layers of 1, 2, 4, ... `layerRows` rows (second fastest of 5 runs each) on
    /// arbitrary inputs (the cost does not depend on the values).
    private func measureCost() -> LayerCost {
        let clock = ContinuousClock()
        var points: [(rows: Int, ms: Double)] = []
        var rows = 1
        let scratch = nodeFeatures
        while true {
            for r in 0..<rows {
                rowFeatures[r] = UnsafePointer(slotFeatures)
                rowTokens[r] = Int32(r % weights.target.config.vocabularySize)
            }
            runLayer(rows: rows, into: scratch)
            var times: [Double] = []
            for _ in 0..<5 {
                let t = clock.now
                runLayer(rows: rows, into: scratch)
                times.append((clock.now - t).seconds * 1000)
            }
            points.append((rows, times.sorted()[1]))
            if rows == layerRows { break }
            rows = min(rows * 2, layerRows)
        }
        return LayerCost(points: points)
    }
}
