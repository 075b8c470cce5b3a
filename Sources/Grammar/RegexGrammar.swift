/// Compiles a JSON schema `pattern` (an ECMA-262 regular expression) to a GBNF expression for the
/// inside of a JSON string literal whose decoded text the pattern matches.
///
/// Supported: literals, `.`, classes (`[a-z_]`, `[^,]`, escapes inside), `\d \w \s \D \W \S`,
/// escaped characters (`\.`, `\n`, `\xHH`, `\uHHHH`, `\u{H...}`), groups (`(...)`, `(?:...)`,
/// named `(?<name>...)`), alternation, `?`, `*`, `+`, `{m}`, `{m,}`, `{m,n}` (lazy forms match the
/// same strings), and the anchors `^` and `$` at the ends of the pattern or of a top-level
/// alternative. As in JSON Schema a pattern is not anchored: an end without its anchor matches
/// any characters there. Each character is written as JSON writes it (`"` as `\"`, a newline as
/// `\n`); control characters other than tab, newline and carriage return are never generated.
/// Backreferences, lookaround, word boundaries, Unicode property escapes and inline flags are
/// refused, naming the construct.
struct RegexGrammar {
    let text: [Unicode.Scalar]
    var i = 0
    var depth = 0
    /// GBNF for one character of a JSON string (what an unanchored end repeats).
    let anyCharacter: String
    /// The schema path, for errors.
    let path: String

    /// GBNF matching the JSON-encoded strings `pattern` matches (without the quotes).
    static func gbnf(_ pattern: String, anyCharacter: String, path: String) throws -> String {
        var parser = RegexGrammar(text: Array(pattern.unicodeScalars), anyCharacter: anyCharacter, path: path)
        return try parser.top()
    }

    func unsupported(_ message: String) -> GrammarError {
        .unsupportedFeature(keyword: "pattern", path: path, message: "\(message) (at offset \(i) of the regular expression)")
    }

    var current: Unicode.Scalar? { i < text.count ? text[i] : nil }

    // MARK: - Structure

    /// `alternative ("|" alternative)*`, each alternative with its optional anchors.
    mutating func top() throws -> String {
        var alternatives: [String] = []
        while true {
            let start = current == "^"
            if start { i += 1 }
            let body = try sequence()
            let end = current == "$"
            if end { i += 1 }
            guard current == nil || current == "|" else {
                if current == ")" { throw unsupported("unbalanced ')'") }
                throw unsupported("'$' is supported only at the end of the pattern or of a top-level alternative")
            }
            let any = "\(anyCharacter)*"
            var parts: [String] = []
            if !start { parts.append(any) }
            if !body.isEmpty { parts.append(body) }
            if !end && !(parts.count == 1 && parts[0] == any) { parts.append(any) }
            alternatives.append(parts.isEmpty ? "\"\"" : parts.joined(separator: " "))
            guard current == "|" else { break }
            i += 1
        }
        return alternatives.count == 1 ? alternatives[0] : "( " + alternatives.joined(separator: " | ") + " )"
    }

    /// Alternatives inside a group, up to its `)`.
    mutating func alternation() throws -> String {
        var alternatives: [String] = []
        while true {
            let body = try sequence()
            alternatives.append(body.isEmpty ? "\"\"" : body)
            guard current == "|" else { break }
            i += 1
        }
        return alternatives.count == 1 ? alternatives[0] : "( " + alternatives.joined(separator: " | ") + " )"
    }

    /// Quantified atoms up to `|`, `)`, `$` or the end, as one GBNF unit (empty for none).
    mutating func sequence() throws -> String {
        var units: [String] = []
        var pending = ""  // a run of unquantified literal characters, JSON-encoded
        func flush() {
            if !pending.isEmpty { units.append(JSONSchemaGrammar.literal(pending)); pending = "" }
        }
        while let c = current, c != "|" && c != ")" && c != "$" {
            let atom = try self.atom()
            if let (low, high) = try quantifier() {
                flush()
                guard let unit = atom.unit else { throw unsupported("a quantifier on a character class that matches no character") }
                units.append(unit + Self.repetition(low, high))
            } else if let scalar = atom.scalar {
                pending += Self.jsonEncoded(scalar)
            } else {
                flush()
                guard let unit = atom.unit else { throw unsupported("a character class that matches no character") }
                units.append(unit)
            }
        }
        flush()
        if units.count <= 1 { return units.first ?? "" }
        return "( " + units.joined(separator: " ") + " )"
    }

    /// One atom: a single literal character (kept apart so runs join into one literal), or a
    /// GBNF unit (nil for a class that matches nothing).
    struct Atom {
        var scalar: Unicode.Scalar?
        var unit: String?
    }

    mutating func atom() throws -> Atom {
        let c = current!
        i += 1
        switch c {
        case "(":
            if current == "?" {
                let rest = String(String.UnicodeScalarView(text[i..<min(i + 3, text.count)]))
                if rest.hasPrefix("?:") {
                    i += 2
                } else if rest.hasPrefix("?<") && !rest.hasPrefix("?<=") && !rest.hasPrefix("?<!") || rest.hasPrefix("?P<") {
                    // A named group: the name does not change what matches.
                    while current != nil && current != ">" { i += 1 }
                    guard current == ">" else { throw unsupported("an unterminated group name") }
                    i += 1
                } else if rest.hasPrefix("?=") || rest.hasPrefix("?!") || rest.hasPrefix("?<") {
                    throw unsupported("lookaround '(\(rest.prefix(rest.hasPrefix("?<") ? 3 : 2))' is not supported")
                } else {
                    throw unsupported("inline flags or '(?' groups other than '(?:' and named groups are not supported")
                }
            }
            depth += 1
            defer { depth -= 1 }
            guard depth <= 64 else { throw unsupported("groups nested more than 64 deep") }
            let body = try alternation()
            if current == "$" { throw unsupported("'$' is supported only at the end of the pattern or of a top-level alternative") }
            guard current == ")" else { throw unsupported("an unclosed '('") }
            i += 1
            return Atom(scalar: nil, unit: "( \(body.isEmpty ? "\"\"" : body) )")
        case "[":
            return Atom(scalar: nil, unit: Self.characters(try characterClass()))
        case ".":
            // Any character but a line terminator.
            return Atom(scalar: nil, unit: Self.characters(GBNFParser.complement([0x0A...0x0A, 0x0D...0x0D, 0x2028...0x2029])))
        case "\\":
            let set = try escape(inClass: false)
            if set.count == 1, set[0].lowerBound == set[0].upperBound, let s = Unicode.Scalar(set[0].lowerBound) {
                return Atom(scalar: s, unit: Self.characters(set))
            }
            return Atom(scalar: nil, unit: Self.characters(set))
        case "^":
            throw unsupported("'^' is supported only at the start of the pattern or of a top-level alternative")
        case "*", "+", "?":
            throw unsupported("'\(c)' has nothing to repeat")
        default:
            return Atom(scalar: c, unit: Self.characters([c.value...c.value]))
        }
    }

    /// `?`, `*`, `+`, `{m}`, `{m,}`, `{m,n}` (and their lazy forms) as (low, high), nil if none.
    mutating func quantifier() throws -> (Int, Int?)? {
        guard let c = current else { return nil }
        var bounds: (Int, Int?)
        switch c {
        case "?": bounds = (0, 1); i += 1
        case "*": bounds = (0, nil); i += 1
        case "+": bounds = (1, nil); i += 1
        case "{":
            // `{` that does not form a quantifier is a literal (as in ECMAScript's web grammar).
            let save = i
            i += 1
            guard let low = number() else { i = save; return nil }
            var high: Int? = low
            if current == "," {
                i += 1
                high = current == "}" ? nil : number()
                if high == nil && current != "}" { i = save; return nil }
            }
            guard current == "}" else { i = save; return nil }
            i += 1
            if let high, high < low { throw unsupported("repetition {\(low),\(high)} has its maximum below its minimum") }
            guard low <= Grammar.maxRepetition && (high ?? 0) <= Grammar.maxRepetition else {
                throw unsupported("a repetition bound above \(Grammar.maxRepetition)")
            }
            bounds = (low, high)
        default:
            return nil
        }
        if current == "?" { i += 1 }  // lazy: the same strings
        if let d = current, d == "*" || d == "+" || d == "?" { throw unsupported("'\(d)' has nothing to repeat") }
        return bounds
    }

    mutating func number() -> Int? {
        let start = i
        while let c = current, ("0"..."9").contains(c), i - start < 7 { i += 1 }
        guard i > start else { return nil }
        return Int(String(String.UnicodeScalarView(text[start..<i])))
    }

    static func repetition(_ low: Int, _ high: Int?) -> String {
        switch (low, high) {
        case (0, 1?): return "?"
        case (0, nil): return "*"
        case (1, nil): return "+"
        case (_, nil): return "{\(low),}"
        case (_, let h?) where h == low: return "{\(low)}"
        case (_, let h?): return "{\(low),\(h)}"
        }
    }

    // MARK: - Characters

    /// `\d \w \s` and their complements, as code-point ranges.
    static let digits: [ClosedRange<UInt32>] = [0x30...0x39]
    static let word: [ClosedRange<UInt32>] = [0x30...0x39, 0x41...0x5A, 0x5F...0x5F, 0x61...0x7A]
    /// ECMAScript's WhiteSpace and LineTerminator.
    static let space: [ClosedRange<UInt32>] = [0x09...0x0D, 0x20...0x20, 0xA0...0xA0, 0x1680...0x1680, 0x2000...0x200A,
                                                0x2028...0x2029, 0x202F...0x202F, 0x205F...0x205F, 0x3000...0x3000, 0xFEFF...0xFEFF]

    /// A class after its `[`: the ranges it matches.
    mutating func characterClass() throws -> [ClosedRange<UInt32>] {
        var negated = false
        if current == "^" { negated = true; i += 1 }
        var ranges: [ClosedRange<UInt32>] = []
        while true {
            guard let c = current else { throw unsupported("an unclosed '['") }
            if c == "]" { i += 1; break }
            let first = try classAtom()
            // `a-z` is a range; `-` next to a class escape or before `]` is a literal.
            if current == "-", i + 1 < text.count, text[i + 1] != "]", first.count == 1, first[0].lowerBound == first[0].upperBound {
                let save = i
                i += 1
                let second = try classAtom()
                if second.count == 1, second[0].lowerBound == second[0].upperBound {
                    guard second[0].lowerBound >= first[0].lowerBound else { throw unsupported("a class range with its end below its start") }
                    ranges.append(first[0].lowerBound...second[0].lowerBound)
                    continue
                }
                i = save
            }
            ranges += first
        }
        let merged = GBNFParser.normalize(ranges)
        return negated ? GBNFParser.complement(merged) : merged
    }

    mutating func classAtom() throws -> [ClosedRange<UInt32>] {
        let c = current!
        i += 1
        if c == "\\" { return try escape(inClass: true) }
        return [c.value...c.value]
    }

    /// An escape after its `\`.
    mutating func escape(inClass: Bool) throws -> [ClosedRange<UInt32>] {
        guard let e = current else { throw unsupported("a pattern that ends with '\\'") }
        i += 1
        switch e {
        case "d": return Self.digits
        case "D": return GBNFParser.complement(Self.digits)
        case "w": return Self.word
        case "W": return GBNFParser.complement(Self.word)
        case "s": return Self.space
        case "S": return GBNFParser.complement(Self.space)
        case "n": return [0x0A...0x0A]
        case "r": return [0x0D...0x0D]
        case "t": return [0x09...0x09]
        case "f": return [0x0C...0x0C]
        case "v": return [0x0B...0x0B]
        case "0": return [0...0]
        case "b":
            if inClass { return [0x08...0x08] }
            throw unsupported("the word boundary '\\b' is not supported")
        case "B": throw unsupported("'\\B' is not supported")
        case "x": let v = try hex(2); return [v...v]
        case "u":
            if current == "{" {
                i += 1
                let start = i
                while current != nil && current != "}" { i += 1 }
                guard current == "}", let v = UInt32(String(String.UnicodeScalarView(text[start..<i])), radix: 16), v <= 0x10FFFF else {
                    throw unsupported("a malformed '\\u{...}' escape")
                }
                i += 1
                return [v...v]
            }
            let v = try hex(4); return [v...v]
        case "1"..."9": throw unsupported("backreferences ('\\\(e)') are not supported")
        case "k": throw unsupported("named backreferences ('\\k') are not supported")
        case "p", "P": throw unsupported("Unicode property escapes ('\\\(e){...}') are not supported")
        case "c": throw unsupported("control escapes ('\\c') are not supported")
        default:
            guard !e.properties.isAlphabetic && !("0"..."9").contains(e) else { throw unsupported("the escape '\\\(e)' is not supported") }
            return [e.value...e.value]
        }
    }

    mutating func hex(_ count: Int) throws -> UInt32 {
        var v: UInt32 = 0
        for _ in 0..<count {
            guard let c = current, let d = UInt32(String(c), radix: 16) else { throw unsupported("an escape needs \(count) hex digits") }
            v = v << 4 | d
            i += 1
        }
        return v
    }

    // MARK: - JSON encoding

    /// How JSON writes `scalar` inside a string.
    static func jsonEncoded(_ scalar: Unicode.Scalar) -> String {
        String(JSONValue.quoted(String(scalar)).dropFirst().dropLast())
    }

    /// GBNF for one character of `ranges`, as JSON writes it: a class of the characters written
    /// as themselves, plus `\"`, `\\`, `\t`, `\n`, `\r` where the set has them. Nil when the set
    /// has nothing JSON can write here.
    static func characters(_ ranges: [ClosedRange<UInt32>]) -> String? {
        // Written as themselves: not '"', '\', a control character, or a surrogate.
        let special: [ClosedRange<UInt32>] = [0x00...0x1F, 0x22...0x22, 0x5C...0x5C, 0xD800...0xDFFF]
        let plain = GBNFParser.complement(GBNFParser.normalize(GBNFParser.complement(ranges) + special))
        var alternatives: [String] = []
        if !plain.isEmpty {
            alternatives.append("[" + plain.map { r in
                r.lowerBound == r.upperBound ? classCharacter(r.lowerBound) : classCharacter(r.lowerBound) + "-" + classCharacter(r.upperBound)
            }.joined() + "]")
        }
        for (code, written) in [(UInt32(0x22), "\\\""), (0x5C, "\\\\"), (0x09, "\\t"), (0x0A, "\\n"), (0x0D, "\\r")]
        where ranges.contains(where: { $0.contains(code) }) {
            alternatives.append(JSONSchemaGrammar.literal(written))
        }
        if alternatives.isEmpty { return nil }
        return alternatives.count == 1 ? alternatives[0] : "( " + alternatives.joined(separator: " | ") + " )"
    }

    /// A code point inside a GBNF class: letters and digits as themselves, the rest escaped.
    static func classCharacter(_ c: UInt32) -> String {
        if let s = Unicode.Scalar(c), s.isASCII, s.properties.isAlphabetic || ("0"..."9").contains(s) { return String(s) }
        let digits = String(c, radix: 16, uppercase: true)
        if c < 0x100 { return "\\x" + String(repeating: "0", count: 2 - digits.count) + digits }
        if c < 0x10000 { return "\\u" + String(repeating: "0", count: 4 - digits.count) + digits }
        return "\\U" + String(repeating: "0", count: 8 - digits.count) + digits
    }
}
