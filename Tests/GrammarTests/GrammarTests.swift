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
        (#"{"type": "string", "pattern": "^(a)\\1$"}"#, "'pattern' at #: backreferences"),
        (#"{"type": "string", "pattern": "a(?=b)"}"#, "lookaround"),
        (#"{"type": "string", "pattern": "\\bword"}"#, "word boundary"),
        (#"{"type": "string", "pattern": "\\p{L}"}"#, "Unicode property"),
        (#"{"type": "string", "pattern": "a^b"}"#, "'^' is supported only"),
        (#"{"type": "string", "pattern": "(a$)"}"#, "'$' is supported only"),
        (#"{"type": "string", "pattern": "(?i)a"}"#, "inline flags"),
        (#"{"type": "string", "pattern": "[a-z]+", "maxLength": 4}"#, "'maxLength' together with 'pattern'"),
        (#"{"type": "string", "format": "email"}"#, "format 'email' is not supported"),
        (#"{"type": "object", "properties": {"a": {"type": "number", "minimum": 0.5}}}"#, "'minimum' at #/properties/a: a fractional bound"),
        (#"{"type": "integer", "minimum": 5, "maximum": 4}"#, "no integer"),
        (#"{"type": "integer", "multipleOf": 3}"#, "'multipleOf' at #"),
        (#"{"anyOf": [{"type": "string"}], "minLength": 2}"#, "'minLength' beside 'anyOf'"),
        (#"{"allOf": [{"type": "string", "maxLength": 2}, {"maxLength": 3}]}"#, "'maxLength' to different values"),
        (#"{"allOf": [{"type": "string"}, {"type": "integer"}]}"#, "nothing in common"),
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

    /// Every integer in a window accepted exactly when it lies in the bounds: the digit-level
    /// range grammar at and around each boundary, both signs, and the bounds' combinations.
    @Test(arguments: [
        (#""minimum": 0"#, 0 as Int?, nil as Int?), (#""minimum": 3"#, 3, nil), (#""minimum": 25"#, 25, nil),
        (#""minimum": -123"#, -123, nil), (#""maximum": 30"#, nil, 30), (#""maximum": -5"#, nil, -5),
        (#""maximum": 100"#, nil, 100), (#""minimum": 15, "maximum": 300"#, 15, 300), (#""minimum": -123, "maximum": 42"#, -123, 42),
        (#""minimum": -10, "maximum": 10"#, -10, 10), (#""minimum": 7, "maximum": 7"#, 7, 7),
        (#""exclusiveMinimum": 9, "exclusiveMaximum": 100"#, 10, 99), (#""exclusiveMinimum": -1, "maximum": 0"#, 0, 0),
        (#""minimum": 1.5, "maximum": 99.9"#, 2, 99), (#""exclusiveMaximum": -99"#, nil, -100),
        (#""minimum": 0, "exclusiveMinimum": 0"#, 1, nil), (#""minimum": 5, "exclusiveMinimum": true"#, 6, nil),
    ])
    func integerRanges(bounds: String, low: Int?, high: Int?) throws {
        let g = try compiled(#"{"type": "integer", "# + bounds + "}")
        for n in -400...400 {
            let inRange = (low.map { n >= $0 } ?? true) && (high.map { n <= $0 } ?? true)
            #expect(accepts(g, String(n)) == inRange, "\(bounds): \(n)")
        }
        for n in [12345, 999_999, 1_000_000_000, 9_999_999_999_999_999, -12345, -9_999_999_999_999_999] {
            let inRange = (low.map { n >= $0 } ?? true) && (high.map { n <= $0 } ?? true)
            #expect(accepts(g, String(n)) == inRange, "\(bounds): \(n)")
        }
        for bad in ["01", "-0", "1.0", "+1", "", "1e2", "12345678901234567"] {
            #expect(!accepts(g, bad), "\(bounds): \(bad)")
        }
    }

    /// Numbers with integer-valued bounds: each written number (integer part, optional
    /// fraction) accepted exactly when its value is in range, fractions at the boundaries.
    @Test(arguments: [
        (#""minimum": 0, "maximum": 1"#, 0.0 as Double?, false, 1.0 as Double?, false),
        (#""exclusiveMinimum": 0, "exclusiveMaximum": 1"#, 0, true, 1, true),
        (#""minimum": -2, "exclusiveMaximum": 3"#, -2, false, 3, true),
        (#""exclusiveMinimum": -2"#, -2, true, nil, false),
        (#""maximum": -1"#, nil, false, -1, false),
        (#""minimum": 10, "maximum": 10.0"#, 10, false, 10, false),
    ])
    func numberRanges(bounds: String, low: Double?, lowStrict: Bool, high: Double?, highStrict: Bool) throws {
        let g = try compiled(#"{"type": "number", "# + bounds + "}")
        for whole in -12...12 {
            for fraction in ["", ".0", ".00", ".5", ".05", ".999", ".001"] {
                let magnitude = "\(abs(whole))\(fraction)"
                for text in whole < 0 ? ["-" + magnitude] : [magnitude, "-" + magnitude] {
                    let v = Double(text)!
                    if v == 0 && text.hasPrefix("-") { continue }  // "-0.0": not generated, though valid
                    var inRange = true
                    if let low { inRange = inRange && (lowStrict ? v > low : v >= low) }
                    if let high { inRange = inRange && (highStrict ? v < high : v <= high) }
                    #expect(accepts(g, text) == inRange, "\(bounds): \(text)")
                }
            }
        }
        #expect(!accepts(g, "1e0"))
    }

    @Test func patterns() throws {
        let cases: [(String, [String], [String])] = [
            (#"^abc?d*efg+(hij)?kl$"#, ["abefgkl", "abcdddefgggkl", "abefghijkl"], ["abcefkl", "xabefgkl", "abefgkl "]),
            (#"^[A-Z]{3}-\d{2,4}$"#, ["ABC-12", "XYZ-1234"], ["AB-12", "ABC-1", "ABC-12345", "abc-12"]),
            (#"^(\([0-9]{1,3}\))?[0-9]{3}-[0-9]{4}$"#, ["(12)345-6789", "345-6789"], ["()345-6789", "345-678"]),
            (#"^A|B|C$"#, ["A", "Axyz", "B", "xBy", "C", "xC"], ["xA", "Cx", ""]),
            (#"^\w+@\w+\.com$"#, ["a_1@b.com"], ["a@b.org", "@b.com", "a@b-com"]),
            (#"^[^,]+,\s?\S+$"#, ["x,y", "x, y", "a b,c"], [",y", "x,", "x,  y"]),
            (#"\d"#, ["7", "ab7cd"], ["", "abc"]),
            (#"^(?:ab|cd)+$"#, ["ab", "cdab"], ["", "abc"]),
            (#"^(?<year>\d{4})-\d{2}$"#, ["2024-01"], ["24-01"]),
            (#"^a{2}b{1,}c{0,1}[.]$"#, ["aab.", "aabbbc."], ["ab.", "aab", "aabx"]),
            (#"^\$\.\*\[\]$"#, ["$.*[]"], ["x.*[]"]),
            (#"^((a|b)*c)+$"#, ["c", "abc", "acbc"], ["", "ab", "cd"]),
            (#"^[\dx-]{2}|^é+$"#, ["1-", "x9", "éé"], ["a1", "é1"]),
        ]
        for (pattern, good, bad) in cases {
            let g = try compiled(#"{"type": "string", "pattern": "# + JSONValue.quoted(pattern) + "}")
            let regex = try NSRegularExpression(pattern: pattern)
            for text in good {
                #expect(regex.firstMatch(in: text, range: NSRange(text.startIndex..., in: text)) != nil, "reference: \(pattern) ~ \(text)")
                #expect(accepts(g, JSONValue.quoted(text)), "\(pattern) should accept \(text)")
            }
            for text in bad {
                #expect(regex.firstMatch(in: text, range: NSRange(text.startIndex..., in: text)) == nil, "reference: \(pattern) !~ \(text)")
                #expect(!accepts(g, JSONValue.quoted(text)), "\(pattern) should reject \(text)")
            }
        }
    }

    @Test func patternCharactersAreWrittenAsJSONWritesThem() throws {
        let g = try compiled(#"{"type": "string", "pattern": "^[\"a]\\\\.$"}"#)
        #expect(accepts(g, #""\"\\x""#))  // the string `"\x`: quote and backslash escaped
        #expect(accepts(g, #""a\\\"""#))
        #expect(!accepts(g, #""a\x""#))
        // A '{' that starts no quantifier is a literal (ICU refuses it, so no reference check).
        let brace = try compiled(#"{"type": "string", "pattern": "^x{a}$"}"#)
        #expect(accepts(brace, #""x{a}""#) && !accepts(brace, #""x""#))
        let dot = try compiled(#"{"type": "string", "pattern": "^.$"}"#)
        #expect(accepts(dot, #""\t""#))
        #expect(!accepts(dot, #""\n""#))
        #expect(!accepts(dot, "\"\t\""))  // a raw tab is not JSON
    }

    @Test func formats() throws {
        let cases: [(String, [String], [String])] = [
            ("date", ["2024-02-28", "1999-12-31", "2023-04-30"], ["2024-02-30", "2024-13-01", "2024-04-31", "0999-01-01", "2024-1-01"]),
            ("time", ["23:59:59Z", "00:00:00.123+02:00", "12:30:00-05:30"], ["24:00:00Z", "12:60:00Z", "12:30:00", "1:00:00Z"]),
            ("date-time", ["2024-05-06T07:08:09Z", "2024-05-06T07:08:09.5+01:00"], ["2024-05-06 07:08:09Z", "2024-05-06T07:08Z"]),
            ("uuid", ["123e4567-e89b-12d3-a456-426614174000"], ["123e4567e89b12d3a456426614174000", "123e4567-e89b-12d3-a456-42661417400"]),
            ("ipv4", ["192.168.0.1", "255.255.255.255", "0.0.0.0"], ["256.1.1.1", "1.2.3", "01.2.3.4"]),
        ]
        for (format, good, bad) in cases {
            let g = try compiled(#"{"type": "string", "format": "\#(format)"}"#)
            for text in good { #expect(accepts(g, JSONValue.quoted(text)), "\(format): \(text)") }
            for text in bad { #expect(!accepts(g, JSONValue.quoted(text)), "\(format): \(text)") }
        }
    }

    @Test func oneOfAllOfNullableAndTypeInference() throws {
        let tagged = try compiled(#"""
        {"oneOf": [{"type": "object", "properties": {"kind": {"const": "cat"}, "lives": {"type": "integer", "minimum": 1, "maximum": 9}}, "required": ["kind", "lives"]},
                   {"type": "object", "properties": {"kind": {"const": "dog"}}, "required": ["kind"]}],
         "discriminator": {"propertyName": "kind"}}
        """#)
        #expect(accepts(tagged, #"{"kind": "cat", "lives": 9}"#))
        #expect(accepts(tagged, #"{"kind": "dog"}"#))
        #expect(!accepts(tagged, #"{"kind": "cat", "lives": 10}"#))
        let merged = try compiled(#"""
        {"$defs": {"base": {"type": "object", "properties": {"id": {"type": "integer", "minimum": 0}}, "required": ["id"]}},
         "allOf": [{"$ref": "#/$defs/base"}, {"properties": {"id": {"maximum": 5}, "name": {"type": "string", "maxLength": 3}}, "required": ["name"]}]}
        """#)
        #expect(accepts(merged, #"{"id": 5, "name": "abc"}"#))
        #expect(!accepts(merged, #"{"id": 6, "name": "abc"}"#))
        #expect(!accepts(merged, #"{"id": -1, "name": "abc"}"#))
        #expect(!accepts(merged, #"{"id": 1}"#))
        let refWithSiblings = try compiled(##"{"$defs": {"n": {"type": "integer"}}, "$ref": "#/$defs/n", "minimum": 2, "description": "x"}"##)
        #expect(accepts(refWithSiblings, "2"))
        #expect(!accepts(refWithSiblings, "1"))
        let nullable = try compiled(#"{"type": ["integer", "null"], "maximum": 3}"#)
        #expect(accepts(nullable, "null") && accepts(nullable, "3") && !accepts(nullable, "4"))
        let openAPI = try compiled(#"{"type": "string", "nullable": true, "minLength": 1}"#)
        #expect(accepts(openAPI, "null") && accepts(openAPI, #""a""#) && !accepts(openAPI, #""""#))
        let inferred = try compiled(#"{"minimum": 1}"#)
        #expect(accepts(inferred, "1.5") && !accepts(inferred, "0.5") && !accepts(inferred, #""x""#))
        let constant = try compiled(#"{"enum": [1, "a", null, [true]]}"#)
        #expect(accepts(constant, "[true]") && accepts(constant, "null") && !accepts(constant, "2"))
    }

    @Test func anyJSONObject() throws {
        let g = try toy.grammar(JSONSchemaGrammar.gbnfForAnyObject())
        #expect(accepts(g, #"{"a": [1, {"b": null}], "c": "d"}"#))
        #expect(!accepts(g, #"[1]"#))
        #expect(!accepts(g, #"{"a": tru}"#))
    }

    /// A high surrogate followed by an escape that is not a low one (found by fuzz/run.sh
    /// request-json: the subtraction overflowed and trapped) becomes U+FFFD, the escape after it
    /// itself; a proper pair is one scalar, and a lone low surrogate is U+FFFD.
    @Test func jsonValueSurrogateEscapes() throws {
        #expect(try JSONValue.parse(#""\ud83d\ud0e00""#) == .string("\u{FFFD}\u{D0E0}0"))
        #expect(try JSONValue.parse(#""\ud83d\u0041""#) == .string("\u{FFFD}A"))
        #expect(try JSONValue.parse(#""\ud83d\ude00""#) == .string("\u{1F600}"))
        #expect(try JSONValue.parse(#""\ude00x""#) == .string("\u{FFFD}x"))
        #expect(try JSONValue.parse(#""\ud83d""#) == .string("\u{FFFD}"))
    }

    @Test func jsonValueKeepsOrderAndRoundTrips() throws {
        let v = try JSONValue.parse(#" {"z": 1, "a": [true, null, "\u00e9\n"], "m": {"k": -2.5e1}} "#)
        #expect(v.text == #"{"z": 1, "a": [true, null, "é\n"], "m": {"k": -2.5e1}}"#)
    }
}
