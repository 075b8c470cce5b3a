/// Train-free drafting from everything the server has generated (after SuffixDecoding, arXiv
/// 2411.04975): finished requests' texts (prompt and output) go into one global corpus, bounded
/// in memory (a ring of `capacity` tokens: the oldest text is overwritten first), indexed by the
/// hashes of its short n-grams. To draft for a sequence, the longest of its recent suffixes (up to
/// `maxMatch` tokens) that occurs in the corpus is looked up, the continuations that followed its
/// occurrences are merged into a trie, and every edge gets the share of the occurrences through
/// its parent that continue with it: frequency-scored continuations, strongest where the server
/// sees repeated or templated text (agent loops, extraction, code edits).
///
/// Memory: the ring (`capacity` x 4 bytes) and the index (`indexSlots` x (8 + 8 x
/// `occurrencesPerSlot`) bytes): about 4 + 10 MiB with the defaults.
/// Thread-safety: engine thread only.
public final class SuffixDrafter: Drafter {
    public let name = "suffix"
    /// Tokens the corpus keeps.
    public let capacity: Int
    /// Longest suffix matched, and the n-gram lengths indexed (longest first).
    public let maxMatch: Int
    let lengths: [Int]
    /// Most recent occurrences kept per n-gram, and occurrences merged per draft.
    public let occurrencesPerSlot: Int
    public let indexSlots: Int

    /// The ring of tokens; `written` counts every token ever appended (global index), `boundary`
    /// marks the first token of each document.
    private var ring: [Int32]
    private var startsDocument: [Bool]
    public private(set) var written: Int = 0
    /// Index slots: the n-gram hash held and the global indices of the tokens that followed its
    /// most recent occurrences (a small ring per slot; -1: empty).
    private var slotKey: [UInt64]
    private var slotNext: [Int]
    private var slotCursor: [UInt8]

    public init(capacity: Int = 1 << 20, maxMatch: Int = 8, occurrencesPerSlot: Int = 8, indexSlots: Int = 1 << 17) {
        precondition(capacity >= 16 && maxMatch >= 1 && occurrencesPerSlot >= 1 && occurrencesPerSlot <= 255 && indexSlots >= 1)
        self.capacity = capacity
        self.maxMatch = maxMatch
        lengths = [8, 6, 4, 3, 2, 1].filter { $0 <= maxMatch }
        self.occurrencesPerSlot = occurrencesPerSlot
        self.indexSlots = indexSlots
        ring = [Int32](repeating: -1, count: capacity)
        startsDocument = [Bool](repeating: false, count: capacity)
        slotKey = [UInt64](repeating: 0, count: indexSlots)
        slotNext = [Int](repeating: -1, count: indexSlots * occurrencesPerSlot)
        slotCursor = [UInt8](repeating: 0, count: indexSlots)
    }

    // MARK: - Corpus

    /// Appends one finished document (a request's prompt and output) to the corpus.
    public func record(document tokens: [Int32]) {
        guard tokens.count >= 2 else { return }
        let start = written
        for (i, t) in tokens.enumerated() {
            let g = written
            ring[g % capacity] = t
            startsDocument[g % capacity] = i == 0
            written += 1
            // Index the n-grams ending at the previous token: their continuation starts here.
            for n in lengths where g - n >= start {
                let key = Self.hash(n: n) { ring[(g - n + $0) % capacity] }
                insert(key: key, next: g)
            }
        }
    }

    /// Whether global index g still holds its token (not overwritten by newer text).
    @inline(__always) private func alive(_ g: Int) -> Bool { g >= 0 && g < written && g >= written - capacity }

    private func insert(key: UInt64, next g: Int) {
        let slot = Int(key % UInt64(indexSlots))
        if slotKey[slot] != key {
            slotKey[slot] = key
            for i in 0..<occurrencesPerSlot { slotNext[slot * occurrencesPerSlot + i] = -1 }
            slotCursor[slot] = 0
        }
        let c = Int(slotCursor[slot])
        slotNext[slot * occurrencesPerSlot + c] = g
        slotCursor[slot] = UInt8((c + 1) % occurrencesPerSlot)
    }

    /// FNV-1a over n tokens (and n itself), never 0.
    static func hash(n: Int, _ token: (Int) -> Int32) -> UInt64 {
        var h: UInt64 = 0xCBF2_9CE4_8422_2325 ^ UInt64(n)
        for i in 0..<n {
            h = (h ^ UInt64(UInt32(bitPattern: token(i)))) &* 0x0000_0100_0000_01B3
        }
        return h == 0 ? 1 : h
    }

    /// Global indices where the last `n` tokens of `history` occurred in the corpus and what
    /// followed them begins (most recent first, verified token by token).
    func occurrences(of history: [Int32], n: Int) -> [Int] {
        guard history.count >= n else { return [] }
        let base = history.count - n
        let key = Self.hash(n: n) { history[base + $0] }
        let slot = Int(key % UInt64(indexSlots))
        guard slotKey[slot] == key else { return [] }
        var found: [Int] = []
        for i in 0..<occurrencesPerSlot {
            let g = slotNext[slot * occurrencesPerSlot + i]
            guard g >= n, alive(g - n), alive(g) else { continue }
            var match = true
            for k in 0..<n where ring[(g - n + k) % capacity] != history[base + k] { match = false; break }
            if match && !found.contains(g) { found.append(g) }
        }
        return found.sorted(by: >)
    }

    // MARK: - Drafting

    public func finished(history: [Int32]) { record(document: history) }

    public func propose(_ inputs: [DraftInput]) -> [DraftTree] {
        inputs.map { input in
            var tree = DraftTree()
            extend(&tree, history: input.history, maxNodes: input.maxNodes, maxDepth: input.maxDepth)
            return tree
        }
    }

    /// Adds the corpus's continuations of `history`'s longest matched suffix below the root of
    /// `tree` (merging with nodes already there, whose confidence is raised to the corpus's when
    /// higher), within the caps. Each edge's confidence is the share of the occurrences reaching
    /// its parent that continue with its token; nodes are added most supported first.
    public func extend(_ tree: inout DraftTree, history: [Int32], maxNodes: Int, maxDepth: Int, source: UInt8 = DraftSource.corpus) {
        guard maxNodes > 0, maxDepth > 0, written > 0 else { return }
        for n in lengths where n <= history.count {
            let starts = occurrences(of: history, n: n)
            guard !starts.isEmpty else { continue }
            // A trie of the continuations: (parent trie node, token) -> count.
            var trieParent: [Int] = [], trieToken: [Int32] = [], trieCount: [Int] = [], trieDepth: [Int] = []
            func child(_ parent: Int, _ token: Int32) -> Int {
                for i in trieParent.indices where trieParent[i] == parent && trieToken[i] == token { return i }
                trieParent.append(parent)
                trieToken.append(token)
                trieCount.append(0)
                trieDepth.append(parent < 0 ? 1 : trieDepth[parent] + 1)
                return trieParent.count - 1
            }
            for g in starts {
                var parent = -1
                var at = g
                var depth = 0
                while depth < maxDepth && alive(at) && !(depth > 0 && startsDocument[at % capacity]) {
                    parent = child(parent, ring[at % capacity])
                    trieCount[parent] += 1
                    at += 1
                    depth += 1
                }
            }
            // Match length makes a match more specific: confidence scaled by n / maxMatch.
            let specificity = Float(n) / Float(maxMatch)
            // Best-first by support: the most frequent continuations first, parents before children.
            let order = trieParent.indices.sorted {
                trieCount[$0] != trieCount[$1] ? trieCount[$0] > trieCount[$1] : trieDepth[$0] < trieDepth[$1]
            }
            var treeNode = [Int](repeating: -2, count: trieParent.count)
            for i in order {
                let p = trieParent[i]
                let parentNode = p < 0 ? -1 : treeNode[p]
                guard parentNode != -2 else { continue }
                let parentCount = p < 0 ? starts.count : trieCount[p]
                let confidence = specificity * Float(trieCount[i]) / Float(max(parentCount, 1))
                if let existing = tree.child(of: parentNode, token: trieToken[i]) {
                    if tree.confidences[existing] < confidence { tree.confidences[existing] = confidence }
                    treeNode[i] = existing
                } else if tree.count < maxNodes {
                    treeNode[i] = tree.add(token: trieToken[i], parent: parentNode, confidence: confidence, source: source)
                }
            }
            let confidences = tree.confidences
            tree.rescore { confidences[$0] }
            return
        }
    }
}
