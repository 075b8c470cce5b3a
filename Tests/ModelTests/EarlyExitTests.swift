import Testing
import Model

/// The early-exit forward (first k layers, then the output norm and head) used by self-speculative
/// drafting: the full depth is the normal forward, leading layers compute exactly what the full
/// forward computes (so the target's cache serves it), trees equal chains, and rows computed in
/// several calls (`computedRows`) equal rows computed in one.
@Suite(.serialized) struct EarlyExitTests {
    static let prefix = TransformerInvarianceTests.prefix
    /// A small tree below the prefix: parents (-1 = follows the cache) and tokens.
    static let treeParents = [-1, 0, 0, 1, 1, 2, 3, 5, -1, 8]
    static let treeTokens: [Int32] = [2988, 314, 7042, 30, 198, 504, 42, 282, 3575, 4649]

    static func treeRows(base: Int) -> [BatchRow] {
        var depth: [Int] = []
        var rows: [BatchRow] = []
        for (i, p) in treeParents.enumerated() {
            depth.append(p < 0 ? 0 : depth[p] + 1)
            rows.append(BatchRow(slot: 0, token: treeTokens[i], position: base + depth[i], parent: p))
        }
        return rows
    }

    /// A cache holding the prefix, prefilled by the full forward.
    static func prefilled(_ model: Transformer, layers: Int? = nil) throws -> KVCache {
        let cache = model.makeCache(slots: 1, capacity: 128)
        let rows = BatchRow.chain(slot: 0, tokens: prefix, startPosition: 0)
        try model.forward(rows, cache: cache, layers: layers ?? model.config.layerCount)
        try cache.commit(slot: 0, rows: 0..<prefix.count)
        return cache
    }

    @Test func allLayersIsTheFullForwardBitForBit() throws {
        try TestSupport.withModel { model in
            let cache = try Self.prefilled(model)
            let rows = Self.treeRows(base: Self.prefix.count)
            try model.forward(rows, cache: cache)
            let full = (0..<rows.count).map { model.logitRow($0) }
            let count = try model.forward(rows, cache: cache, layers: model.config.layerCount)
            #expect(count == rows.count)
            for i in rows.indices { #expect(model.logitRow(i) == full[i], "row \(i)") }
        }
    }

    /// Layers below k of an early-exit prefill write the same keys and values as the full
    /// prefill: committing either and then running the same early-exit row gives the same logits
    /// (the deeper layers' committed values differ, and the early-exit forward never reads them).
    @Test(arguments: [1, 8, 15, 29])
    func leadingLayersMatchTheFullForward(layers: Int) throws {
        try TestSupport.withModel { model in
            let next = BatchRow(slot: 0, token: 17, position: Self.prefix.count)
            let fromFull = try Self.prefilled(model)
            try model.forward([next], cache: fromFull, layers: layers)
            let reference = model.logitRow(0)
            let fromPartial = try Self.prefilled(model, layers: layers)
            try model.forward([next], cache: fromPartial, layers: layers)
            #expect(model.logitRow(0) == reference)
            // Not the full model: exiting early changes the logits.
            try model.forward([next], cache: fromPartial)
            #expect(model.logitRow(0) != reference)
        }
    }

    @Test(arguments: [6, 15])
    func earlyExitTreeRowsEqualTheirPathsAsChains(layers: Int) throws {
        try TestSupport.withModel { model in
            let cache = try Self.prefilled(model)
            let base = Self.prefix.count
            let rows = Self.treeRows(base: base)
            try model.forward(rows, cache: cache, layers: layers)
            let treeLogits = (0..<rows.count).map { model.logitRow($0) }
            for node in rows.indices {
                var path = [node]
                while Self.treeParents[path[0]] >= 0 { path.insert(Self.treeParents[path[0]], at: 0) }
                try model.forward(BatchRow.chain(slot: 0, tokens: path.map { Self.treeTokens[$0] }, startPosition: base),
                                  cache: cache, layers: layers)
                #expect(model.logitRow(0) == treeLogits[node], "node \(node) (path \(path)) differs from its chain")
            }
        }
    }

    /// Growing the tree level by level (each call computes only the new rows, the earlier ones
    /// serving as ancestors from the step area) equals computing it in one call.
    @Test(arguments: [10, 30])
    func rowsComputedLevelByLevelEqualOneCall(layers: Int) throws {
        try TestSupport.withModel { model in
            let cache = try Self.prefilled(model)
            let rows = Self.treeRows(base: Self.prefix.count)
            try model.forward(rows, cache: cache, layers: layers)
            let together = (0..<rows.count).map { model.logitRow($0) }
            var done = 0
            for end in [1, 3, 5, 9, rows.count] {
                let count = try model.forward(Array(rows[..<end]), cache: cache, layers: layers, computedRows: done)
                #expect(count == end - done)
                for i in done..<end { #expect(model.logitRow(i - done) == together[i], "row \(i) computed after \(done)") }
                done = end
            }
            // Rows that do not want logits are computed (as ancestors) but write none.
            var quiet = rows
            quiet[3].wantsLogits = false
            #expect(try model.forward(quiet, cache: cache, layers: layers, computedRows: 2) == rows.count - 3)
        }
    }

    /// Layer skipping: a list of every layer is the full forward, trees equal chains when middle
    /// layers are skipped, computing rows in several calls equals one, and a head shortlist
    /// computes the same logits for the tokens it covers.
    @Test func layerListsAndHeadShortlists() throws {
        try TestSupport.withModel { model in
            let cache = try Self.prefilled(model)
            let base = Self.prefix.count
            let rows = Self.treeRows(base: base)
            try model.forward(rows, cache: cache)
            let full = (0..<rows.count).map { model.logitRow($0) }
            try model.forward(rows, cache: cache, only: Array(0..<model.config.layerCount))
            for i in rows.indices { #expect(model.logitRow(i) == full[i], "row \(i)") }

            let skipping = Array(0..<5) + Array(8..<30)
            try model.forward(rows, cache: cache, only: skipping)
            let tree = (0..<rows.count).map { model.logitRow($0) }
            #expect(tree[0] != full[0])
            for node in rows.indices {
                var path = [node]
                while Self.treeParents[path[0]] >= 0 { path.insert(Self.treeParents[path[0]], at: 0) }
                try model.forward(BatchRow.chain(slot: 0, tokens: path.map { Self.treeTokens[$0] }, startPosition: base),
                                  cache: cache, only: skipping)
                #expect(model.logitRow(0) == tree[node], "node \(node) (path \(path)) differs from its chain")
            }
            try model.forward(Array(rows[..<4]), cache: cache, only: skipping)
            try model.forward(rows, cache: cache, only: skipping, computedRows: 4)
            for i in 4..<rows.count { #expect(model.logitRow(i - 4) == tree[i], "row \(i) computed after 4") }

            let head = 1000
            try model.forward(rows, cache: cache, only: skipping, headTokens: head)
            for i in rows.indices { #expect(Array(model.logitRow(i)[..<head]) == Array(tree[i][..<head]), "row \(i)") }

            #expect(throws: ModelError.invalidLayerList([3, 3], available: 30)) {
                try model.forward(rows, cache: cache, only: [3, 3])
            }
            #expect(throws: ModelError.invalidLayerList([0, 30], available: 30)) {
                try model.forward(rows, cache: cache, only: [0, 30])
            }
        }
    }

    @Test func invalidLayerCountsAreTypedErrors() throws {
        try TestSupport.withModel { model in
            let cache = model.makeCache(slots: 1, capacity: 8)
            let row = [BatchRow(slot: 0, token: 1, position: 0)]
            #expect(throws: ModelError.invalidLayerCount(requested: 0, available: 30)) {
                try model.forward(row, cache: cache, layers: 0)
            }
            #expect(throws: ModelError.invalidLayerCount(requested: 31, available: 30)) {
                try model.forward(row, cache: cache, layers: 31)
            }
        }
    }
}
