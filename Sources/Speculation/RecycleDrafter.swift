import Foundation
import Kernels

/// Train-free drafting by token recycling: for every token, the target's own `k` most likely next
/// tokens the last time it was verified with that token as input (an adjacency table over the
/// vocabulary, refreshed from every verification's logits), expanded best-first into a tree and
/// merged with prompt-lookup branches (`NGramDrafter`, source 1). A second table keyed by the
/// last two tokens (hashed, `pairSlots` entries) is preferred where it has an entry (source 2):
/// more context, sharper successors.
///
/// Raw confidence of an adjacency edge: the target's probability of the next token as recorded.
/// Memory: `(vocabularySize + pairSlots) * k` entries (about 7 MiB for 49,152 tokens, 65,536
/// pair slots and k = 8).
/// Thread-safety: engine thread only.
public final class RecycleDrafter: Drafter {
    public let name = "recycle"
    /// Next tokens kept per token.
    public let k: Int
    public let vocabularySize: Int
    let lookup: NGramDrafter
    /// `[token][k]` next tokens and their probabilities; `known[token]` once observed.
    private var next: [Int32]
    private var probability: [Float]
    private var known: [Bool]
    /// `[pair slot][k]` the same for (previous, token) pairs; `pairKey[slot]` the pair held (-1: none).
    public let pairSlots: Int
    private var pairNext: [Int32]
    private var pairProbability: [Float]
    private var pairKey: [Int64]
    /// Top-k scratch for `observe` (`Ops.topK`: two SIMD passes over the logits).
    private var topIDs: [Int32]
    private var topValues: [Float]

    public init(vocabularySize: Int, k: Int = 8, pairSlots: Int = 1 << 16, lookup: NGramDrafter = NGramDrafter()) {
        precondition(vocabularySize > 0 && k >= 1 && pairSlots >= 1)
        self.pairSlots = pairSlots
        pairNext = [Int32](repeating: 0, count: pairSlots * k)
        pairProbability = [Float](repeating: 0, count: pairSlots * k)
        pairKey = [Int64](repeating: -1, count: pairSlots)
        self.vocabularySize = vocabularySize
        self.k = k
        self.lookup = lookup
        next = [Int32](repeating: 0, count: vocabularySize * k)
        probability = [Float](repeating: 0, count: vocabularySize * k)
        known = [Bool](repeating: false, count: vocabularySize)
        topIDs = [Int32](repeating: 0, count: k)
        topValues = [Float](repeating: 0, count: k)
    }

    /// The recorded next tokens of `token` with their probabilities, most likely first (empty
    /// until observed).
    public func successors(of token: Int32) -> [(id: Int32, probability: Float)] {
        let t = Int(token)
        guard t >= 0 && t < vocabularySize && known[t] else { return [] }
        return (0..<k).map { (next[t * k + $0], probability[t * k + $0]) }
    }

    static func pair(_ previous: Int32, _ token: Int32) -> Int64 { Int64(previous) << 32 | Int64(UInt32(bitPattern: token)) }

    func pairSlot(_ key: Int64) -> Int {
        Int(truncatingIfNeeded: (UInt64(bitPattern: key) &* 0x9E37_79B9_7F4A_7C15) >> 40) % pairSlots
    }

    /// The recorded next tokens after the pair (`previous`, `token`), most likely first (empty
    /// until observed, or when another pair took its slot since).
    public func successors(after previous: Int32, _ token: Int32) -> [(id: Int32, probability: Float)] {
        let key = Self.pair(previous, token)
        let slot = pairSlot(key)
        guard previous >= 0, pairKey[slot] == key else { return [] }
        return (0..<k).map { (pairNext[slot * k + $0], pairProbability[slot * k + $0]) }
    }

    public func observe(previous: Int32, token: Int32, logits: UnsafePointer<Float>, vocabularySize count: Int) {
        let t = Int(token)
        guard t >= 0 && t < vocabularySize && count <= vocabularySize && count >= k else { return }
        let logSumExp = topIDs.withUnsafeMutableBufferPointer { ids in
            topValues.withUnsafeMutableBufferPointer { values in
                Ops.topK(logits, count: count, k: k, ids: ids.baseAddress!, values: values.baseAddress!)
            }
        }
        for j in 0..<k {
            next[t * k + j] = topIDs[j]
            probability[t * k + j] = expf(topValues[j] - logSumExp)
        }
        known[t] = true
        guard previous >= 0 else { return }
        let key = Self.pair(previous, token)
        let slot = pairSlot(key)
        pairKey[slot] = key
        for j in 0..<k {
            pairNext[slot * k + j] = topIDs[j]
            pairProbability[slot * k + j] = probability[t * k + j]
        }
    }

    // MARK: - Persistence

    /// File header: magic, format version, vocabulary size, k, pair slots.
    private static let magic: UInt32 = 0x5452_5343  // "CSRT"
    private static let version: UInt32 = 1

    /// The tables are the state worth keeping (`save(to:)`).
    public func saveState(to path: String) throws { try save(to: path) }

    /// Writes the tables to `path` (atomically: a temporary file, then a rename), so a restart keeps
    /// what verification taught them. About 7 MiB for a 49,152-token vocabulary.
    public func save(to path: String) throws {
        var data = Data()
        func put<T>(_ values: [T]) { values.withUnsafeBytes { data.append(contentsOf: $0) } }
        put([Self.magic, Self.version, UInt32(vocabularySize), UInt32(k), UInt32(pairSlots)])
        put(next)
        put(probability)
        put(known.map { $0 ? UInt8(1) : 0 })
        put(pairNext)
        put(pairProbability)
        put(pairKey)
        let directory = (path as NSString).deletingLastPathComponent
        if !directory.isEmpty { try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true) }
        let temporary = path + ".tmp-\(getpid())"
        try data.write(to: URL(fileURLWithPath: temporary))
        guard rename(temporary, path) == 0 else {
            try? FileManager.default.removeItem(atPath: temporary)
            throw CocoaError(.fileWriteUnknown)
        }
    }

    /// Replaces the tables with those saved at `path`; false (changing nothing) when the file is
    /// missing, damaged, or was saved for another vocabulary size, k or pair-slot count.
    @discardableResult
    public func load(from path: String) -> Bool {
        guard let data = FileManager.default.contents(atPath: path) else { return false }
        let header = 5 * 4
        let sizes = [next.count * 4, probability.count * 4, known.count, pairNext.count * 4, pairProbability.count * 4, pairKey.count * 8]
        guard data.count == header + sizes.reduce(0, +) else { return false }
        return data.withUnsafeBytes { raw -> Bool in
            let h = (0..<5).map { raw.loadUnaligned(fromByteOffset: $0 * 4, as: UInt32.self) }
            guard h == [Self.magic, Self.version, UInt32(vocabularySize), UInt32(k), UInt32(pairSlots)] else { return false }
            var offset = header
            func take<T>(_ count: Int, _ type: T.Type) -> [T] {
                let values = (0..<count).map { raw.loadUnaligned(fromByteOffset: offset + $0 * MemoryLayout<T>.size, as: T.self) }
                offset += count * MemoryLayout<T>.size
                return values
            }
            next = take(next.count, Int32.self)
            probability = take(probability.count, Float.self)
            known = take(known.count, UInt8.self).map { $0 != 0 }
            pairNext = take(pairNext.count, Int32.self)
            pairProbability = take(pairProbability.count, Float.self)
            pairKey = take(pairKey.count, Int64.self)
            return true
        }
    }

    public func propose(_ inputs: [DraftInput]) -> [DraftTree] {
        inputs.map(propose)
    }

    func propose(_ input: DraftInput) -> DraftTree {
        var tree = DraftTree()
        guard let root = input.history.last, input.maxNodes > 0, input.maxDepth > 0 else { return tree }
        lookup.extend(&tree, history: input.history, maxNodes: input.maxNodes, maxDepth: input.maxDepth, source: DraftSource.promptLookup)
        // Best-first expansion: candidate edges (path score, parent, token, probability).
        var frontier: [(score: Float, parent: Int, token: Int32, probability: Float, source: UInt8)] = []
        func offer(below parent: Int) {
            let depth = parent < 0 ? 0 : tree.depths[parent]
            guard depth < input.maxDepth else { return }
            let token = parent < 0 ? root : tree.tokens[parent]
            let previous: Int32 = parent < 0 ? (input.history.count >= 2 ? input.history[input.history.count - 2] : -1)
                : (tree.parents[parent] < 0 ? root : tree.tokens[tree.parents[parent]])
            let base: Float = parent < 0 ? 1 : tree.scores[parent]
            let key = Self.pair(previous, token)
            let slot = pairSlot(key)
            if previous >= 0 && pairKey[slot] == key {
                for j in 0..<k where tree.child(of: parent, token: pairNext[slot * k + j]) == nil {
                    let p = pairProbability[slot * k + j]
                    frontier.append((base * p, parent, pairNext[slot * k + j], p, DraftSource.recyclePair))
                }
                return
            }
            let t = Int(token)
            guard t >= 0 && t < vocabularySize && known[t] else { return }
            for j in 0..<k where tree.child(of: parent, token: next[t * k + j]) == nil {
                let p = probability[t * k + j]
                frontier.append((base * p, parent, next[t * k + j], p, DraftSource.recycle))
            }
        }
        offer(below: -1)
        for node in 0..<tree.count { offer(below: node) }
        while tree.count < input.maxNodes, !frontier.isEmpty {
            var best = 0
            for i in 1..<frontier.count where frontier[i].score > frontier[best].score { best = i }
            let edge = frontier.remove(at: best)
            guard tree.child(of: edge.parent, token: edge.token) == nil else { continue }
            let node = tree.add(token: edge.token, parent: edge.parent, confidence: edge.probability, source: edge.source)
            offer(below: node)
        }
        return tree
    }
}
