import Foundation

/// Train-free drafting by token recycling: for every token, the target's own `k` most likely next
/// tokens the last time it was verified with that token as input (an adjacency table over the
/// vocabulary, refreshed from every verification's logits), expanded best-first into a tree and
/// merged with prompt-lookup branches (`NGramDrafter`, source 1).
///
/// Raw confidence of an adjacency edge: the target's probability of the next token as recorded.
/// Memory: `vocabularySize * k` entries (about 3 MiB for 49,152 tokens and k = 8).
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
    /// Top-k scratch for `observe`.
    private var topIDs: [Int32]
    private var topValues: [Float]

    public init(vocabularySize: Int, k: Int = 8, lookup: NGramDrafter = NGramDrafter()) {
        precondition(vocabularySize > 0 && k >= 1)
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

    public func observe(token: Int32, logits: UnsafePointer<Float>, vocabularySize count: Int) {
        let t = Int(token)
        guard t >= 0 && t < vocabularySize && count <= vocabularySize else { return }
        // Top-k by a running threshold (one compare per logit for almost all of them).
        var filled = 0
        var threshold = -Float.infinity
        topIDs.withUnsafeMutableBufferPointer { ids in
            topValues.withUnsafeMutableBufferPointer { values in
                for i in 0..<count {
                    let v = logits[i]
                    guard filled < k || v > threshold else { continue }
                    var at = min(filled, k - 1)
                    while at > 0 && values[at - 1] < v {
                        if at < k { values[at] = values[at - 1]; ids[at] = ids[at - 1] }
                        at -= 1
                    }
                    values[at] = v
                    ids[at] = Int32(i)
                    if filled < k { filled += 1 }
                    threshold = values[filled - 1]
                }
            }
        }
        guard filled == k else { return }
        // Softmax denominator over the logits that matter (within 16 nats of the best).
        let top = topValues[0]
        let floor = top - 16
        var sum: Float = 0
        for i in 0..<count where logits[i] > floor { sum += expf(logits[i] - top) }
        for j in 0..<k {
            next[t * k + j] = topIDs[j]
            probability[t * k + j] = expf(topValues[j] - top) / sum
        }
        known[t] = true
    }

    public func propose(_ inputs: [DraftInput]) -> [DraftTree] {
        inputs.map(propose)
    }

    func propose(_ input: DraftInput) -> DraftTree {
        var tree = DraftTree()
        guard let root = input.history.last, input.maxNodes > 0, input.maxDepth > 0 else { return tree }
        lookup.extend(&tree, history: input.history, maxNodes: input.maxNodes, maxDepth: input.maxDepth, source: 1)
        // Best-first expansion: candidate edges (path score, parent, token, probability).
        var frontier: [(score: Float, parent: Int, token: Int32, probability: Float)] = []
        func offer(below parent: Int) {
            let depth = parent < 0 ? 0 : tree.depths[parent]
            guard depth < input.maxDepth else { return }
            let token = parent < 0 ? root : tree.tokens[parent]
            let base: Float = parent < 0 ? 1 : tree.scores[parent]
            let t = Int(token)
            guard t >= 0 && t < vocabularySize && known[t] else { return }
            for j in 0..<k where tree.child(of: parent, token: next[t * k + j]) == nil {
                let p = probability[t * k + j]
                frontier.append((base * p, parent, next[t * k + j], p))
            }
        }
        offer(below: -1)
        for node in 0..<tree.count { offer(below: node) }
        while tree.count < input.maxNodes, !frontier.isEmpty {
            var best = 0
            for i in 1..<frontier.count where frontier[i].score > frontier[best].score { best = i }
            let edge = frontier.remove(at: best)
            guard tree.child(of: edge.parent, token: edge.token) == nil else { continue }
            let node = tree.add(token: edge.token, parent: edge.parent, confidence: edge.probability)
            offer(below: node)
        }
        return tree
    }
}
