import Foundation
import GGUF
import Model
import Testing
import Tokenizer

// MARK: - Reference fixture (llama.cpp tokenizations of the default model)

@Suite struct TokenizerFixtureTests {
    struct Case: Decodable {
        var name: String?
        var text: String
        var ids: [Int32]
        var special: Bool
    }

    static func loadCases() throws -> [Case] {
        let data = try Data(contentsOf: URL(fileURLWithPath: TokenizerTestSupport.tokenizerFixturePath))
        return try JSONDecoder().decode([Case].self, from: data)
    }

    @Test func everyFixtureMatchesLlamaCpp() throws {
        let tokenizer = try TokenizerTestSupport.defaultTokenizer()
        let cases = try Self.loadCases()
        #expect(cases.count >= 50)
        var matched = 0
        for (index, c) in cases.enumerated() {
            let ids = tokenizer.encode(c.text, parseSpecial: c.special)
            if ids == c.ids {
                matched += 1
            } else {
                Issue.record("fixture \(index) \(c.name ?? "") \(String(reflecting: c.text)): expected \(c.ids), got \(ids)")
            }
        }
        print("tokenizer fixture: \(matched)/\(cases.count) strings match llama.cpp")
        #expect(matched == cases.count)
    }

    @Test func decodeInvertsEncode() throws {
        let tokenizer = try TokenizerTestSupport.defaultTokenizer()
        for c in try Self.loadCases() {
            #expect(tokenizer.decode(tokenizer.encode(c.text, parseSpecial: c.special)) == c.text)
            #expect(tokenizer.decode(c.ids) == c.text)
        }
    }
}

// MARK: - Default model vocabulary

@Suite struct TokenizerModelTests {
    @Test func specialTokenIDs() throws {
        let tokenizer = try TokenizerTestSupport.defaultTokenizer()
        #expect(tokenizer.vocabularySize == 49152)
        #expect(tokenizer.bosID == 1)
        #expect(tokenizer.eosID == 2)
        #expect(tokenizer.addsBOS == false)
        #expect(tokenizer.preTokenizer == .smollm)
        #expect(tokenizer.tokenText(1) == "<|im_start|>")
        #expect(tokenizer.tokenText(49152) == nil)
        // <|endoftext|> (0) and <|im_end|> (2, also EOS) end generation.
        #expect(tokenizer.eotIDs == [0, 2])
    }

    @Test func specialTokensOnlyWhenParsingSpecials() throws {
        let tokenizer = try TokenizerTestSupport.defaultTokenizer()
        let text = "<|im_start|>user\nHi<|im_end|>"
        let parsed = tokenizer.encode(text, parseSpecial: true)
        #expect(parsed.first == 1)
        #expect(parsed.last == 2)
        let plain = tokenizer.encode(text, parseSpecial: false)
        #expect(!plain.contains(1) && !plain.contains(2))
        #expect(tokenizer.decode(plain) == text)
        #expect(tokenizer.decode(parsed, skipSpecial: true) == "user\nHi")
    }

    @Test func encodesLongPromptQuickly() throws {
        let tokenizer = try TokenizerTestSupport.defaultTokenizer()
        var prompt = ""
        let sentences = [
            "The quick brown fox jumps over the lazy dog. ",
            "In 1969, Apollo 11 landed on the Moon; Neil Armstrong said: \"That's one small step...\"\n",
            "func encode(_ text: String) -> [Int32] { return [] }  // café, naïve, 日本語 😀\n",
        ]
        while prompt.utf8.count < 9000 { prompt += sentences[prompt.utf8.count % 3] }
        _ = tokenizer.encode(prompt, parseSpecial: true)  // warm up
        var best = Duration.seconds(1000)
        var count = 0
        for _ in 0..<5 {
            let start = ContinuousClock.now
            count = tokenizer.encode(prompt, parseSpecial: true).count
            best = min(best, ContinuousClock.now - start)
        }
        print("encode: \(count) tokens in \(best)")
        #expect(count >= 2000)
        // Budget is 10 ms for 2000 tokens on an idle core. A regression guard (a quadratic merge
        // loop takes seconds), with 10x headroom: the best of 5 on a slow 2-core host with
        // CPU-bound neighbours and the other suites running beside it.
        #expect(best < .milliseconds(10) * (Double(count) / 2000) * 10)
    }
}

// MARK: - Hand-made vocabularies

@Suite struct TokenizerUnitTests {
    /// A tiny vocabulary: all 256 byte tokens, a few merges, two control tokens and one user-defined.
    static func tinyTokenizer(pre: PreTokenizer = .gpt2) throws -> Tokenizer {
        var tokens: [String] = (0..<256).map { byteText(UInt8($0)) }
        var merges: [String] = []
        func addMerge(_ left: String, _ right: String) {
            merges.append("\(left) \(right)")
            if !tokens.contains(left + right) { tokens.append(left + right) }
        }
        addMerge("l", "o")      // rank 0
        addMerge("lo", "w")     // rank 1
        addMerge("Ġ", "l")      // rank 2
        addMerge("Ġl", "ow")    // rank 3
        addMerge("e", "r")      // rank 4
        addMerge("low", "er")   // rank 5
        var types = [Int32](repeating: 1, count: tokens.count)
        tokens += ["<|a|>", "<|a|><|b|>", "<u>"]
        types += [3, 3, 4]
        return try Tokenizer(
            tokens: tokens, tokenTypes: types, merges: merges, preTokenizer: pre, bosID: Int32(tokens.count - 3),
            eosID: Int32(tokens.count - 2), addsBOS: true)
    }

    /// GPT-2 byte-level text of one byte.
    static func byteText(_ byte: UInt8) -> String {
        var next: UInt32 = 256
        for b in 0..<256 {
            let printable = (0x21...0x7E).contains(b) || (0xA1...0xAC).contains(b) || (0xAE...0xFF).contains(b)
            let scalar = printable ? UInt32(b) : next
            if !printable { next += 1 }
            if b == Int(byte) { return String(Character(Unicode.Scalar(scalar)!)) }
        }
        fatalError("unreachable")
    }

    @Test func mergesApplyByRank() throws {
        let tokenizer = try Self.tinyTokenizer()
        // " low": "l o" (rank 0) beats "Ġ l" (rank 2), so "Ġl ow" can never apply.
        // " la": only "Ġ l" applies.
        let ids = tokenizer.encode("lower low la", parseSpecial: false)
        #expect(ids.map { tokenizer.tokenText($0)! } == ["lower", "Ġ", "low", "Ġl", "a"])
        #expect(tokenizer.decode(ids) == "lower low la")
    }

    @Test func specialTokensLongestFirst() throws {
        let tokenizer = try Self.tinyTokenizer()
        let base = Int32(tokenizer.vocabularySize - 3)
        #expect(tokenizer.encode("<|a|><|b|>x<|a|>", parseSpecial: true) == [base + 1, 120, base])
        // Control tokens are plain text without parseSpecial; user-defined tokens always match.
        let plain = tokenizer.encode("<|a|><u>", parseSpecial: false)
        #expect(!plain.contains(base) && plain.last == base + 2)
        #expect(tokenizer.encode("x", parseSpecial: false, addSpecial: true) == [base, 120])
        #expect(tokenizer.decode([base, 120], skipSpecial: true) == "x")
        #expect(tokenizer.decode([base, 120]) == "<|a|>x")
        #expect(tokenizer.eotIDs == [base + 1])
    }

    @Test func everyByteRoundTrips() throws {
        let tokenizer = try Self.tinyTokenizer()
        let text = "tab\there\r\n\u{0}\u{7F} é 😀 \u{FEFF}"
        #expect(tokenizer.decode(tokenizer.encode(text, parseSpecial: false)) == text)
    }

    @Test func streamingDecoderHoldsBackPartialCharacters() throws {
        let tokenizer = try Self.tinyTokenizer()
        // 😀 is F0 9F 98 80: four single-byte tokens.
        let ids = tokenizer.encode("a😀b", parseSpecial: false)
        #expect(ids.count == 6)
        var decoder = Tokenizer.StreamingDecoder(tokenizer: tokenizer)
        let pieces = ids.map { decoder.append($0) }
        #expect(pieces == ["a", "", "", "", "😀", "b"])
        #expect(!decoder.hasPendingBytes)
        // A dangling lead byte is flushed as U+FFFD at the end.
        _ = decoder.append(ids[1])
        #expect(decoder.hasPendingBytes)
        #expect(decoder.finish() == "\u{FFFD}")
        // A lone continuation byte (token 0x80 is byte 0x80 here) can never complete: not held back.
        #expect(decoder.append(0x80) == "\u{FFFD}")
        #expect(!decoder.hasPendingBytes)
    }

    @Test func inconsistentArraysThrow() {
        #expect(throws: TokenizerError.tokenTypeCountMismatch(tokens: 2, types: 1)) {
            try Tokenizer(tokens: ["a", "b"], tokenTypes: [1], merges: [], preTokenizer: .gpt2, bosID: nil, eosID: nil)
        }
        #expect(throws: TokenizerError.malformedMerge(index: 0, text: "ab")) {
            try Tokenizer(tokens: ["a", "b"], tokenTypes: [], merges: ["ab"], preTokenizer: .gpt2, bosID: nil, eosID: nil)
        }
        #expect(throws: TokenizerError.self) {
            try Tokenizer(tokens: ["a"], tokenTypes: [], merges: [], preTokenizer: .gpt2, bosID: 5, eosID: nil)
        }
    }

    @Test func unknownPreTokenizerIsNamed() {
        #expect(throws: TokenizerError.unknownPreTokenizer("falcon")) { try PreTokenizer(name: "falcon") }
        #expect(TokenizerError.unknownPreTokenizer("falcon").description.contains("falcon"))
        #expect(TokenizerError.unsupportedModel("rwkv").description.contains("\"gpt2\" (byte-level BPE) and \"llama\" (SentencePiece)"))
    }

    @Test func unknownTokenizerModelIsRejected() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("rwkv-\(UUID()).gguf").path
        try Self.minimalGGUF(stringKeys: ["tokenizer.ggml.model": "rwkv"]).write(to: URL(fileURLWithPath: path))
        defer { try? FileManager.default.removeItem(atPath: path) }
        #expect(throws: TokenizerError.unsupportedModel("rwkv")) { try Tokenizer(gguf: GGUFFile(path: path)) }
    }

    /// A tiny SentencePiece vocabulary: merges by score, spaces as ▁, byte fallback, space prefix.
    @Test func sentencePieceMergesByScoreWithByteFallback() throws {
        let bytes = (0..<256).map { String(format: "<0x%02X>", $0) }
        let pieces = ["<unk>", "<s>", "</s>", "▁", "a", "b", "c", "ab", "bc", "▁a", "▁ab", "abc"] + bytes
        let scores: [Float] = [0, 0, 0, -1, -2, -2, -2, -3, -1, -4, -5, -6] + [Float](repeating: 0, count: 256)
        let types: [Int32] = [2, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1] + [Int32](repeating: 6, count: 256)
        let t = try Tokenizer(tokens: pieces, tokenTypes: types, merges: [], preTokenizer: .gpt2, bosID: 1, eosID: 2, addsBOS: true,
                              model: .sentencePiece, scores: scores, addsSpacePrefix: true)
        // "▁abc": bc (-1) merges before ab (-3) and ▁a (-4); then ▁a (-4) + bc has no token.
        #expect(t.encode("abc", parseSpecial: false) == [9, 8])
        #expect(t.encode("abc", parseSpecial: false, addSpecial: true) == [1, 9, 8])
        // "é" has no piece: its two UTF-8 bytes fall back to <0xC3> <0xA9>.
        #expect(t.encode("é", parseSpecial: false) == [3, 12 + 0xC3, 12 + 0xA9])
        #expect(t.decode([1, 9, 8]) == "abc")
        #expect(t.decode(t.encode("a bc é", parseSpecial: false)) == "a bc é")
    }

    /// A GGUF v3 file with no tensors and only string metadata.
    static func minimalGGUF(stringKeys: [String: String]) -> Data {
        var data = Data()
        func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { data.append(contentsOf: $0) } }
        func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { data.append(contentsOf: $0) } }
        func string(_ s: String) { u64(UInt64(s.utf8.count)); data.append(contentsOf: s.utf8) }
        data.append(contentsOf: Array("GGUF".utf8))
        u32(3)
        u64(0)
        u64(UInt64(stringKeys.count))
        for (key, value) in stringKeys.sorted(by: { $0.key < $1.key }) {
            string(key)
            u32(8)  // string type
            string(value)
        }
        return data
    }
}

// MARK: - Pre-tokenizer splits (expected words from Python `regex` with the tokenizer.json patterns)

@Suite struct PreTokenizerSplitTests {
    @Test(arguments: [PreTokenizer.gpt2, .smollm, .llama3, .qwen2])
    func splitsMatchRegex(pre: PreTokenizer) {
        let expected: [[String]]
        switch pre {
        case .gpt2: expected = Self.gpt2
        case .smollm: expected = Self.smollm
        case .llama3: expected = Self.llama3
        case .qwen2: expected = Self.qwen2
        }
        for (text, words) in zip(Self.texts, expected) {
            #expect(pre.split(text) == words, "\(pre) \(String(reflecting: text))")
        }
    }

    static let texts: [String] = [
        "Hello world! It's 2024, isn't it?",
        "  leading spaces and trailing   ",
        "tabs\tand\nnewlines\n\n  indented\r\nCRLF",
        "I'LL DO IT, we'Re here, you'VE won",
        "numbers 1234567 and 3.14159 and ١٢٣",
        "Ünïcödé café naïve 日本語のテキスト 한국어",
        "emoji 😀👍🏽 mixed!!! ... ---",
        "code: fn main() { let x = a+b*3; }",
        "x  \n  y",
        "'s 'T '",
        "\u{a0}nbsp\u{2003}em space",
    ]
    static let gpt2: [[String]] = [
        ["Hello", " world", "!", " It", "'s", " 2024", ",", " isn", "'t", " it", "?"],
        [" ", " leading", " spaces", " and", " trailing", "   "],
        ["tabs", "\t", "and", "\n", "newlines", "\n\n ", " indented", "\r", "\n", "CRLF"],
        ["I", "'", "LL", " DO", " IT", ",", " we", "'", "Re", " here", ",", " you", "'", "VE", " won"],
        ["numbers", " 1234567", " and", " 3", ".", "14159", " and", " ١٢٣"],
        ["Ünïcödé", " café", " naïve", " 日本語のテキスト", " 한국어"],
        ["emoji", " 😀👍🏽", " mixed", "!!!", " ...", " ---"],
        ["code", ":", " fn", " main", "()", " {", " let", " x", " =", " a", "+", "b", "*", "3", ";", " }"],
        ["x", "  \n ", " y"],
        ["'s", " '", "T", " '"],
        ["\u{a0}", "nbsp", "\u{2003}", "em", " space"],
    ]
    static let smollm: [[String]] = [
        ["Hello", " world", "!", " It", "'s", " ", "2", "0", "2", "4", ",", " isn", "'t", " it", "?"],
        [" ", " leading", " spaces", " and", " trailing", "   "],
        ["tabs", "\t", "and", "\n", "newlines", "\n\n ", " indented", "\r", "\n", "CRLF"],
        ["I", "'", "LL", " DO", " IT", ",", " we", "'", "Re", " here", ",", " you", "'", "VE", " won"],
        ["numbers", " ", "1", "2", "3", "4", "5", "6", "7", " and", " ", "3", ".", "1", "4", "1", "5", "9", " and", " ", "١", "٢", "٣"],
        ["Ünïcödé", " café", " naïve", " 日本語のテキスト", " 한국어"],
        ["emoji", " 😀👍🏽", " mixed", "!!!", " ...", " ---"],
        ["code", ":", " fn", " main", "()", " {", " let", " x", " =", " a", "+", "b", "*", "3", ";", " }"],
        ["x", "  \n ", " y"],
        ["'s", " '", "T", " '"],
        ["\u{a0}", "nbsp", "\u{2003}", "em", " space"],
    ]
    static let llama3: [[String]] = [
        ["Hello", " world", "!", " It", "'s", " ", "202", "4", ",", " isn", "'t", " it", "?"],
        [" ", " leading", " spaces", " and", " trailing", "   "],
        ["tabs", "\tand", "\n", "newlines", "\n\n", " ", " indented", "\r\n", "CRLF"],
        ["I", "'LL", " DO", " IT", ",", " we", "'Re", " here", ",", " you", "'VE", " won"],
        ["numbers", " ", "123", "456", "7", " and", " ", "3", ".", "141", "59", " and", " ", "١٢٣"],
        ["Ünïcödé", " café", " naïve", " 日本語のテキスト", " 한국어"],
        ["emoji", " 😀👍🏽", " mixed", "!!!", " ...", " ---"],
        ["code", ":", " fn", " main", "()", " {", " let", " x", " =", " a", "+b", "*", "3", ";", " }"],
        ["x", "  \n", " ", " y"],
        ["'s", " '", "T", " '"],
        ["\u{a0}nbsp", "\u{2003}em", " space"],
    ]
    static let qwen2: [[String]] = [
        ["Hello", " world", "!", " It", "'s", " ", "2", "0", "2", "4", ",", " isn", "'t", " it", "?"],
        [" ", " leading", " spaces", " and", " trailing", "   "],
        ["tabs", "\tand", "\n", "newlines", "\n\n", " ", " indented", "\r\n", "CRLF"],
        ["I", "'LL", " DO", " IT", ",", " we", "'Re", " here", ",", " you", "'VE", " won"],
        ["numbers", " ", "1", "2", "3", "4", "5", "6", "7", " and", " ", "3", ".", "1", "4", "1", "5", "9", " and", " ", "١", "٢", "٣"],
        ["Ünïcödé", " café", " naïve", " 日本語のテキスト", " 한국어"],
        ["emoji", " 😀👍🏽", " mixed", "!!!", " ...", " ---"],
        ["code", ":", " fn", " main", "()", " {", " let", " x", " =", " a", "+b", "*", "3", ";", " }"],
        ["x", "  \n", " ", " y"],
        ["'s", " '", "T", " '"],
        ["\u{a0}nbsp", "\u{2003}em", " space"],
    ]
}
