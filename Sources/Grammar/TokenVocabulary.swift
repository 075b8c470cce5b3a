/// A model's vocabulary as byte strings in a prefix trie, for computing which tokens a grammar
/// state allows in one walk: a subtree whose prefix the grammar rejects is skipped whole.
///
/// The trie is stored in depth-first preorder: node i has byte `nodeBytes[i]` at depth
/// `nodeDepths[i]` (1 for a first byte), its subtree is `i..<subtreeEnds[i]`, and the tokens whose
/// bytes end exactly there are `tokens[tokenStarts[i]..<tokenStarts[i + 1]]`.
///
/// Thread-safety: immutable after init; share freely.
public final class TokenVocabulary: Sendable {
    public let count: Int
    /// Tokens that end a generation (end of turn): allowed only where the grammar is complete.
    public let stopTokens: Set<Int32>
    let nodeBytes: [UInt8]
    let nodeDepths: [UInt16]
    let subtreeEnds: [Int32]
    let tokenStarts: [Int32]
    let tokens: [Int32]
    let maxDepth: Int
    /// Every token's bytes, concatenated (`tokenBytes[byteStarts[t]..<byteStarts[t + 1]]`);
    /// empty for tokens that never match text (control tokens).
    let tokenBytes: [UInt8]
    let byteStarts: [Int32]

    /// - Parameters:
    ///   - count: vocabulary size.
    ///   - bytes: the UTF-8 bytes token `id` decodes to, or nil for a token that never stands for
    ///     text (control and other special tokens: a grammar never allows them).
    ///   - stopTokens: end-of-generation tokens (allowed once the grammar is complete).
    public init(count: Int, stopTokens: Set<Int32>, bytes: (Int32) -> [UInt8]?) {
        self.count = count
        self.stopTokens = stopTokens
        var all: [UInt8] = [], starts: [Int32] = [0]
        var entries: [(Int32, Range<Int>)] = []
        for id in 0..<count {
            let begin = all.count
            if !stopTokens.contains(Int32(id)), let b = bytes(Int32(id)), !b.isEmpty {
                all += b
                entries.append((Int32(id), begin..<all.count))
            }
            starts.append(Int32(all.count))
        }
        tokenBytes = all
        byteStarts = starts
        // Sort by bytes, then build the preorder trie from the sorted list.
        entries.sort { a, b in
            let x = all[a.1], y = b.1
            return x.lexicographicallyPrecedes(all[y]) || (x.elementsEqual(all[y]) && a.0 < b.0)
        }
        var nodeBytes: [UInt8] = [], nodeDepths: [UInt16] = [], subtreeEnds: [Int32] = []
        var perNode: [[Int32]] = []
        var path: [Int] = []       // node index per depth on the current path
        var maxDepth = 0
        for (id, range) in entries {
            let b = Array(all[range])
            // Longest common prefix with the current path (sorted input: a shared prefix is on it).
            var k = 0
            while k < path.count && k < b.count && nodeBytes[path[k]] == b[k] { k += 1 }
            for d in stride(from: path.count - 1, through: k, by: -1) { subtreeEnds[path[d]] = Int32(nodeBytes.count) }
            path.removeSubrange(k...)
            for d in k..<b.count {
                path.append(nodeBytes.count)
                nodeBytes.append(b[d])
                nodeDepths.append(UInt16(min(d + 1, Int(UInt16.max))))
                subtreeEnds.append(0)
                perNode.append([])
            }
            maxDepth = max(maxDepth, b.count)
            perNode[path[b.count - 1]].append(id)
        }
        for d in path { subtreeEnds[d] = Int32(nodeBytes.count) }
        var tokenStarts: [Int32] = [], tokens: [Int32] = []
        for ids in perNode {
            tokenStarts.append(Int32(tokens.count))
            tokens += ids
        }
        tokenStarts.append(Int32(tokens.count))
        self.nodeBytes = nodeBytes
        self.nodeDepths = nodeDepths
        self.subtreeEnds = subtreeEnds
        self.tokenStarts = tokenStarts
        self.tokens = tokens
        self.maxDepth = maxDepth
    }

    /// Number of trie nodes.
    public var nodeCount: Int { nodeBytes.count }

    /// Calls `body` with the bytes of `token` (empty for special tokens).
    @inline(__always) func withBytes<R>(_ token: Int32, _ body: (ArraySlice<UInt8>) -> R) -> R {
        body(tokenBytes[Int(byteStarts[Int(token)])..<Int(byteStarts[Int(token) + 1])])
    }

    /// The longest token whose bytes are a prefix of `bytes[from...]`, with its length.
    func longestToken(in bytes: [UInt8], from: Int) -> (token: Int32, length: Int)? {
        var node = -1
        var best: (Int32, Int)?
        var i = from
        while i < bytes.count {
            var c = node + 1
            let end = node < 0 ? nodeBytes.count : Int(subtreeEnds[node])
            while c < end && nodeBytes[c] != bytes[i] { c = Int(subtreeEnds[c]) }
            guard c < end else { break }
            node = c
            i += 1
            if tokenStarts[node] < tokenStarts[node + 1] { best = (tokens[Int(tokenStarts[node])], i - from) }
        }
        return best
    }
}
