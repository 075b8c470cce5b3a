// MARK: - Tokenizer

/// The tokenizer stored in GGUF `tokenizer.ggml.*` keys: byte-level BPE (GPT-2 style, `gpt2`) or
/// SentencePiece (`llama`), with llama.cpp's token IDs.
///
/// Text is split into special tokens and plain fragments. BPE: each fragment is split into words by
/// the model's `PreTokenizer`; each word's UTF-8 bytes start as one token per byte and are merged
/// pairwise by merge rank (lowest rank first, leftmost first on ties). SentencePiece: spaces become
/// `▁` (and a fragment after a special token or at the start gets a leading `▁` when the model adds
/// a space prefix), the fragment starts as one symbol per UTF-8 character, and adjacent symbols
/// whose concatenation is a token merge, highest score first (leftmost on ties); symbols that are
/// no token fall back to byte tokens `<0xXX>` (see `Tokenizer+SentencePiece.swift`).
///
/// Thread-safety: immutable after `init`; `encode` and `decode` may run concurrently from any thread.
public final class Tokenizer: Sendable {
    /// How a vocabulary entry behaves (GGUF `tokenizer.ggml.token_type` values).
    public enum TokenKind: Int32, Sendable {
        case undefined = 0
        case normal = 1
        case unknown = 2
        /// Control token such as `<|im_start|>`: matched in text only when parsing specials.
        case control = 3
        /// User-defined token: always matched in text, decoded as its literal text.
        case userDefined = 4
        case unused = 5
        case byte = 6
    }

    /// A merge rule applicable to an adjacent pair of token IDs.
    struct Merge {
        var rank: Int32
        var result: Int32
    }

    /// The vocabulary family (`tokenizer.ggml.model`).
    public enum Model: String, Sendable {
        /// Byte-level BPE (`gpt2`).
        case bytePairs = "gpt2"
        /// SentencePiece with scores and byte fallback (`llama`).
        case sentencePiece = "llama"
    }

    /// The vocabulary family.
    public let model: Model
    /// The pre-tokenizer that splits fragments into words (BPE only).
    public let preTokenizer: PreTokenizer
    /// Whether `encode(_:parseSpecial:addSpecial:)` appends EOS when `addSpecial` is true
    /// (GGUF `tokenizer.ggml.add_eos_token`).
    public let addsEOS: Bool
    /// SentencePiece: whether a text fragment at the start or after a special token gets a leading
    /// space (GGUF `tokenizer.ggml.add_space_prefix`); `decode` drops it again.
    public let addsSpacePrefix: Bool
    /// Beginning-of-sequence token ID, if the model has one.
    public let bosID: Int32?
    /// End-of-sequence token ID, if the model has one.
    public let eosID: Int32?
    /// IDs that end generation: EOS plus end-of-turn tokens (`<|im_end|>`, `<|eot_id|>`, `<end_of_turn>`, …)
    /// present in the vocabulary. Sorted ascending.
    public let eotIDs: [Int32]
    /// Whether `encode(_:parseSpecial:addSpecial:)` prepends BOS when `addSpecial` is true
    /// (GGUF `tokenizer.ggml.add_bos_token`).
    public let addsBOS: Bool

    private let tokenTexts: [String]
    private let kinds: [TokenKind]
    /// Decoded bytes of every token, concatenated; token `i` is `pieceBytes[pieceStarts[i]..<pieceStarts[i+1]]`.
    private let pieceBytes: [UInt8]
    private let pieceStarts: [Int32]
    /// Token ID of each single byte, or -1 if the vocabulary lacks it.
    private let byteTokenIDs: [Int32]
    /// Merge rules keyed by `left << 32 | right` token IDs.
    private let merges: [UInt64: Merge]
    /// Token IDs of normal tokens keyed by their decoded bytes (used when the pre-tokenizer ignores merges).
    private let wordTokenIDs: [[UInt8]: Int32]
    /// Special tokens matched in raw text, longest first: (UTF-8 bytes, ID, matched without `parseSpecial`).
    private let specialTokens: [(bytes: [UInt8], id: Int32, alwaysMatched: Bool)]
    /// SentencePiece: token IDs by the UTF-8 bytes of their stored text (bytes, not `String`:
    /// Swift strings compare canonically equivalent texts equal, and vocabularies hold both "é"
    /// and "e\u{301}", ";" and U+037E; the last ID wins for identical bytes, as in llama.cpp),
    /// scores, and the byte-fallback token of each byte (-1: none).
    let pieceIDs: [[UInt8]: Int32]
    let scores: [Float]
    let byteFallbackIDs: [Int32]

    /// Number of entries in the vocabulary (the logits width).
    public var vocabularySize: Int { tokenTexts.count }

    /// Builds a tokenizer from plain arrays (the same data as the GGUF keys).
    ///
    /// - Parameters:
    ///   - tokens: token texts in GPT-2 byte-to-unicode form (`tokenizer.ggml.tokens`).
    ///   - tokenTypes: one `TokenKind` raw value per token (`tokenizer.ggml.token_type`); empty means all normal.
    ///   - merges: merge rules "left right" in rank order (`tokenizer.ggml.merges`).
    ///   - preTokenizer: the word-splitting rule.
    ///   - bosID, eosID: special token IDs, if any.
    ///   - addsBOS: whether encoding with `addSpecial` prepends BOS.
    /// - Throws: `TokenizerError` if the arrays are inconsistent.
    ///   - model: the vocabulary family; for `.sentencePiece`, `scores` (one per token, or empty
    ///     for all 0), `addsSpacePrefix`; `merges` and `preTokenizer` are unused.
    ///   - addsEOS: whether encoding with `addSpecial` appends EOS.
    public init(
        tokens: [String], tokenTypes: [Int32], merges: [String], preTokenizer: PreTokenizer,
        bosID: Int32?, eosID: Int32?, addsBOS: Bool = false, model: Model = .bytePairs, scores: [Float] = [],
        addsEOS: Bool = false, addsSpacePrefix: Bool = false
    ) throws(TokenizerError) {
        guard tokenTypes.isEmpty || tokenTypes.count == tokens.count else {
            throw .tokenTypeCountMismatch(tokens: tokens.count, types: tokenTypes.count)
        }
        guard scores.isEmpty || scores.count == tokens.count else {
            throw .scoreCountMismatch(tokens: tokens.count, scores: scores.count)
        }
        self.model = model
        self.addsEOS = addsEOS
        self.addsSpacePrefix = model == .sentencePiece && addsSpacePrefix
        self.scores = model == .sentencePiece ? (scores.isEmpty ? [Float](repeating: 0, count: tokens.count) : scores) : []
        for (key, id) in [("tokenizer.ggml.bos_token_id", bosID), ("tokenizer.ggml.eos_token_id", eosID)] {
            if let id, id < 0 || Int(id) >= tokens.count {
                throw .tokenIDOutOfRange(key: key, id: Int(id), vocabularySize: tokens.count)
            }
        }
        self.preTokenizer = preTokenizer
        self.bosID = bosID
        self.eosID = eosID
        self.addsBOS = addsBOS
        self.tokenTexts = tokens
        let kinds = tokenTypes.isEmpty
            ? [TokenKind](repeating: .normal, count: tokens.count)
            : tokenTypes.map { TokenKind(rawValue: $0) ?? .normal }
        self.kinds = kinds

        // Decoded bytes per token, and the reverse maps used by encode.
        var textToID = [String: Int32](minimumCapacity: tokens.count)
        var pieceBytes: [UInt8] = []
        pieceBytes.reserveCapacity(tokens.count * 6)
        var pieceStarts: [Int32] = [0]
        pieceStarts.reserveCapacity(tokens.count + 1)
        var wordTokenIDs = [[UInt8]: Int32]()
        var specials: [(bytes: [UInt8], id: Int32, alwaysMatched: Bool)] = []
        for (index, text) in tokens.enumerated() {
            let id = Int32(index)
            if textToID[text] == nil { textToID[text] = id }
            switch kinds[index] {
            case .normal, .undefined, .unused, .byte:
                if model == .sentencePiece {
                    SentencePiece.pieceBytes(text, kind: kinds[index], into: &pieceBytes)
                    break
                }
                let start = pieceBytes.count
                ByteLevel.decode(text, into: &pieceBytes)
                if kinds[index] == .normal && preTokenizer.ignoresMerges {
                    let bytes = Array(pieceBytes[start...])
                    if wordTokenIDs[bytes] == nil { wordTokenIDs[bytes] = id }
                }
            case .control, .userDefined, .unknown:
                pieceBytes.append(contentsOf: text.utf8)
                if !text.isEmpty {
                    specials.append((Array(text.utf8), id, kinds[index] == .userDefined))
                }
            }
            pieceStarts.append(Int32(pieceBytes.count))
        }
        self.pieceBytes = pieceBytes
        self.pieceStarts = pieceStarts
        self.wordTokenIDs = wordTokenIDs
        // Longest first, so a special token that contains another one wins (llama.cpp order).
        self.specialTokens = specials.sorted { $0.bytes.count != $1.bytes.count ? $0.bytes.count > $1.bytes.count : $0.id < $1.id }

        var byteTokenIDs = [Int32](repeating: -1, count: 256)
        for byte in 0..<256 {
            byteTokenIDs[byte] = textToID[ByteLevel.character(for: UInt8(byte))] ?? -1
        }
        self.byteTokenIDs = byteTokenIDs

        var mergeTable = [UInt64: Merge](minimumCapacity: merges.count)
        for (rank, rule) in merges.enumerated() {
            let parts = rule.split(separator: " ", omittingEmptySubsequences: false)
            guard parts.count == 2 else { throw .malformedMerge(index: rank, text: rule) }
            // A rule whose parts or result are not in the vocabulary can never fire; skip it.
            guard let left = textToID[String(parts[0])], let right = textToID[String(parts[1])],
                  let result = textToID[String(parts[0]) + String(parts[1])] else { continue }
            let key = UInt64(UInt32(left)) << 32 | UInt64(UInt32(right))
            if mergeTable[key] == nil { mergeTable[key] = Merge(rank: Int32(rank), result: result) }
        }
        self.merges = mergeTable

        if model == .sentencePiece {
            var pieceIDs = [[UInt8]: Int32](minimumCapacity: tokens.count)
            for (index, text) in tokens.enumerated() { pieceIDs[Array(text.utf8)] = Int32(index) }
            var fallback = [Int32](repeating: -1, count: 256)
            for byte in 0..<256 {
                let hex = (byte < 16 ? "<0x0" : "<0x") + String(byte, radix: 16, uppercase: true) + ">"
                fallback[byte] = pieceIDs[Array(hex.utf8)] ?? (byte < 0x80 ? pieceIDs[[UInt8(byte)]] : nil) ?? -1
            }
            self.pieceIDs = pieceIDs
            self.byteFallbackIDs = fallback
        } else {
            self.pieceIDs = [:]
            self.byteFallbackIDs = []
        }

        // End-of-generation tokens, following llama.cpp's list of end-of-turn texts.
        let endTexts: Set<String> = [
            "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|eom_id|>",
            "<|end_of_text|>", "<EOT>", "<|return|>",
        ]
        var eot = Set<Int32>()
        if let eosID { eot.insert(eosID) }
        for (index, text) in tokens.enumerated() where endTexts.contains(text) && kinds[index] != .normal {
            eot.insert(Int32(index))
        }
        self.eotIDs = eot.sorted()
    }

    // MARK: - Vocabulary access

    /// The stored text of a token (byte-level form for normal tokens), or nil if `id` is out of range.
    public func tokenText(_ id: Int32) -> String? {
        id >= 0 && Int(id) < tokenTexts.count ? tokenTexts[Int(id)] : nil
    }

    /// How a token behaves, or nil if `id` is out of range.
    public func tokenKind(_ id: Int32) -> TokenKind? {
        id >= 0 && Int(id) < kinds.count ? kinds[Int(id)] : nil
    }

    /// Whether `id` is a control/unknown token (skipped by `decode(_:skipSpecial:)` when asked).
    public func isSpecial(_ id: Int32) -> Bool {
        guard let kind = tokenKind(id) else { return false }
        return kind == .control || kind == .unknown
    }

    /// Calls `body` with the UTF-8 bytes a token decodes to (empty for out-of-range IDs, and for
    /// special tokens when `skipSpecial`). The buffer is valid only inside `body`.
    public func withPieceBytes<R>(
        _ id: Int32, skipSpecial: Bool = false, _ body: (UnsafeBufferPointer<UInt8>) throws -> R
    ) rethrows -> R {
        guard id >= 0 && Int(id) < kinds.count, !(skipSpecial && isSpecial(id)) else {
            return try body(UnsafeBufferPointer(start: nil, count: 0))
        }
        let start = Int(pieceStarts[Int(id)])
        let end = Int(pieceStarts[Int(id) + 1])
        return try pieceBytes.withUnsafeBufferPointer { all in
            try body(UnsafeBufferPointer(rebasing: all[start..<end]))
        }
    }

    // MARK: - Decoding

    /// Decodes token IDs to text. Control tokens decode to their text unless `skipSpecial`.
    /// Out-of-range IDs decode to nothing; invalid UTF-8 becomes U+FFFD.
    public func decode(_ ids: [Int32], skipSpecial: Bool = false) -> String {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(ids.count * 4)
        // SentencePiece with a space prefix: the first text token's leading space is the prefix
        // `encode` added (llama.cpp drops it too).
        var stripSpace = addsSpacePrefix
        for id in ids {
            if stripSpace && id == bosID { continue }
            withPieceBytes(id, skipSpecial: skipSpecial) {
                if stripSpace, $0.first == 0x20 { bytes.append(contentsOf: $0.dropFirst()) } else { bytes.append(contentsOf: $0) }
            }
            stripSpace = false
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    // MARK: - Encoding

    /// Encodes text to token IDs.
    ///
    /// - Parameters:
    ///   - text: the text to encode.
    ///   - parseSpecial: when true, control tokens written in the text (e.g. `<|im_start|>`) become
    ///     single tokens; when false they are encoded as plain text. User-defined tokens always match.
    ///   - addSpecial: when true and the model asks for it (`addsBOS`), BOS is prepended.
    /// - Returns: token IDs, each in `0..<vocabularySize`.
    public func encode(_ text: String, parseSpecial: Bool, addSpecial: Bool = false) -> [Int32] {
        var output: [Int32] = []
        output.reserveCapacity(text.utf8.count / 3 + 4)
        if addSpecial, addsBOS, let bosID { output.append(bosID) }
        let bytes = Array(text.utf8)
        var scratch = EncodeScratch()
        var afterSpecial = true
        for fragment in partition(bytes, parseSpecial: parseSpecial) {
            switch fragment {
            case .token(let id):
                output.append(id)
                afterSpecial = true
            case .text(let range):
                switch model {
                case .bytePairs: encodeFragment(bytes[range], into: &output, scratch: &scratch)
                case .sentencePiece: encodeSentencePiece(bytes[range], spacePrefix: addsSpacePrefix && afterSpecial, into: &output)
                }
                afterSpecial = false
            }
        }
        if addSpecial, addsEOS, let eosID { output.append(eosID) }
        return output
    }

    /// A piece of input: either raw text (a byte range) or an already-recognized special token.
    private enum Fragment {
        case text(Range<Int>)
        case token(Int32)
    }

    /// Splits `bytes` at special-token occurrences. Longer special tokens are matched first over the
    /// whole text, then shorter ones in the remaining text fragments (llama.cpp's order).
    private func partition(_ bytes: [UInt8], parseSpecial: Bool) -> [Fragment] {
        var fragments: [Fragment] = bytes.isEmpty ? [] : [.text(0..<bytes.count)]
        for special in specialTokens where parseSpecial || special.alwaysMatched {
            let needle = special.bytes
            var next: [Fragment] = []
            next.reserveCapacity(fragments.count + 2)
            var changed = false
            for fragment in fragments {
                guard case .text(let range) = fragment else { next.append(fragment); continue }
                var start = range.lowerBound
                var i = range.lowerBound
                let lastStart = range.upperBound - needle.count
                while i <= lastStart {
                    if bytes[i] == needle[0] && matches(bytes, at: i, needle) {
                        if start < i { next.append(.text(start..<i)) }
                        next.append(.token(special.id))
                        i += needle.count
                        start = i
                        changed = true
                    } else {
                        i += 1
                    }
                }
                if start < range.upperBound { next.append(.text(start..<range.upperBound)) }
            }
            if changed { fragments = next }
        }
        return fragments
    }

    @inline(__always)
    private func matches(_ bytes: [UInt8], at i: Int, _ needle: [UInt8]) -> Bool {
        for j in 1..<needle.count where bytes[i + j] != needle[j] { return false }
        return true
    }

    /// Buffers reused across the words of one `encode` call.
    private struct EncodeScratch {
        var words: [Range<Int>] = []
        var wordBytes: [UInt8] = []
        var symbols: [Int32] = []
        var ranks: [Int32] = []
    }

    private func encodeFragment(_ bytes: ArraySlice<UInt8>, into output: inout [Int32], scratch: inout EncodeScratch) {
        // Fragments are cut at special-token boundaries, which are whole UTF-8 sequences.
        let scalars = Array(String(decoding: bytes, as: UTF8.self).unicodeScalars)
        scratch.words.removeAll(keepingCapacity: true)
        preTokenizer.split(scalars, range: 0..<scalars.count, into: &scratch.words)
        for word in scratch.words {
            scratch.wordBytes.removeAll(keepingCapacity: true)
            for scalar in scalars[word] { appendUTF8(scalar, to: &scratch.wordBytes) }
            if preTokenizer.ignoresMerges, let id = wordTokenIDs[scratch.wordBytes] {
                output.append(id)
                continue
            }
            mergeWord(&scratch)
            output.append(contentsOf: scratch.symbols)
        }
    }

    /// Runs BPE merges over `scratch.wordBytes`, leaving the resulting token IDs in `scratch.symbols`.
    ///
    /// Repeatedly merges the adjacent pair with the lowest rank (leftmost on ties); `ranks[i]` caches
    /// the rank of `(symbols[i], symbols[i+1])` so each merge only re-looks-up its two neighbours.
    private func mergeWord(_ scratch: inout EncodeScratch) {
        scratch.symbols.removeAll(keepingCapacity: true)
        for byte in scratch.wordBytes {
            let id = byteTokenIDs[Int(byte)]
            if id >= 0 { scratch.symbols.append(id) }  // bytes missing from the vocabulary are dropped, as in llama.cpp
        }
        let count = scratch.symbols.count
        guard count > 1 else { return }
        scratch.ranks.removeAll(keepingCapacity: true)
        for i in 0..<(count - 1) {
            scratch.ranks.append(mergeRank(scratch.symbols[i], scratch.symbols[i + 1]))
        }
        while true {
            var best = -1
            var bestRank = Int32.max
            for i in 0..<scratch.ranks.count where scratch.ranks[i] < bestRank {
                bestRank = scratch.ranks[i]
                best = i
            }
            if best < 0 { break }
            let merged = merges[pairKey(scratch.symbols[best], scratch.symbols[best + 1])]!.result
            scratch.symbols[best] = merged
            scratch.symbols.remove(at: best + 1)
            scratch.ranks.remove(at: best)
            if best > 0 {
                scratch.ranks[best - 1] = mergeRank(scratch.symbols[best - 1], merged)
            }
            if best < scratch.ranks.count {
                scratch.ranks[best] = mergeRank(merged, scratch.symbols[best + 1])
            }
        }
    }

    @inline(__always)
    private func pairKey(_ left: Int32, _ right: Int32) -> UInt64 {
        UInt64(UInt32(left)) << 32 | UInt64(UInt32(right))
    }

    @inline(__always)
    private func mergeRank(_ left: Int32, _ right: Int32) -> Int32 {
        merges[pairKey(left, right)]?.rank ?? Int32.max
    }

    @inline(__always)
    private func appendUTF8(_ scalar: Unicode.Scalar, to bytes: inout [UInt8]) {
        let v = scalar.value
        if v < 0x80 {
            bytes.append(UInt8(v))
        } else if v < 0x800 {
            bytes.append(UInt8(0xC0 | (v >> 6)))
            bytes.append(UInt8(0x80 | (v & 0x3F)))
        } else if v < 0x10000 {
            bytes.append(UInt8(0xE0 | (v >> 12)))
            bytes.append(UInt8(0x80 | ((v >> 6) & 0x3F)))
            bytes.append(UInt8(0x80 | (v & 0x3F)))
        } else {
            bytes.append(UInt8(0xF0 | (v >> 18)))
            bytes.append(UInt8(0x80 | ((v >> 12) & 0x3F)))
            bytes.append(UInt8(0x80 | ((v >> 6) & 0x3F)))
            bytes.append(UInt8(0x80 | (v & 0x3F)))
        }
    }
}

// MARK: - Byte-level mapping

/// GPT-2's reversible map between bytes and printable Unicode scalars: printable Latin-1 bytes map to
/// themselves, the other 68 bytes to U+0100… in byte order, so every byte has a visible token text.
enum ByteLevel {
    /// Scalar value for each byte.
    static let scalarForByte: [UInt32] = {
        var table = [UInt32](repeating: 0, count: 256)
        var next: UInt32 = 256
        for byte in 0..<256 {
            if (0x21...0x7E).contains(byte) || (0xA1...0xAC).contains(byte) || (0xAE...0xFF).contains(byte) {
                table[byte] = UInt32(byte)
            } else {
                table[byte] = next
                next += 1
            }
        }
        return table
    }()

    /// Byte for each scalar value below 0x144, or -1.
    static let byteForScalar: [Int16] = {
        var table = [Int16](repeating: -1, count: 0x144)
        for (byte, scalar) in scalarForByte.enumerated() { table[Int(scalar)] = Int16(byte) }
        return table
    }()

    /// The one-character token text for a byte.
    static func character(for byte: UInt8) -> String {
        String(Character(Unicode.Scalar(scalarForByte[Int(byte)])!))
    }

    /// Appends the bytes a byte-level token text stands for. Scalars outside the map (not produced
    /// by GPT-2 conversion) are kept as their own UTF-8 bytes.
    static func decode(_ text: String, into bytes: inout [UInt8]) {
        for scalar in text.unicodeScalars {
            let v = Int(scalar.value)
            if v < byteForScalar.count, byteForScalar[v] >= 0 {
                bytes.append(UInt8(byteForScalar[v]))
            } else {
                bytes.append(contentsOf: String(scalar).utf8)
            }
        }
    }
}
