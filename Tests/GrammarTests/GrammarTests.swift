import Foundation
import Grammar
import Testing

/// A toy vocabulary: tokens 0...255 are the single bytes, then `extra` multi-byte pieces, then
/// one stop token.
struct ToyVocabulary {
    let pieces: [[UInt8]]
    let stop: Int32
    let vocabulary: TokenVocabulary

    init(extra: [String]) {
        var pieces = (0..<256).map { [UInt8($0)] }
        pieces += extra.map { Array($0.utf8) }
        stop = Int32(pieces.count)
        pieces.append([])
        self.pieces = pieces
        let p = pieces
        let stop = self.stop
        vocabulary = TokenVocabulary(count: pieces.count, stopTokens: [stop]) { id in id == stop ? nil : p[Int(id)] }
    }

    func grammar(_ gbnf: String) throws -> TokenGrammar {
        TokenGrammar(grammar: try Grammar(gbnf: gbnf), vocabulary: vocabulary)
    }
}

let toy = ToyVocabulary(extra: ["{\"", "\": ", "true", "fal", "se", "\"}", "ab", "abc", "é", "\u{e9}x", "12", "null"])

/// Whether `text` is a complete match of `g`, fed byte by byte.
func accepts(_ g: TokenGrammar, _ text: String) -> Bool {
    var s = g.initialState
    for b in text.utf8 {
        guard let n = g.advance(s, token: Int32(b)) else { return false }
        s = n
    }
    return g.isAccepting(s)
}

/// Whether `text` is a prefix of some match.
func isPrefix(_ g: TokenGrammar, _ text: String) -> Bool {
    var s = g.initialState
    for b in text.utf8 {
        guard let n = g.advance(s, token: Int32(b)) else { return false }
        s = n
    }
    return true
}

@Suite struct GBNFTests {
    @Test func literalsClassesAndRepetition() throws {
        let g = try toy.grammar(#"""
        root ::= "a" [0-9]+ ("x" | "yz")? tail  # comment
        tail ::= [^\n]{0,3}
        """#)
        #expect(accepts(g, "a1"))
        #expect(accepts(g, "a123x"))
        #expect(accepts(g, "a9yzabc"))
        #expect(!accepts(g, "a"))
        #expect(!accepts(g, "a1yzabcd"))
        #expect(!accepts(g, "b1"))
        #expect(isPrefix(g, "a12y"))
    }

    @Test func alternativesAcrossLinesAndNesting() throws {
        let g = try toy.grammar("""
        root ::= item ("," item)*
        item ::= "n" | "(" root ")"
            | "e"
        """)
        for ok in ["n", "n,e", "(n,(e)),n"] { #expect(accepts(g, ok), "\(ok)") }
        for bad in ["", "n,", "(n", "x"] { #expect(!accepts(g, bad), "\(bad)") }
    }

    @Test func unicodeClassesAndEscapes() throws {
        let g = try toy.grammar(#"root ::= [à-ü]+ "\x41" "\u00e9" . "\n""#)
        #expect(accepts(g, "éèAé€\n"))
        #expect(!accepts(g, "eA\u{e9}x\n"))
    }

    @Test(arguments: [
        ("root ::= root \"a\" | \"b\"", "left-recursive"),
        ("root ::= x\nx ::= y \"a\"\ny ::= \"\" | x", "left-recursive"),
        ("root ::= missing", "not defined"),
        ("start ::= \"a\"", "no 'root'"),
        ("root ::= \"a", "unterminated"),
        ("root ::= [a-", "unterminated"),
        ("root ::= \"a\" {2,1}", "below the minimum"),
        ("root ::= \"a\"{5000}", "too large"),
        ("root ::= \"a\"\nroot ::= \"b\"", "defined twice"),
    ])
    func errorsNameTheProblem(source: String, fragment: String) {
        do {
            _ = try Grammar(gbnf: source)
            Issue.record("expected an error for \(source)")
        } catch {
            #expect("\(error)".contains(fragment), "\(error)")
        }
    }
}

@Suite struct TokenMaskTests {
    /// The mask must equal, token by token, what feeding each token's bytes allows.
    @Test(arguments: ["", "{\"", "{\"a", "{\"ab\": ", "{\"ab\": tr", "{\"ab\": null"])
    func maskEqualsBruteForce(prefix: String) throws {
        let g = try toy.grammar(#"""
        root ::= "{\"" key "\": " value "}"
        key ::= [a-c]+
        value ::= "true" | "false" | "null" | [0-9]+ | "\"" [^"]* "\""
        """#)
        var s = g.initialState
        for b in prefix.utf8 { s = try #require(g.advance(s, token: Int32(b))) }
        let mask = g.mask(s)
        for t in 0..<toy.pieces.count {
            let allowed = mask[t / 64] & (1 << UInt64(t % 64)) != 0
            #expect(allowed == (g.advance(s, token: Int32(t)) != nil), "token \(t) \(toy.pieces[t]) after \(prefix)")
        }
    }

    @Test func stopTokenOnlyWhenComplete() throws {
        let g = try toy.grammar(#"root ::= "ab" "c"?"#)
        var s = g.initialState
        #expect(!g.allows(s, token: toy.stop))
        s = try #require(g.advance(s, token: Int32(toy.pieces.firstIndex(of: Array("ab".utf8))!)))
        #expect(g.allows(s, token: toy.stop))
        #expect(!g.isComplete(s))
        s = try #require(g.advance(s, token: Int32(UInt8(ascii: "c"))))
        #expect(g.isComplete(s))
        #expect(g.allowedCount(s) == 1)
    }

    @Test func tokensSplittingACodePoint() throws {
        let g = try toy.grammar(#"root ::= "é" "x""#)
        let bytes = Array("é".utf8)
        var s = g.initialState
        s = try #require(g.advance(s, token: Int32(bytes[0])))
        #expect(!g.allows(s, token: Int32(UInt8(ascii: "x"))))
        s = try #require(g.advance(s, token: Int32(bytes[1])))
        #expect(g.allows(s, token: Int32(UInt8(ascii: "x"))))
        // A token holding the whole code point and more.
        let whole = Int32(toy.pieces.firstIndex(of: Array("\u{e9}x".utf8))!)
        #expect(g.allows(g.initialState, token: whole))
        #expect(!g.allows(g.initialState, token: Int32(0xC3 + 1)))
    }

    /// A lead byte whose payload bits are small must not pass for ASCII (overlong encodings).
    @Test func overlongSequencesAreRejected() throws {
        let g = try toy.grammar(#"root ::= "\"" [a-z]*"#)
        for lead in [0xC0, 0xC1, 0xE0, 0xF0] { #expect(!g.allows(g.initialState, token: Int32(lead)), "lead \(lead)") }
        var s = g.initialState
        s = try #require(g.advance(s, token: Int32(UInt8(ascii: "\""))))
        #expect(!g.allows(s, token: Int32(0xE0)))
        let mask = g.mask(g.initialState)
        for t in 0x80..<0x100 { #expect(mask[t / 64] & (1 << UInt64(t % 64)) == 0, "byte token \(t)") }
    }

    @Test func forcedTokensAreLongestMatchesOfForcedText() throws {
        let g = try toy.grammar(#"root ::= "{\"ab\": " ("true" | "false") "\"}""#)
        let forced = g.forcedTokens(g.initialState, limit: 16)
        // `{"ab": ` is forced; longest matches `{"`, `ab`, `": `; the last is held back.
        #expect(forced.map { String(decoding: toy.pieces[Int($0)], as: UTF8.self) } == ["{\"", "ab"])
        var s = g.initialState
        for b in "{\"ab\": true".utf8 { s = try #require(g.advance(s, token: Int32(b))) }
        // The rest is forced and ends the output: nothing is held back.
        #expect(g.forcedTokens(s, limit: 16).map { String(decoding: toy.pieces[Int($0)], as: UTF8.self) } == ["\"}"])
    }
}

@Suite struct JSONSchemaTests {
    func compiled(_ schema: String) throws -> TokenGrammar {
        try toy.grammar(try JSONSchemaGrammar.gbnf(schema: try JSONValue.parse(schema)))
    }

    @Test func objectWithRequiredAndOptionalProperties() throws {
        let g = try compiled(#"""
        {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"},
         "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 2}},
         "required": ["name"], "additionalProperties": false}
        """#)
        for ok in [#"{"name": "x"}"#, #"{"name": "J\"o", "age": -12}"#, #"{"name": "", "tags": ["a", "b"]}"#,
                   #"{"name": "é", "age": 0, "tags": []}"#] {
            #expect(accepts(g, ok), "\(ok)")
        }
        for bad in [#"{}"#, #"{"age": 1}"#, #"{"name": "x", "age": 01}"#, #"{"name": "x", "tags": ["a", "b", "a"]}"#,
                    #"{"age": 1, "name": "x"}"#, #"{"name": "x", "extra": 1}"#, "{\"name\": \"a\nb\"}"] {
            #expect(!accepts(g, bad), "\(bad)")
        }
    }

    @Test func refsAnyOfConstAndRecursion() throws {
        let g = try compiled(#"""
        {"$defs": {"node": {"type": "object", "properties": {"v": {"anyOf": [{"type": "number"}, {"type": "null"}]},
          "next": {"anyOf": [{"$ref": "#/$defs/node"}, {"const": "end"}]}}, "required": ["v", "next"]}},
         "$ref": "#/$defs/node"}
        """#)
        #expect(accepts(g, #"{"v": 1.5e3, "next": {"v": null, "next": "end"}}"#))
        #expect(!accepts(g, #"{"v": 1, "next": "stop"}"#))
    }

    @Test func minAndMaxLengthAndItems() throws {
        let g = try compiled(#"{"type": "array", "items": {"type": "string", "minLength": 1, "maxLength": 2}, "minItems": 1}"#)
        #expect(accepts(g, #"["a", "bc"]"#))
        #expect(!accepts(g, #"[]"#))
        #expect(!accepts(g, #"[""]"#))
        #expect(!accepts(g, #"["abc"]"#))
    }

    @Test(arguments: [
        (#"{"type": "string", "pattern": "^a"}"#, "'pattern' at #"),
        (#"{"type": "object", "properties": {"a": {"type": "integer", "minimum": 0}}}"#, "'minimum' at #/properties/a"),
        (#"{"oneOf": [{"type": "string"}]}"#, "'oneOf'"),
        (#"{"type": "colour"}"#, "unknown type"),
        (##"{"$ref": "#/$defs/missing"}"##, "does not name a definition"),
        (#"{"type": "object", "properties": {}, "required": ["x"]}"#, "no schema in properties"),
    ])
    func unsupportedOrInvalidSchemasNameThePlace(schema: String, fragment: String) throws {
        do {
            _ = try JSONSchemaGrammar.gbnf(schema: try JSONValue.parse(schema))
            Issue.record("expected an error for \(schema)")
        } catch {
            #expect("\(error)".contains(fragment), "\(error)")
        }
    }

    @Test func anyJSONObject() throws {
        let g = try toy.grammar(JSONSchemaGrammar.gbnfForAnyObject())
        #expect(accepts(g, #"{"a": [1, {"b": null}], "c": "d"}"#))
        #expect(!accepts(g, #"[1]"#))
        #expect(!accepts(g, #"{"a": tru}"#))
    }

    @Test func jsonValueKeepsOrderAndRoundTrips() throws {
        let v = try JSONValue.parse(#" {"z": 1, "a": [true, null, "\u00e9\n"], "m": {"k": -2.5e1}} "#)
        #expect(v.text == #"{"z": 1, "a": [true, null, "é\n"], "m": {"k": -2.5e1}}"#)
    }
}
