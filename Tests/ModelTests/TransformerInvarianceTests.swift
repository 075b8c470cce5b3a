import Testing
import Kernels
import Model

/// Rows are computed independently of their batch: trees equal chains, chunks equal whole
/// prefills, and sequences batched together equal sequences run alone — bit for bit, on every
/// kernel set and key/value storage type.
@Suite(.serialized) struct TransformerInvarianceTests {
    /// Tokens of "The capital of France is" and some filler, as a fixed prefix.
    static let prefix: [Int32] = [504, 3575, 282, 4649, 314, 7042, 30, 198, 504, 2988, 314, 42]

    /// Deterministic pseudo-random numbers for shapes (seed printed on failure through the test name).
    struct SplitMix {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        mutating func below(_ n: Int) -> Int { Int(next() % UInt64(n)) }
    }

    static let kvTypes = KVCacheType.allCases

    @Test(arguments: TestSupport.simdSets, kvTypes)
    func treeRowsEqualTheirPathsAsChains(kernels: KernelSet, kvCacheType: KVCacheType) throws {
        let seed = UInt64(1 + KVCacheType.allCases.firstIndex(of: kvCacheType)!)
        try TestSupport.withModel(kernels: kernels) { model in
            var rng = SplitMix(state: seed)
            // A random tree of 24 nodes below the cached prefix: node 0 is the root.
            let n = 24
            var parents = [-1]
            var depth = [0]
            var tokens: [Int32] = [Int32(200 + rng.below(3000))]
            for i in 1..<n {
                let p = rng.below(i)
                parents.append(p)
                depth.append(depth[p] + 1)
                tokens.append(Int32(200 + rng.below(3000)))
            }
            let cache = model.makeCache(slots: 1, capacity: 256, type: kvCacheType)
            try model.forward(BatchRow.chain(slot: 0, tokens: Self.prefix, startPosition: 0), cache: cache)
            try cache.commit(slot: 0, rows: 0..<Self.prefix.count)
            let base = Self.prefix.count
            let treeRows = (0..<n).map { BatchRow(slot: 0, token: tokens[$0], position: base + depth[$0], parent: parents[$0]) }
            try model.forward(treeRows, cache: cache)
            let treeLogits = (0..<n).map { model.logitRow($0) }

            for node in 0..<n {
                var path = [node]
                while parents[path[0]] >= 0 { path.insert(parents[path[0]], at: 0) }
                cache.truncate(slot: 0, to: base)
                try model.forward(BatchRow.chain(slot: 0, tokens: path.map { tokens[$0] }, startPosition: base), cache: cache)
                #expect(model.logitRow(0) == treeLogits[node], "\(kernels) \(kvCacheType) seed \(seed): node \(node) (path \(path)) differs from its chain")
            }
        }
    }

    @Test(arguments: TestSupport.simdSets, kvTypes)
    func chunkedPrefillEqualsWholePrefill(kernels: KernelSet, kvCacheType: KVCacheType) throws {
        try TestSupport.withModel(kernels: kernels) { model in
            let tokens = Self.prefix + Self.prefix.reversed() + Self.prefix
            let whole = model.makeCache(slots: 1, capacity: 256, type: kvCacheType)
            try model.forward(BatchRow.chain(slot: 0, tokens: tokens, startPosition: 0, allLogits: true), cache: whole)
            let wholeLogits = (0..<tokens.count).map { model.logitRow($0) }
            for chunk in [1, 5, 16] {
                let cache = model.makeCache(slots: 1, capacity: 256, type: kvCacheType)
                var start = 0
                while start < tokens.count {
                    let piece = tokens[start..<min(start + chunk, tokens.count)]
                    try model.forward(BatchRow.chain(slot: 0, tokens: piece, startPosition: start, allLogits: true), cache: cache)
                    for i in 0..<piece.count {
                        #expect(model.logitRow(i) == wholeLogits[start + i], "\(kernels) \(kvCacheType) chunk \(chunk): position \(start + i)")
                    }
                    try cache.commit(slot: 0, rows: 0..<piece.count)
                    start += piece.count
                }
            }
        }
    }

    @Test(arguments: TestSupport.runnableSets, kvTypes)
    func batchedSequencesEqualSequencesAlone(kernels: KernelSet, kvCacheType: KVCacheType) throws {
        try TestSupport.withModel(kernels: kernels) { model in
            let prompts: [[Int32]] = [Self.prefix, Array(Self.prefix.prefix(3)), [1, 2, 3, 4, 5, 6, 7], [9000]]
            // Alone: each prompt in its own cache, then one decode step.
            var alone: [[Float]] = []
            for p in prompts {
                let cache = model.makeCache(slots: 1, capacity: 64, type: kvCacheType)
                try model.forward(BatchRow.chain(slot: 0, tokens: p, startPosition: 0), cache: cache)
                try cache.commit(slot: 0, rows: 0..<p.count)
                try model.forward([BatchRow(slot: 0, token: 17, position: p.count)], cache: cache)
                alone.append(model.logitRow(0))
            }
            // Together: all prompts prefilled in one step, then one decode row each in one step.
            let cache = model.makeCache(slots: prompts.count, capacity: 64, type: kvCacheType)
            var rows: [BatchRow] = []
            for (s, p) in prompts.enumerated() { rows += BatchRow.chain(slot: s, tokens: p, startPosition: 0, firstRow: rows.count) }
            try model.forward(rows, cache: cache)
            var first = 0
            for (s, p) in prompts.enumerated() {
                try cache.commit(slot: s, rows: first..<(first + p.count))
                first += p.count
            }
            try model.forward(prompts.indices.reversed().map { BatchRow(slot: $0, token: 17, position: prompts[$0].count) }, cache: cache)
            for (i, s) in prompts.indices.reversed().enumerated() {
                #expect(model.logitRow(i) == alone[s], "\(kernels) \(kvCacheType): slot \(s) differs when batched")
            }
        }
    }

    /// Rows attending to more than `Transformer.attentionChunk` positions are split into position
    /// ranges computed apart and merged: still bit for bit the same as a tree, a chain, chunked or
    /// batched.
    @Test(arguments: TestSupport.simdSets)
    func longRowsSplitIntoRangesStayInvariant(kernels: KernelSet) throws {
        try TestSupport.withModel(kernels: kernels) { model in
            let long = (0..<700).map { Int32(300 + ($0 * 37) % 5000) }
            let tree: [(token: Int32, parent: Int)] = [(11, -1), (12, 0), (13, 0), (14, 1), (15, 3)]
            func depth(_ n: Int) -> Int { tree[n].parent < 0 ? 1 : depth(tree[n].parent) + 1 }
            // The prefix in chunks of 128 (the last rows of the prefill itself span two ranges).
            let cache = model.makeCache(slots: 2, capacity: 800)
            var start = 0
            while start < long.count {
                let piece = long[start..<min(start + 128, long.count)]
                try model.forward(BatchRow.chain(slot: 0, tokens: piece, startPosition: start), cache: cache)
                try cache.commit(slot: 0, rows: 0..<piece.count)
                start += piece.count
            }
            let base = long.count
            let rows = tree.enumerated().map { BatchRow(slot: 0, token: $1.token, position: base + depth($0) - 1, parent: $1.parent) }
            try model.forward(rows, cache: cache)
            let treeLogits = (0..<tree.count).map { model.logitRow($0) }
            for node in tree.indices {
                var path = [node]
                while tree[path[0]].parent >= 0 { path.insert(tree[path[0]].parent, at: 0) }
                try model.forward(BatchRow.chain(slot: 0, tokens: path.map { tree[$0].token }, startPosition: base), cache: cache)
                #expect(model.logitRow(0) == treeLogits[node], "\(kernels): node \(node) differs from its chain past 512 positions")
            }
            // Batched with a short sequence in slot 1: the long row's logits do not change.
            try model.forward(BatchRow.chain(slot: 1, tokens: long.prefix(5), startPosition: 0), cache: cache)
            try cache.commit(slot: 1, rows: 0..<5)
            try model.forward([BatchRow(slot: 1, token: 7, position: 5), rows[0]], cache: cache)
            #expect(model.logitRow(1) == treeLogits[0], "\(kernels): a long row changed when batched")
        }
    }

    @Test func invalidRowsAreTypedErrors() throws {
        try TestSupport.withModel { model in
            let cache = model.makeCache(slots: 1, capacity: 8)
            #expect(throws: ModelError.invalidToken(99999, vocabularySize: 49152)) {
                try model.forward([BatchRow(slot: 0, token: 99999, position: 0)], cache: cache)
            }
            #expect(throws: ModelError.invalidSlot(3, slotCount: 1)) {
                try model.forward([BatchRow(slot: 3, token: 1, position: 0)], cache: cache)
            }
            #expect(throws: ModelError.invalidParent(row: 0, parent: -1)) {
                try model.forward([BatchRow(slot: 0, token: 1, position: 5)], cache: cache)
            }
            #expect(throws: ModelError.contextOverflow(slot: 0, needed: 9, capacity: 8)) {
                try model.forward(BatchRow.chain(slot: 0, tokens: [Int32](repeating: 5, count: 9), startPosition: 0), cache: cache)
            }
        }
    }
}
