/// Train-free drafting by prompt lookup: the longest recent suffix of the sequence (up to
/// `maxNGram` tokens) is searched for earlier in the sequence (prompt and generated text), and
/// the tokens that followed its most recent occurrences become candidate branches. Strong on
/// summarise, retrieval and code, where the output repeats the input.
///
/// Raw confidences: a branch's first edge gets (matched length / `maxNGram`) times the share of
/// occurrences that support it; deeper edges along a matched continuation get the match's
/// length confidence. `ScoreCalibration` turns them into acceptance probabilities.
public final class NGramDrafter: Drafter {
    public let name = "ngram"
    public let maxNGram: Int
    public let minNGram = 1
    /// Distinct continuations kept per step (branches of the tree).
    public let maxBranches: Int
    /// Most recent occurrences of the suffix considered.
    public let maxOccurrences = 8

    public init(maxNGram: Int = 4, maxBranches: Int = 3) {
        precondition(maxNGram >= 1 && maxBranches >= 1)
        self.maxNGram = maxNGram
        self.maxBranches = maxBranches
    }

    public func propose(_ inputs: [DraftInput]) -> [DraftTree] {
        inputs.map { input in
            var tree = DraftTree()
            extend(&tree, history: input.history, maxNodes: input.maxNodes, maxDepth: input.maxDepth)
            return tree
        }
    }

    /// Adds prompt-lookup branches below the root of `tree` (merging with nodes already there,
    /// whose confidence is raised to the lookup's when higher), within the caps.
    public func extend(_ tree: inout DraftTree, history: [Int32], maxNodes: Int, maxDepth: Int, source: UInt8 = DraftSource.promptLookup) {
        let n = history.count
        guard n >= 2, maxNodes > 0, maxDepth > 0 else { return }
        for size in stride(from: min(maxNGram, n - 1), through: minNGram, by: -1) {
            // Occurrences of the last `size` tokens ending before the end, most recent first.
            var starts: [Int] = []
            var end = n - 1
            while end >= size && starts.count < maxOccurrences {
                var match = true
                for k in 0..<size where history[end - size + k] != history[n - size + k] { match = false; break }
                if match { starts.append(end) }
                end -= 1
            }
            guard !starts.isEmpty else { continue }
            let lengthConfidence = Float(size) / Float(maxNGram)
            var branches = 0
            var added = false
            for start in starts where branches < maxBranches {
                var parent = -1
                var depth = 0
                var position = start
                let support = Float(starts.count - branches) / Float(starts.count)
                var grew = false
                while position < n && depth < maxDepth {
                    let token = history[position]
                    depth += 1
                    let confidence = lengthConfidence * (depth == 1 ? support : 1)
                    if let existing = tree.child(of: parent, token: token) {
                        if tree.confidences[existing] < confidence { tree.confidences[existing] = confidence }
                        parent = existing
                    } else {
                        guard tree.count < maxNodes else { break }
                        parent = tree.add(token: token, parent: parent, confidence: confidence, source: source)
                        grew = true
                    }
                    position += 1
                }
                if grew { branches += 1; added = true }
            }
            if added { break }
        }
        let confidences = tree.confidences
        tree.rescore { confidences[$0] }
    }
}
