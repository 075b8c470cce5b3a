/// A context-free grammar over Unicode code points, in the shape top-down matching wants: rules
/// of alternatives, each alternative a sequence of elements (a character class or a rule
/// reference) ending with an end marker, all in one flat array.
///
/// Built from GBNF text (llama.cpp's grammar format: `name ::= alternatives`, string literals,
/// character classes `[a-z]` and `[^"]`, `.`, grouping, `|`, `*`, `+`, `?`, `{m}`, `{m,}`,
/// `{m,n}`, `#` comments). Repetitions become helper rules (`x*` is `r ::= x r | ε`: right
/// recursion in tail position, so a loop never deepens the matcher's stack). Left recursion,
/// undefined rules and a missing `root` are errors.
///
/// Thread-safety: immutable; share freely.
public struct Grammar: Sendable {
    /// Element kinds in `kinds`.
    static let end: UInt8 = 0, chars: UInt8 = 1, rule: UInt8 = 2

    /// Per element position: kind, and its value (a class index or a rule index).
    let kinds: [UInt8]
    let values: [Int32]
    /// Character classes as sorted, disjoint, inclusive code-point ranges (negation folded in).
    let classes: [[ClosedRange<UInt32>]]
    /// Per class, its ASCII members as a 128-bit set (two words), for the fast path.
    let asciiBits: [(UInt64, UInt64)]
    /// Per rule, the positions where its alternatives start.
    let alternatives: [[Int32]]
    public let ruleNames: [String]
    public let root: Int32

    /// The most elements, rules and repetition bounds a request's grammar may have.
    public static let maxElements = 200_000
    public static let maxRepetition = 1000

    /// Parses GBNF text. Throws `GrammarError` naming the line, column or rule.
    public init(gbnf: String) throws {
        var parser = GBNFParser(text: gbnf)
        let rules = try parser.parse()
        try self.init(rules: rules.rules, names: rules.names)
    }

    /// A grammar element before flattening.
    enum Item: Equatable {
        case chars([ClosedRange<UInt32>])
        case rule(Int)
    }

    init(rules: [[[Item]]], names: [String]) throws {
        guard let root = names.firstIndex(of: "root") else { throw GrammarError.missingRoot }
        var kinds: [UInt8] = [], values: [Int32] = []
        var classes: [[ClosedRange<UInt32>]] = [], classIndex: [[ClosedRange<UInt32>]: Int32] = [:]
        var alternatives: [[Int32]] = []
        for rule in rules {
            var starts: [Int32] = []
            for alternative in rule {
                starts.append(Int32(kinds.count))
                for item in alternative {
                    switch item {
                    case .chars(let ranges):
                        let index: Int32
                        if let known = classIndex[ranges] {
                            index = known
                        } else {
                            index = Int32(classes.count)
                            classes.append(ranges)
                            classIndex[ranges] = index
                        }
                        kinds.append(Self.chars)
                        values.append(index)
                    case .rule(let r):
                        kinds.append(Self.rule)
                        values.append(Int32(r))
                    }
                }
                kinds.append(Self.end)
                values.append(0)
            }
            alternatives.append(starts)
        }
        guard kinds.count <= Self.maxElements else {
            throw GrammarError.tooLarge("\(kinds.count) elements after expanding repetitions (at most \(Self.maxElements))")
        }
        self.kinds = kinds
        self.values = values
        self.classes = classes
        self.asciiBits = classes.map { ranges in
            var low: UInt64 = 0, high: UInt64 = 0
            for r in ranges where r.lowerBound < 128 {
                for c in r.lowerBound...min(r.upperBound, 127) {
                    if c < 64 { low |= 1 << UInt64(c) } else { high |= 1 << UInt64(c - 64) }
                }
            }
            return (low, high)
        }
        self.alternatives = alternatives
        self.ruleNames = names
        self.root = Int32(root)
        try checkLeftRecursion()
    }

    /// Whether class `index` contains code point `c`.
    @inline(__always) func classContains(_ index: Int32, _ c: UInt32) -> Bool {
        if c < 128 {
            let bits = asciiBits[Int(index)]
            return c < 64 ? bits.0 & (1 << UInt64(c)) != 0 : bits.1 & (1 << UInt64(c - 64)) != 0
        }
        for r in classes[Int(index)] {
            if c < r.lowerBound { return false }
            if c <= r.upperBound { return true }
        }
        return false
    }

    /// Whether class `index` contains some code point in `lo...hi`.
    func classIntersects(_ index: Int32, _ lo: UInt32, _ hi: UInt32) -> Bool {
        classes[Int(index)].contains { $0.lowerBound <= hi && $0.upperBound >= lo }
    }

    // MARK: - Checks

    /// Rules that can match the empty string.
    private func nullableRules() -> [Bool] {
        var nullable = [Bool](repeating: false, count: alternatives.count)
        var changed = true
        while changed {
            changed = false
            for (r, starts) in alternatives.enumerated() where !nullable[r] {
                for start in starts {
                    var p = Int(start)
                    var ok = true
                    while kinds[p] != Self.end {
                        if kinds[p] == Self.chars || !nullable[Int(values[p])] { ok = false; break }
                        p += 1
                    }
                    if ok { nullable[r] = true; changed = true; break }
                }
            }
        }
        return nullable
    }

    /// Throws if some rule reaches itself through leading (possibly nullable-prefixed) references.
    private func checkLeftRecursion() throws {
        let nullable = nullableRules()
        // Edges: rule -> rules that can start it.
        let leading: [[Int]] = alternatives.map { starts in
            var out: [Int] = []
            for start in starts {
                var p = Int(start)
                while kinds[p] == Self.rule {
                    let r = Int(values[p])
                    out.append(r)
                    if !nullable[r] { break }
                    p += 1
                }
            }
            return out
        }
        // Iterative DFS with colours: 0 new, 1 on the path, 2 done.
        var colour = [UInt8](repeating: 0, count: alternatives.count)
        for start in alternatives.indices where colour[start] == 0 {
            var stack: [(rule: Int, next: Int)] = [(start, 0)]
            colour[start] = 1
            while let top = stack.last {
                if top.next < leading[top.rule].count {
                    stack[stack.count - 1].next += 1
                    let r = leading[top.rule][top.next]
                    if colour[r] == 1 { throw GrammarError.leftRecursion(ruleNames[r]) }
                    if colour[r] == 0 {
                        colour[r] = 1
                        stack.append((r, 0))
                    }
                } else {
                    colour[top.rule] = 2
                    stack.removeLast()
                }
            }
        }
    }
}

// MARK: - GBNF parser

/// Parses GBNF text into rules of `Grammar.Item` sequences. Repetitions and groups become
/// helper rules named after their parent (`name_1`, `name_2`, ...).
struct GBNFParser {
    let text: [Unicode.Scalar]
    var i = 0
    var names: [String] = []
    var rules: [[[Grammar.Item]]?] = []
    var index: [String: Int] = [:]
    /// Helper rules made so far per parent rule, for their names.
    var helperCount: [String: Int] = [:]
    /// Items made so far (repetitions multiply them) and the nesting depth of groups: both are
    /// bounded so a hostile grammar cannot exhaust memory or the stack while being parsed.
    var itemCount = 0
    var depth = 0

    init(text: String) {
        self.text = Array(text.unicodeScalars)
    }

    mutating func parse() throws -> (rules: [[[Grammar.Item]]], names: [String]) {
        guard text.count <= 1_000_000 else { throw GrammarError.tooLarge("more than 1,000,000 characters") }
        skipSpace(newlines: true)
        while i < text.count {
            let name = try parseName()
            skipSpace(newlines: false)
            guard match("::=") else { throw error("expected '::=' after rule name '\(name)'") }
            skipSpace(newlines: true)
            let body = try parseAlternatives(rule: name, nested: false)
            let r = ruleIndex(name)
            guard rules[r] == nil else { throw error("rule '\(name)' is defined twice") }
            rules[r] = body
            skipSpace(newlines: true)
        }
        var out: [[[Grammar.Item]]] = []
        for (r, rule) in rules.enumerated() {
            guard let rule else { throw GrammarError.undefinedRule(names[r]) }
            out.append(rule)
        }
        return (out, names)
    }

    // MARK: Lexing

    func error(_ message: String) -> GrammarError {
        var line = 1, column = 1
        for c in text[..<min(i, text.count)] {
            if c == "\n" { line += 1; column = 1 } else { column += 1 }
        }
        return .syntax(line: line, column: column, message: message)
    }

    var current: Unicode.Scalar? { i < text.count ? text[i] : nil }

    mutating func match(_ s: String) -> Bool {
        let scalars = Array(s.unicodeScalars)
        guard i + scalars.count <= text.count, Array(text[i..<(i + scalars.count)]) == scalars else { return false }
        i += scalars.count
        return true
    }

    /// Skips spaces, tabs and comments; newlines too when `newlines`.
    mutating func skipSpace(newlines: Bool) {
        while let c = current {
            if c == " " || c == "\t" || (newlines && (c == "\n" || c == "\r")) {
                i += 1
            } else if c == "#" {
                while let d = current, d != "\n" { i += 1; _ = d }
            } else {
                break
            }
        }
    }

    static func isNameCharacter(_ c: Unicode.Scalar) -> Bool {
        (c >= "a" && c <= "z") || (c >= "A" && c <= "Z") || (c >= "0" && c <= "9") || c == "-" || c == "_" || c == "."
    }

    mutating func parseName() throws -> String {
        let start = i
        while let c = current, Self.isNameCharacter(c) { i += 1 }
        guard i > start else { throw error("expected a rule name") }
        return String(String.UnicodeScalarView(text[start..<i]))
    }

    mutating func ruleIndex(_ name: String) -> Int {
        if let r = index[name] { return r }
        names.append(name)
        rules.append(nil)
        index[name] = names.count - 1
        return names.count - 1
    }

    mutating func newHelper(_ parent: String, _ body: [[Grammar.Item]]) -> Int {
        let r = ruleIndex(helperName(parent))
        rules[r] = body
        return r
    }

    // MARK: Syntax

    /// `sequence ("|" sequence)*`. At the top level a newline ends the rule unless the next line
    /// continues it with `|`.
    mutating func parseAlternatives(rule: String, nested: Bool) throws -> [[Grammar.Item]] {
        var out = [try parseSequence(rule: rule, nested: nested)]
        while true {
            let save = i
            skipSpace(newlines: true)
            if current == "|" {
                i += 1
                skipSpace(newlines: true)
                out.append(try parseSequence(rule: rule, nested: nested))
            } else {
                i = save
                return out
            }
        }
    }

    mutating func parseSequence(rule: String, nested: Bool) throws -> [Grammar.Item] {
        var items: [Grammar.Item] = []
        while true {
            skipSpace(newlines: nested)
            guard let c = current else { return items }
            var group: [Grammar.Item]
            if c == "\"" {
                i += 1
                group = try parseLiteral().map { .chars([$0...$0]) }
            } else if c == "[" {
                i += 1
                group = [.chars(try parseClass())]
            } else if c == "." {
                i += 1
                group = [.chars([0...0x10FFFF])]
            } else if c == "(" {
                i += 1
                depth += 1
                defer { depth -= 1 }
                guard depth <= 128 else { throw GrammarError.tooLarge("groups nested more than 128 deep") }
                skipSpace(newlines: true)
                let body = try parseAlternatives(rule: rule, nested: true)
                skipSpace(newlines: true)
                guard current == ")" else { throw error("expected ')'") }
                i += 1
                group = body.count == 1 ? body[0] : [.rule(newHelper(rule, body))]
            } else if Self.isNameCharacter(c) {
                // A name followed by '::=' starts the next rule.
                let save = i
                let name = try parseName()
                let after = i
                skipSpace(newlines: false)
                if match("::=") { i = save; return items }
                i = after
                group = [.rule(ruleIndex(name))]
            } else {
                return items
            }
            // Postfix repetition applies to the whole group (a literal, a class, a reference).
            skipSpace(newlines: nested)
            if let op = current, op == "*" || op == "+" || op == "?" || op == "{" {
                let (low, high) = try parseRepetition()
                let unit: Grammar.Item = group.count == 1 ? group[0] : .rule(newHelper(rule, [group]))
                group = try repeatItem(unit, low: low, high: high, rule: rule)
            }
            itemCount += group.count
            guard itemCount <= Grammar.maxElements else {
                throw GrammarError.tooLarge("more than \(Grammar.maxElements) elements after expanding repetitions")
            }
            items += group
        }
    }

    /// `*`, `+`, `?`, `{m}`, `{m,}`, `{m,n}` as (low, high) with high nil for unbounded.
    mutating func parseRepetition() throws -> (Int, Int?) {
        let c = current!
        i += 1
        switch c {
        case "*": return (0, nil)
        case "+": return (1, nil)
        case "?": return (0, 1)
        default:
            skipSpace(newlines: false)
            let low = try parseInt()
            skipSpace(newlines: false)
            var high: Int? = low
            if current == "," {
                i += 1
                skipSpace(newlines: false)
                high = current == "}" ? nil : try parseInt()
                skipSpace(newlines: false)
            }
            guard current == "}" else { throw error("expected '}' to close a repetition") }
            i += 1
            if let high, high < low { throw error("repetition {\(low),\(high)}: the maximum is below the minimum") }
            guard low <= Grammar.maxRepetition && (high ?? 0) <= Grammar.maxRepetition else {
                throw GrammarError.tooLarge("a repetition bound above \(Grammar.maxRepetition)")
            }
            return (low, high)
        }
    }

    mutating func parseInt() throws -> Int {
        let start = i
        while let c = current, c >= "0" && c <= "9" { i += 1 }
        guard i > start, i - start <= 6, let n = Int(String(String.UnicodeScalarView(text[start..<i]))) else {
            throw error("expected a number")
        }
        return n
    }

    /// `unit{low,high}` as items: `low` copies, then `high - low` nested optionals (or a loop).
    mutating func repeatItem(_ unit: Grammar.Item, low: Int, high: Int?, rule: String) throws -> [Grammar.Item] {
        itemCount += 2 * max(low, high ?? 0)
        guard itemCount <= Grammar.maxElements else {
            throw GrammarError.tooLarge("more than \(Grammar.maxElements) elements after expanding repetitions")
        }
        var items = [Grammar.Item](repeating: unit, count: low)
        if let high {
            guard high > low else { return items }
            // opt_k ::= unit opt_{k-1} | ε, built from the innermost out.
            var inner: Int?
            for _ in low..<high {
                let body: [[Grammar.Item]] = [[unit] + (inner.map { [.rule($0)] } ?? []), []]
                inner = newHelper(rule, body)
            }
            items.append(.rule(inner!))
        } else {
            // star ::= unit star | ε (tail recursion).
            let star = ruleIndex(helperName(rule))
            rules[star] = [[unit, .rule(star)], []]
            items.append(.rule(star))
        }
        return items
    }

    mutating func helperName(_ parent: String) -> String {
        let n = (helperCount[parent] ?? 0) + 1
        helperCount[parent] = n
        var name = "\(parent)_\(n)"
        while index[name] != nil { name += "_" }
        return name
    }

    /// One (possibly escaped) character inside a literal or class.
    mutating func parseChar() throws -> UInt32 {
        guard let c = current else { throw error("unexpected end of grammar") }
        i += 1
        guard c == "\\" else { return c.value }
        guard let e = current else { throw error("unexpected end after '\\'") }
        i += 1
        switch e {
        case "n": return 10
        case "r": return 13
        case "t": return 9
        case "b": return 8  // JSON's short escapes, so a JSON string literal is a GBNF literal
        case "f": return 12
        case "\\", "\"", "[", "]", "-", "^", "'": return e.value
        case "x": return try parseHex(2)
        case "u": return try parseHex(4)
        case "U": return try parseHex(8)
        default: throw error("unknown escape '\\\(e)'")
        }
    }

    mutating func parseHex(_ digits: Int) throws -> UInt32 {
        var v: UInt32 = 0
        for _ in 0..<digits {
            guard let c = current, let d = Int(String(c), radix: 16) else { throw error("expected \(digits) hex digits") }
            v = v << 4 | UInt32(d)
            i += 1
        }
        guard v <= 0x10FFFF else { throw error("code point above U+10FFFF") }
        return v
    }

    mutating func parseLiteral() throws -> [UInt32] {
        var out: [UInt32] = []
        while true {
            guard let c = current else { throw error("unterminated string literal") }
            if c == "\"" { i += 1; return out }
            if c == "\n" { throw error("newline inside a string literal; write \\n") }
            out.append(try parseChar())
        }
    }

    mutating func parseClass() throws -> [ClosedRange<UInt32>] {
        var negated = false
        if current == "^" { negated = true; i += 1 }
        var ranges: [ClosedRange<UInt32>] = []
        while true {
            guard let c = current else { throw error("unterminated character class") }
            if c == "]" { i += 1; break }
            let lo = try parseChar()
            var hi = lo
            if current == "-", i + 1 < text.count, text[i + 1] != "]" {
                i += 1
                hi = try parseChar()
                guard hi >= lo else { throw error("character range with its end below its start") }
            }
            ranges.append(lo...hi)
        }
        let merged = Self.normalize(ranges)
        return negated ? Self.complement(merged) : merged
    }

    /// Sorted, merged ranges.
    static func normalize(_ ranges: [ClosedRange<UInt32>]) -> [ClosedRange<UInt32>] {
        var out: [ClosedRange<UInt32>] = []
        for r in ranges.sorted(by: { $0.lowerBound < $1.lowerBound }) {
            if let last = out.last, r.lowerBound <= last.upperBound &+ 1 {
                out[out.count - 1] = last.lowerBound...max(last.upperBound, r.upperBound)
            } else {
                out.append(r)
            }
        }
        return out
    }

    static func complement(_ ranges: [ClosedRange<UInt32>]) -> [ClosedRange<UInt32>] {
        var out: [ClosedRange<UInt32>] = []
        var next: UInt32 = 0
        for r in ranges {
            if r.lowerBound > next { out.append(next...(r.lowerBound - 1)) }
            next = r.upperBound + 1
        }
        if next <= 0x10FFFF { out.append(next...0x10FFFF) }
        return out
    }
}
