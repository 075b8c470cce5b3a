// MARK: - Pre-tokenizer

/// Splits text into words before byte-level BPE merges run on each word separately.
///
/// Each case reproduces the split regex that llama.cpp (src/llama-vocab.cpp, src/unicode.cpp) uses
/// for the GGUF `tokenizer.ggml.pre` value, written by hand over Unicode scalars:
///
/// - `gpt2`:   `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
/// - `smollm`: first `\p{N}` (every digit is its own word), then the gpt2 rule on what is left
/// - `llama3`: `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
/// - `qwen2`:  as llama3 but `\p{N}` (one digit per word)
///
/// Lookaheads never see past the end of the chunk being split, as in llama.cpp.
/// Thread-safety: a value type without state; safe to use from any thread.
public enum PreTokenizer: Sendable, Equatable {
    case gpt2
    case smollm
    case llama3
    case qwen2

    /// The `tokenizer.ggml.pre` values this build understands.
    public static let supportedNames = ["gpt2", "gpt-2", "smollm", "llama3", "llama-v3", "llama-bpe", "qwen2"]

    /// Maps a `tokenizer.ggml.pre` value to a pre-tokenizer.
    /// - Throws: `TokenizerError.unknownPreTokenizer` naming the value.
    public init(name: String) throws(TokenizerError) {
        switch name {
        case "gpt2", "gpt-2": self = .gpt2
        case "smollm": self = .smollm
        case "llama3", "llama-v3", "llama-bpe": self = .llama3
        case "qwen2": self = .qwen2
        default: throw .unknownPreTokenizer(name)
        }
    }

    /// Whether a word that is itself a vocabulary entry becomes that token without running merges
    /// (llama.cpp's `ignore_merges`, set for the llama3 family).
    public var ignoresMerges: Bool { self == .llama3 }

    /// Splits `scalars[range]` into words, appending each word's scalar range to `words`.
    public func split(_ scalars: [Unicode.Scalar], range: Range<Int>, into words: inout [Range<Int>]) {
        switch self {
        case .gpt2:
            Self.splitGPT2(scalars, range, &words)
        case .smollm:
            // `\p{N}` isolates each number scalar; the chunks between are split by the gpt2 rule.
            var chunkStart = range.lowerBound
            for i in range where ScalarClass(scalars[i]) == .number {
                if chunkStart < i { Self.splitGPT2(scalars, chunkStart..<i, &words) }
                words.append(i..<(i + 1))
                chunkStart = i + 1
            }
            if chunkStart < range.upperBound { Self.splitGPT2(scalars, chunkStart..<range.upperBound, &words) }
        case .llama3:
            Self.splitLlama3(scalars, range, maxDigits: 3, &words)
        case .qwen2:
            Self.splitLlama3(scalars, range, maxDigits: 1, &words)
        }
    }

    /// Splits a whole string; returns the words as strings. Meant for tests and debugging.
    public func split(_ text: String) -> [String] {
        let scalars = Array(text.unicodeScalars)
        var words: [Range<Int>] = []
        split(scalars, range: 0..<scalars.count, into: &words)
        return words.map { r in
            var s = String.UnicodeScalarView()
            s.append(contentsOf: scalars[r])
            return String(s)
        }
    }

    // MARK: - Contractions

    /// Length (2 or 3) of a contraction `'s 't 'm 'd 're 've 'll` starting at `pos`, or 0.
    private static func contractionLength(
        _ s: [Unicode.Scalar], _ pos: Int, _ end: Int, caseInsensitive: Bool
    ) -> Int {
        guard s[pos] == "'", pos + 1 < end else { return 0 }
        func lower(_ c: Unicode.Scalar) -> UInt32 {
            let v = c.value
            return caseInsensitive && v >= 0x41 && v <= 0x5A ? v + 32 : v
        }
        let next = lower(s[pos + 1])
        if next == 0x73 || next == 0x74 || next == 0x6D || next == 0x64 { return 2 }  // s t m d
        if pos + 2 < end {
            let nextNext = lower(s[pos + 2])
            if (next == 0x72 && nextNext == 0x65) || (next == 0x76 && nextNext == 0x65)
                || (next == 0x6C && nextNext == 0x6C) {  // re ve ll
                return 3
            }
        }
        return 0
    }

    // MARK: - GPT-2 rule

    private static func splitGPT2(_ s: [Unicode.Scalar], _ range: Range<Int>, _ words: inout [Range<Int>]) {
        let end = range.upperBound
        var start = range.lowerBound
        var pos = start
        func classAt(_ p: Int) -> ScalarClass { p < end ? ScalarClass(s[p]) : .outside }
        func emit(_ upTo: Int) {
            if upTo > start { words.append(start..<upTo) }
            start = upTo
            pos = upTo
        }
        while pos < end {
            let c = s[pos]
            let contraction = contractionLength(s, pos, end, caseInsensitive: false)
            if contraction > 0 {
                emit(pos + contraction)
                continue
            }
            // ` ?X+` where X is letters, numbers, or "other" (neither space, letter nor number).
            let isSpace = c == " "
            let cls = isSpace ? classAt(pos + 1) : ScalarClass(c)
            if cls == .letter || cls == .number || cls == .other {
                var p = pos + (isSpace ? 1 : 0)
                while classAt(p) == cls { p += 1 }
                emit(p)
                continue
            }
            var spaces = 0
            while classAt(pos + spaces) == .whitespace { spaces += 1 }
            if spaces > 1 && pos + spaces < end {
                // `\s+(?!\S)`: leave the last space to prefix the next word.
                emit(pos + spaces - 1)
            } else if spaces > 0 {
                emit(pos + spaces)
            } else {
                emit(pos + 1)
            }
        }
    }

    // MARK: - Llama 3 / Qwen 2 rule

    private static func splitLlama3(
        _ s: [Unicode.Scalar], _ range: Range<Int>, maxDigits: Int, _ words: inout [Range<Int>]
    ) {
        let end = range.upperBound
        var start = range.lowerBound
        var pos = start
        func classAt(_ p: Int) -> ScalarClass { p < end ? ScalarClass(s[p]) : .outside }
        func isNewline(_ p: Int) -> Bool { p < end && (s[p] == "\r" || s[p] == "\n") }
        func emit(_ upTo: Int) {
            if upTo > start { words.append(start..<upTo) }
            start = upTo
            pos = upTo
        }
        while pos < end {
            let c = s[pos]
            let cls = ScalarClass(c)
            let contraction = contractionLength(s, pos, end, caseInsensitive: true)
            if contraction > 0 {
                emit(pos + contraction)
                continue
            }
            // `[^\r\n\p{L}\p{N}]?\p{L}+`
            if !(c == "\r" || c == "\n" || cls == .number) && (cls == .letter || classAt(pos + 1) == .letter) {
                var p = pos + 1
                while classAt(p) == .letter { p += 1 }
                emit(p)
                continue
            }
            // `\p{N}{1,maxDigits}`
            if cls == .number {
                var p = pos
                while classAt(p) == .number && p - pos < maxDigits { p += 1 }
                emit(p)
                continue
            }
            // ` ?[^\s\p{L}\p{N}]+[\r\n]*`
            let next = c == " " ? classAt(pos + 1) : cls
            if next == .other {
                var p = pos + (c == " " ? 1 : 0)
                while classAt(p) == .other { p += 1 }
                while isNewline(p) { p += 1 }
                emit(p)
                continue
            }
            var spaces = 0
            var lastNewlineEnd = 0
            while classAt(pos + spaces) == .whitespace {
                if isNewline(pos + spaces) { lastNewlineEnd = pos + spaces + 1 }
                spaces += 1
            }
            if lastNewlineEnd > 0 {
                emit(lastNewlineEnd)  // `\s*[\r\n]+`
            } else if spaces > 1 && pos + spaces < end {
                emit(pos + spaces - 1)  // `\s+(?!\S)`
            } else if spaces > 0 {
                emit(pos + spaces)  // `\s+`
            } else {
                emit(pos + 1)
            }
        }
    }
}

// MARK: - Scalar classes

/// The Unicode classes the split rules distinguish: `\p{L}`, `\p{N}`, `\s` (White_Space), and
/// everything else (including unassigned scalars, as in llama.cpp). `outside` marks a position past
/// the end of the chunk, which matches no class.
enum ScalarClass: UInt8 {
    case letter, number, whitespace, other, outside

    /// Classes of the ASCII range, precomputed so the common case is one table load.
    private static let ascii: [ScalarClass] = (0..<128).map { classify(Unicode.Scalar(UInt8($0))) }

    @inline(__always)
    init(_ c: Unicode.Scalar) {
        self = c.value < 128 ? ScalarClass.ascii[Int(c.value)] : ScalarClass.classify(c)
    }

    private static func classify(_ c: Unicode.Scalar) -> ScalarClass {
        let properties = c.properties
        // White_Space wins over the general category (e.g. U+0085 is a control character).
        if properties.isWhitespace { return .whitespace }
        switch properties.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter:
            return .letter
        case .decimalNumber, .letterNumber, .otherNumber:
            return .number
        default:
            return .other
        }
    }
}
