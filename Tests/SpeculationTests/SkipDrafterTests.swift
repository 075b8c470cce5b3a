import Foundation
import Testing
import GGUF
import Kernels
import Model
import Speculation

/// The skip drafter on the real default model: at full depth it is exactly the target (its best
/// child is the greedy token, a width-1 tree is the greedy continuation), and its trees are valid.
@Suite(.serialized) struct SkipDrafterTests {
    static let modelPath = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("models/SmolLM2-135M-Instruct.Q4_1.gguf").path

    struct MissingModel: Error, CustomStringConvertible {
        var description: String { "default model missing at \(SkipDrafterTests.modelPath): run `make model` (make test does it first)" }
    }

    static let model: Result<Transformer, Error> = Result {
        guard FileManager.default.fileExists(atPath: modelPath) else { throw MissingModel() }
        return try Transformer(file: GGUFFile(path: modelPath), threads: 2, maxStepRows: 160, maxLogitRows: 64, maxContext: 512)
    }

    /// Prompts as token ids (fixed, so the test needs no tokenizer).
    static let prompts: [[Int32]] = [
        [504, 3575, 282, 4649, 314],
        [1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 3365, 3511, 308, 34519, 28, 7018, 411, 407, 19712, 8182, 2, 198, 1, 4093, 198],
        [504, 2988, 314, 42, 30, 198, 504, 3575, 282],
        [21, 28, 216, 22, 28, 216, 23, 28, 216],
        [9000],
    ]

    /// A cache with every prompt but its last token committed in its own slot (as the engine
    /// leaves it before a decode step), by the full forward.
    static func prefilled(_ model: Transformer, _ prompts: [[Int32]]) throws -> KVCache {
        let cache = model.makeCache(slots: prompts.count, capacity: 256)
        for (s, p) in prompts.enumerated() where p.count > 1 {
            try model.forward(BatchRow.chain(slot: s, tokens: p.dropLast(), startPosition: 0), cache: cache)
            try cache.commit(slot: s, rows: 0..<(p.count - 1))
        }
        return cache
    }

    /// The target's greedy continuation of `prompt`, `count` tokens, in a scratch slot.
    static func greedy(_ model: Transformer, _ prompt: [Int32], count: Int) throws -> [Int32] {
        let cache = model.makeCache(slots: 1, capacity: 256)
        try model.forward(BatchRow.chain(slot: 0, tokens: prompt, startPosition: 0), cache: cache)
        try cache.commit(slot: 0, rows: 0..<prompt.count)
        var out = [Ops.argmax(model.logits, count: model.config.vocabularySize)]
        while out.count < count {
            try model.forward([BatchRow(slot: 0, token: out.last!, position: cache.lengths[0])], cache: cache)
            try cache.commit(slot: 0, rows: 0..<1)
            out.append(Ops.argmax(model.logits, count: model.config.vocabularySize))
        }
        return out
    }

    @Test func fullDepthBestChildIsTheTargetsGreedyToken() throws {
        let model = try Self.model.get()
        let cache = try Self.prefilled(model, Self.prompts)
        let drafter = try SkipDrafter(model: model, cache: cache, layers: model.config.layerCount)
        let inputs = Self.prompts.enumerated().map { DraftInput(slot: $0.offset, history: $0.element, maxNodes: 6, maxDepth: 3) }
        let trees = try drafter.propose(inputs)
        #expect(trees.count == inputs.count)
        for (s, p) in Self.prompts.enumerated() {
            let expected = try Self.greedy(model, p, count: 1)[0]
            let rootChildren = trees[s].children(of: -1)
            try #require(!rootChildren.isEmpty, "prompt \(s): no children")
            let best = rootChildren.max { trees[s].confidences[$0] < trees[s].confidences[$1] }!
            #expect(trees[s].tokens[best] == expected, "prompt \(s)")
            #expect(trees[s].confidences[best] > 0 && trees[s].confidences[best] <= 1)
        }
        // Nothing committed: the drafter leaves the cache as it found it.
        #expect(cache.lengths == Self.prompts.map { $0.count - 1 })
    }

    @Test func fullDepthChainIsTheGreedyContinuation() throws {
        let model = try Self.model.get()
        let prompts = Array(Self.prompts.prefix(3))
        let cache = try Self.prefilled(model, prompts)
        let drafter = try SkipDrafter(model: model, cache: cache, layers: model.config.layerCount, width: 1)
        let depth = 6
        let trees = try drafter.propose(prompts.enumerated().map {
            DraftInput(slot: $0.offset, history: $0.element, maxNodes: depth, maxDepth: depth)
        })
        for (s, p) in prompts.enumerated() {
            #expect(trees[s].parents == [-1] + Array(0..<(depth - 1)), "prompt \(s): a chain")
            #expect(trees[s].tokens == (try Self.greedy(model, p, count: depth)), "prompt \(s)")
        }
        #expect(drafter.statistics.levels == depth)
    }

    @Test(arguments: [(8, 3, 24, 5), (6, 2, 10, 8), (15, 4, 1, 4), (20, 3, 40, 2)])
    func treesAreValidAndWithinTheirBudgets(layers: Int, width: Int, maxNodes: Int, maxDepth: Int) throws {
        let model = try Self.model.get()
        let cache = try Self.prefilled(model, Self.prompts)
        let drafter = try SkipDrafter(model: model, cache: cache, layers: layers, width: width, levelRows: 24)
        var inputs = Self.prompts.enumerated().map {
            DraftInput(slot: $0.offset, history: $0.element, maxNodes: maxNodes, maxDepth: maxDepth)
        }
        inputs[1].maxDepth = 1
        inputs[2].maxNodes = 0
        inputs[3].history.append(7)  // the cache does not hold everything before this root: no tree
        let trees = try drafter.propose(inputs)
        #expect(trees[2].isEmpty && trees[3].isEmpty)
        for (s, tree) in trees.enumerated() {
            #expect(tree.count <= inputs[s].maxNodes)
            #expect(tree.maxDepth <= inputs[s].maxDepth)
            for i in 0..<tree.count {
                let p = tree.parents[i]
                #expect(p < i)
                #expect(tree.depths[i] == (p < 0 ? 1 : tree.depths[p] + 1))
                #expect(p < 0 || tree.scores[i] <= tree.scores[p])
                #expect(tree.confidences[i] >= 0 && tree.confidences[i] <= 1)
            }
            for parent in [-1] + Array(0..<tree.count) {
                let tokens = tree.children(of: parent).map { tree.tokens[$0] }
                #expect(tokens.count <= width && Set(tokens).count == tokens.count)
            }
        }
        // Budgets are filled: the first tree has as many nodes as its caps allow.
        let complete = (1...maxDepth).reduce(0) { $0 + Int(pow(Double(width), Double($1))) }
        #expect(trees[0].count == min(maxNodes, complete))
        #expect(trees[1].count == min(maxNodes, width) && trees[1].maxDepth == 1)
        #expect(cache.lengths == Self.prompts.map { $0.count - 1 })
    }

    /// The default drafter skips a few early-middle layers and shortlists the head; it must still
    /// agree with the target's greedy token for most of the prompts at depth 1 (an early exit
    /// after 20 layers agrees for about one in ten tokens).
    @Test func defaultDrafterSkipsMiddleLayersAndMostlyAgrees() throws {
        let model = try Self.model.get()
        #expect(SkipDrafter.defaultLayers(layerCount: 30) == Array(0..<5) + Array(8..<30))
        let cache = try Self.prefilled(model, Self.prompts)
        let drafter = try SkipDrafter(model: model, cache: cache)
        #expect(drafter.headTokens == SkipDrafter.defaultHeadTokens)
        let trees = try drafter.propose(Self.prompts.enumerated().map {
            DraftInput(slot: $0.offset, history: $0.element, maxNodes: 8, maxDepth: 3)
        })
        var agree = 0
        for (s, p) in Self.prompts.enumerated() {
            let best = trees[s].children(of: -1).max { trees[s].confidences[$0] < trees[s].confidences[$1] }
            if let best, trees[s].tokens[best] == (try Self.greedy(model, p, count: 1)[0]) { agree += 1 }
            #expect(trees[s].tokens.allSatisfy { Int($0) < SkipDrafter.defaultHeadTokens })
        }
        #expect(agree >= 3, "\(agree) of \(Self.prompts.count) prompts agree")
    }

    @Test func invalidSettingsAreTypedErrors() throws {
        let model = try Self.model.get()
        let cache = model.makeCache(slots: 1, capacity: 16)
        #expect(throws: SpeculationError.invalidSkipLayers(requested: 31, available: 30)) {
            try SkipDrafter(model: model, cache: cache, layers: 31)
        }
        #expect(throws: SpeculationError.invalidSkipLayers(requested: 0, available: 30)) {
            try SkipDrafter(model: model, cache: cache, layers: 0)
        }
        #expect(throws: SpeculationError.invalidLayerList([4, 2], available: 30)) {
            try SkipDrafter(model: model, cache: cache, layers: [4, 2])
        }
        #expect(throws: SpeculationError.invalidHeadTokens(0, vocabularySize: 49152)) {
            try SkipDrafter(model: model, cache: cache, layers: [0, 29], headTokens: 0)
        }
        #expect(throws: SpeculationError.invalidDraftWidth(parameter: "width", value: 0)) {
            try SkipDrafter(model: model, cache: cache, layers: 4, width: 0)
        }
    }
}
