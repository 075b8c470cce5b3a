/// Where a generation is in its grammar: the automaton's state after the text so far, and the
/// bytes of a code point split across tokens (a token may end inside a UTF-8 sequence).
public struct GrammarState: Hashable, Sendable {
    var state: Int32
    /// The code point's bits so far, the continuation bytes it still needs (0: none), and how
    /// many its lead byte announced (an overlong encoding, such as 0xE0 0x80 0xA2 for `"`, is
    /// rejected: the code point must need all of them).
    var partial: UInt32 = 0
    var remaining: UInt8 = 0
    var length: UInt8 = 0
}

/// A grammar bound to a model's vocabulary: which tokens each state allows (a bit mask over the
/// vocabulary, computed by one walk of the token trie and cached per state), the state after a
/// token, and the tokens a state forces.
///
/// Thread-safety: build it anywhere; after that one thread uses it at a time (the engine thread
/// for every request that shares it). Its caches grow lazily.
public final class TokenGrammar: @unchecked Sendable {
    public let grammar: Grammar
    public let vocabulary: TokenVocabulary
    let automaton: GrammarAutomaton
    private var maskIndex: [GrammarState: Int] = [:]
    private var maskStorage: [[UInt64]] = []
    private var walk: [GrammarState]
    /// Masks kept per grammar (6 KiB each for a 49k vocabulary); beyond it, masks are recomputed.
    public static let maxCachedMasks = 1024
    /// Masks computed by trie walks, and trie nodes those walks visited (for benchmarks).
    public private(set) var maskWalks = 0
    public private(set) var visitedNodes = 0

    public init(grammar: Grammar, vocabulary: TokenVocabulary) {
        self.grammar = grammar
        self.vocabulary = vocabulary
        automaton = GrammarAutomaton(grammar: grammar)
        walk = [GrammarState](repeating: GrammarState(state: 0), count: vocabulary.maxDepth + 1)
    }

    /// The state before any output.
    public var initialState: GrammarState { GrammarState(state: automaton.start) }

    // MARK: - Stepping

    /// The state after one byte, or nil when the grammar rejects it.
    @inline(__always) func step(_ s: GrammarState, _ byte: UInt8) -> GrammarState? {
        if s.remaining == 0 {
            if byte < 0x80 {
                let n = automaton.next(s.state, UInt32(byte))
                return n < 0 ? nil : GrammarState(state: n)
            }
            let (bits, more): (UInt32, UInt8)
            if byte & 0xE0 == 0xC0 { (bits, more) = (UInt32(byte & 0x1F), 1) }
            else if byte & 0xF0 == 0xE0 { (bits, more) = (UInt32(byte & 0x0F), 2) }
            else if byte & 0xF8 == 0xF0 { (bits, more) = (UInt32(byte & 0x07), 3) }
            else { return nil }
            return viablePartial(GrammarState(state: s.state, partial: bits, remaining: more, length: more))
        }
        guard byte & 0xC0 == 0x80 else { return nil }
        let bits = s.partial << 6 | UInt32(byte & 0x3F)
        if s.remaining == 1 {
            guard bits >= Self.smallest[Int(s.length)], bits <= 0x10FFFF else { return nil }
            let n = automaton.next(s.state, bits)
            return n < 0 ? nil : GrammarState(state: n)
        }
        return viablePartial(GrammarState(state: s.state, partial: bits, remaining: s.remaining - 1, length: s.length))
    }

    /// The smallest code point a sequence with 1, 2, 3 continuation bytes may encode.
    static let smallest: [UInt32] = [0, 0x80, 0x800, 0x10000]

    /// `s` when some code point starting with its partial bytes is allowed.
    private func viablePartial(_ s: GrammarState) -> GrammarState? {
        let shift = UInt32(6 * Int(s.remaining))
        let lo = max(s.partial << shift, Self.smallest[Int(s.length)])
        let hi = min((s.partial << shift) | ((1 << shift) - 1), 0x10FFFF)
        return lo <= hi && automaton.acceptsSome(s.state, lo, hi) ? s : nil
    }

    /// Whether the text so far is a complete match (a stop token may end the output here).
    public func isAccepting(_ s: GrammarState) -> Bool {
        s.remaining == 0 && automaton.stateAccepting[Int(s.state)]
    }

    /// Whether the output is complete and nothing but a stop token may follow.
    public func isComplete(_ s: GrammarState) -> Bool {
        s.remaining == 0 && automaton.isComplete(s.state)
    }

    /// The state after `token`, or nil when the grammar does not allow it. A stop token leaves
    /// the state as it is (allowed only where the output is complete).
    public func advance(_ s: GrammarState, token: Int32) -> GrammarState? {
        guard token >= 0 && Int(token) < vocabulary.count else { return nil }
        if vocabulary.stopTokens.contains(token) { return isAccepting(s) ? s : nil }
        let start = Int(vocabulary.byteStarts[Int(token)]), end = Int(vocabulary.byteStarts[Int(token) + 1])
        guard end > start else { return nil }
        var current = s
        for i in start..<end {
            guard let n = step(current, vocabulary.tokenBytes[i]) else { return nil }
            current = n
        }
        return current
    }

    /// Whether the grammar allows `token` in state `s`.
    public func allows(_ s: GrammarState, token: Int32) -> Bool {
        advance(s, token: token) != nil
    }

    // MARK: - Masks

    /// The tokens state `s` allows, as a bit set over the vocabulary (`count / 64` words, bit
    /// `t % 64` of word `t / 64`).
    public func mask(_ s: GrammarState) -> [UInt64] {
        if let i = maskIndex[s] { return maskStorage[i] }
        let m = computeMask(s)
        if maskStorage.count < Self.maxCachedMasks {
            maskIndex[s] = maskStorage.count
            maskStorage.append(m)
        }
        return m
    }

    /// One preorder walk of the token trie, skipping every subtree whose prefix is rejected.
    private func computeMask(_ s: GrammarState) -> [UInt64] {
        let v = vocabulary
        var bits = [UInt64](repeating: 0, count: (v.count + 63) / 64)
        walk[0] = s
        var i = 0
        let n = v.nodeBytes.count
        var visited = 0
        v.nodeBytes.withUnsafeBufferPointer { bytes in
            v.nodeDepths.withUnsafeBufferPointer { depths in
                v.subtreeEnds.withUnsafeBufferPointer { ends in
                    while i < n {
                        visited += 1
                        let d = Int(depths[i])
                        guard let next = step(walk[d - 1], bytes[i]) else {
                            i = Int(ends[i])
                            continue
                        }
                        walk[d] = next
                        var t = Int(v.tokenStarts[i])
                        let end = Int(v.tokenStarts[i + 1])
                        while t < end {
                            let id = Int(v.tokens[t])
                            bits[id >> 6] |= 1 << UInt64(id & 63)
                            t += 1
                        }
                        i += 1
                    }
                }
            }
        }
        if isAccepting(s) {
            for id in v.stopTokens where Int(id) < v.count { bits[Int(id) >> 6] |= 1 << UInt64(id & 63) }
        }
        maskWalks += 1
        visitedNodes += visited
        return bits
    }

    /// Sets the logits of every token `s` does not allow to -infinity.
    /// - Parameter logits: `[count]` logits of one row, changed in place.
    public func applyMask(_ s: GrammarState, to logits: UnsafeMutablePointer<Float>, count: Int) {
        let m = mask(s)
        m.withUnsafeBufferPointer { words in
            for w in 0..<words.count {
                let word = words[w]
                if word == ~0 { continue }
                let base = w * 64
                for b in 0..<min(64, count - base) where word & (1 << UInt64(b)) == 0 {
                    logits[base + b] = -.infinity
                }
            }
        }
    }

    /// How many tokens `s` allows.
    public func allowedCount(_ s: GrammarState) -> Int {
        mask(s).reduce(0) { $0 + $1.nonzeroBitCount }
    }

    // MARK: - Forced text

    /// Tokens the grammar forces from `s`: the text it allows is a single string for a while
    /// (a property name, `": `, a constant), tokenized by longest match. The last of them is left
    /// out unless the output is complete after it: the model may join it with what follows into
    /// one longer token. At most `limit` tokens.
    ///
    /// A forced text that continues a word the output has started (`previous` token ends with a
    /// letter or digit, and so does the text's start) is not drafted: having chosen a short,
    /// uncommon piece (`a` of `admin`), a model rarely follows with the longest-match tokens.
    public func forcedTokens(_ s: GrammarState, limit: Int, previous: Int32? = nil) -> [Int32] {
        guard s.remaining == 0, limit > 0 else { return [] }
        func isWordByte(_ b: UInt8) -> Bool { (b >= 0x30 && b <= 0x39) || (b | 0x20 >= 0x61 && b | 0x20 <= 0x7A) || b >= 0x80 }
        let endsWord: Bool = {
            guard let previous, previous >= 0, Int(previous) < vocabulary.count else { return false }
            return vocabulary.withBytes(previous) { $0.last.map(isWordByte) ?? false }
        }()
        var bytes: [UInt8] = []
        var state = s.state
        while bytes.count < 256, let c = automaton.forcedCodePoint(state) {
            let n = automaton.next(state, c)
            guard n >= 0, let scalar = Unicode.Scalar(c) else { break }
            bytes += Array(String(Character(scalar)).utf8)
            state = n
        }
        guard !bytes.isEmpty, !(endsWord && isWordByte(bytes[0])) else { return [] }
        var out: [Int32] = []
        var at = 0
        while at < bytes.count, let (token, length) = vocabulary.longestToken(in: bytes, from: at) {
            out.append(token)
            at += length
        }
        if at < bytes.count || !automaton.isComplete(state) { out.removeLast(min(1, out.count)) }
        return Array(out.prefix(limit))
    }
}
