// MARK: - Syntax tree

/// A template statement or literal text.
indirect enum JinjaNode: Sendable {
    case text(String)
    case output(JinjaExpression, line: Int)
    case conditional(branches: [(condition: JinjaExpression, body: [JinjaNode])], otherwise: [JinjaNode], line: Int)
    case loop(targets: [String], iterable: JinjaExpression, filter: JinjaExpression?, body: [JinjaNode], otherwise: [JinjaNode], line: Int)
    case assign(target: JinjaAssignTarget, value: JinjaExpression, line: Int)
    case assignBlock(name: String, body: [JinjaNode], line: Int)
    case breakLoop(line: Int)
    case continueLoop(line: Int)
}

/// Where `{% set %}` stores a value.
enum JinjaAssignTarget: Sendable {
    case name(String)
    case attribute(object: String, name: String)
}

/// A literal constant in an expression.
enum JinjaLiteral: Sendable {
    case none
    case bool(Bool)
    case integer(Int)
    case float(Double)
    case string(String)
}

/// An expression; `line` on calls, filters and tests locates errors.
indirect enum JinjaExpression: Sendable {
    case literal(JinjaLiteral)
    case variable(String)
    case list([JinjaExpression])
    case dictionary([(key: JinjaExpression, value: JinjaExpression)])
    case attribute(JinjaExpression, String)
    case `subscript`(JinjaExpression, JinjaExpression)
    case slice(JinjaExpression, start: JinjaExpression?, stop: JinjaExpression?, step: JinjaExpression?)
    case call(JinjaExpression, arguments: [JinjaExpression], keywords: [(String, JinjaExpression)], line: Int)
    case filter(JinjaExpression, name: String, arguments: [JinjaExpression], keywords: [(String, JinjaExpression)], line: Int)
    case test(JinjaExpression, name: String, arguments: [JinjaExpression], negated: Bool, line: Int)
    case unary(String, JinjaExpression, line: Int)
    case binary(String, JinjaExpression, JinjaExpression, line: Int)
    case compare(JinjaExpression, [(op: String, JinjaExpression)], line: Int)
    case and(JinjaExpression, JinjaExpression)
    case or(JinjaExpression, JinjaExpression)
    case not(JinjaExpression)
    case ternary(then: JinjaExpression, condition: JinjaExpression, otherwise: JinjaExpression?)
}

// MARK: - Parser

/// Recursive-descent parser for the Jinja subset, with Jinja2's operator precedence:
/// `if-else` < `or` < `and` < `not` < comparisons/`in` < `+ -` < `~` < `* / // %` < `**` < unary `-`
/// < filters `|` and tests `is` < attribute, subscript, call.
struct JinjaParser {
    private var segments: [JinjaSegment]
    private var position = 0
    // Tokens of the statement or output tag being parsed.
    private var tokens: [JinjaToken] = []
    private var cursor = 0
    private var line = 1

    init(segments: [JinjaSegment]) {
        self.segments = segments
    }

    static func parse(_ source: String) throws(ChatTemplateError) -> [JinjaNode] {
        var parser = JinjaParser(segments: try JinjaLexer.segments(source))
        let (nodes, end) = try parser.parseBlock(until: [])
        if let end { throw .syntax(line: parser.line, message: "unexpected {% \(end) %}") }
        return nodes
    }

    // MARK: - Statements

    /// Parses nodes until a statement whose first word is in `enders` (returned, its tokens loaded) or the end.
    private mutating func parseBlock(until enders: Set<String>) throws(ChatTemplateError) -> ([JinjaNode], String?) {
        var nodes: [JinjaNode] = []
        while position < segments.count {
            let segment = segments[position]
            position += 1
            switch segment {
            case .text(let text):
                nodes.append(.text(text))
            case .output(let tagTokens, let tagLine):
                load(tagTokens, tagLine)
                let expression = try parseExpression()
                try expectEnd()
                nodes.append(.output(expression, line: tagLine))
            case .statement(let tagTokens, let tagLine):
                load(tagTokens, tagLine)
                guard case .name(let keyword)? = peek?.kind else {
                    throw .syntax(line: tagLine, message: "expected a statement name after {%")
                }
                if enders.contains(keyword) {
                    cursor += 1
                    return (nodes, keyword)
                }
                cursor += 1
                nodes.append(contentsOf: try parseStatement(keyword, line: tagLine))
            }
        }
        return (nodes, nil)
    }

    private mutating func parseStatement(_ keyword: String, line tagLine: Int) throws(ChatTemplateError) -> [JinjaNode] {
        switch keyword {
        case "if":
            var branches: [(condition: JinjaExpression, body: [JinjaNode])] = []
            var condition = try parseExpression()
            try expectEnd()
            var otherwise: [JinjaNode] = []
            while true {
                let (body, end) = try parseBlock(until: ["elif", "else", "endif"])
                branches.append((condition, body))
                switch end {
                case "elif":
                    condition = try parseExpression()
                    try expectEnd()
                    continue
                case "else":
                    try expectEnd()
                    let (elseBody, elseEnd) = try parseBlock(until: ["endif"])
                    guard elseEnd == "endif" else { throw .syntax(line: tagLine, message: "{% if %} without {% endif %}") }
                    try expectEnd()
                    otherwise = elseBody
                case "endif":
                    try expectEnd()
                default:
                    throw .syntax(line: tagLine, message: "{% if %} without {% endif %}")
                }
                break
            }
            return [.conditional(branches: branches, otherwise: otherwise, line: tagLine)]
        case "for":
            var targets: [String] = []
            repeat {
                guard case .name(let name)? = next()?.kind else { throw .syntax(line: line, message: "expected a loop variable name") }
                targets.append(name)
            } while accept(symbol: ",")
            guard acceptName("in") else { throw .syntax(line: line, message: "expected \"in\" in {% for %}") }
            let iterable = try parseOr()
            var filter: JinjaExpression? = nil
            if acceptName("if") { filter = try parseOr() }
            if acceptName("recursive") { throw .unsupported(construct: "recursive for loops", line: tagLine) }
            try expectEnd()
            let (body, end) = try parseBlock(until: ["else", "endfor"])
            var otherwise: [JinjaNode] = []
            if end == "else" {
                try expectEnd()
                let (elseBody, elseEnd) = try parseBlock(until: ["endfor"])
                guard elseEnd == "endfor" else { throw .syntax(line: tagLine, message: "{% for %} without {% endfor %}") }
                otherwise = elseBody
            } else if end != "endfor" {
                throw .syntax(line: tagLine, message: "{% for %} without {% endfor %}")
            }
            try expectEnd()
            return [.loop(targets: targets, iterable: iterable, filter: filter, body: body, otherwise: otherwise, line: tagLine)]
        case "set":
            guard case .name(let name)? = next()?.kind else { throw .syntax(line: line, message: "expected a variable name after set") }
            var target = JinjaAssignTarget.name(name)
            if accept(symbol: ".") {
                guard case .name(let attribute)? = next()?.kind else { throw .syntax(line: line, message: "expected an attribute name") }
                target = .attribute(object: name, name: attribute)
            }
            if peek == nil, case .name(let blockName) = target {
                let (body, end) = try parseBlock(until: ["endset"])
                guard end == "endset" else { throw .syntax(line: tagLine, message: "{% set %} block without {% endset %}") }
                try expectEnd()
                return [.assignBlock(name: blockName, body: body, line: tagLine)]
            }
            if accept(symbol: ",") { throw .unsupported(construct: "{% set %} with several targets", line: tagLine) }
            guard accept(symbol: "=") else { throw .syntax(line: line, message: "expected \"=\" in {% set %}") }
            let value = try parseExpression()
            try expectEnd()
            return [.assign(target: target, value: value, line: tagLine)]
        case "break":
            try expectEnd()
            return [.breakLoop(line: tagLine)]
        case "continue":
            try expectEnd()
            return [.continueLoop(line: tagLine)]
        case "generation":
            // Hugging Face's assistant-mask marker: renders its body unchanged.
            try expectEnd()
            let (body, end) = try parseBlock(until: ["endgeneration"])
            guard end == "endgeneration" else { throw .syntax(line: tagLine, message: "{% generation %} without {% endgeneration %}") }
            try expectEnd()
            return body
        default:
            throw .unsupported(construct: "{% \(keyword) %}", line: tagLine)
        }
    }

    // MARK: - Token cursor

    private mutating func load(_ tagTokens: [JinjaToken], _ tagLine: Int) {
        tokens = tagTokens
        cursor = 0
        line = tagLine
    }

    private var peek: JinjaToken? { cursor < tokens.count ? tokens[cursor] : nil }

    private mutating func next() -> JinjaToken? {
        guard cursor < tokens.count else { return nil }
        defer { cursor += 1 }
        line = tokens[cursor].line
        return tokens[cursor]
    }

    private func isSymbol(_ symbol: String) -> Bool { peek?.kind == .symbol(symbol) }

    private func isName(_ name: String) -> Bool { peek?.kind == .name(name) }

    private mutating func accept(symbol: String) -> Bool {
        guard isSymbol(symbol) else { return false }
        cursor += 1
        return true
    }

    private mutating func acceptName(_ name: String) -> Bool {
        guard isName(name) else { return false }
        cursor += 1
        return true
    }

    private mutating func expect(symbol: String) throws(ChatTemplateError) {
        guard accept(symbol: symbol) else { throw .syntax(line: peek?.line ?? line, message: "expected \"\(symbol)\"\(found)") }
    }

    private mutating func expectEnd() throws(ChatTemplateError) {
        guard peek == nil else { throw .syntax(line: peek?.line ?? line, message: "unexpected\(found)") }
    }

    private var found: String {
        guard let token = peek else { return " at end of tag" }
        switch token.kind {
        case .name(let n): return " near \"\(n)\""
        case .string(let s): return " near '\(s)'"
        case .integer(let v): return " near \(v)"
        case .float(let v): return " near \(v)"
        case .symbol(let s): return " near \"\(s)\""
        }
    }

    // MARK: - Expressions

    mutating func parseExpression() throws(ChatTemplateError) -> JinjaExpression {
        let value = try parseOr()
        if acceptName("if") {
            let condition = try parseOr()
            var otherwise: JinjaExpression? = nil
            if acceptName("else") { otherwise = try parseExpression() }
            return .ternary(then: value, condition: condition, otherwise: otherwise)
        }
        return value
    }

    private mutating func parseOr() throws(ChatTemplateError) -> JinjaExpression {
        var left = try parseAnd()
        while acceptName("or") { left = .or(left, try parseAnd()) }
        return left
    }

    private mutating func parseAnd() throws(ChatTemplateError) -> JinjaExpression {
        var left = try parseNot()
        while acceptName("and") { left = .and(left, try parseNot()) }
        return left
    }

    private mutating func parseNot() throws(ChatTemplateError) -> JinjaExpression {
        if acceptName("not") { return .not(try parseNot()) }
        return try parseCompare()
    }

    private mutating func parseCompare() throws(ChatTemplateError) -> JinjaExpression {
        let left = try parseAdditive()
        var rest: [(op: String, JinjaExpression)] = []
        let startLine = line
        while true {
            if let token = peek, case .symbol(let s) = token.kind, ["==", "!=", "<", ">", "<=", ">="].contains(s) {
                cursor += 1
                rest.append((s, try parseAdditive()))
            } else if acceptName("in") {
                rest.append(("in", try parseAdditive()))
            } else if isName("not"), cursor + 1 < tokens.count, tokens[cursor + 1].kind == .name("in") {
                cursor += 2
                rest.append(("not in", try parseAdditive()))
            } else {
                break
            }
        }
        return rest.isEmpty ? left : .compare(left, rest, line: startLine)
    }

    private mutating func parseAdditive() throws(ChatTemplateError) -> JinjaExpression {
        var left = try parseConcat()
        while true {
            if accept(symbol: "+") { left = .binary("+", left, try parseConcat(), line: line) }
            else if accept(symbol: "-") { left = .binary("-", left, try parseConcat(), line: line) }
            else { return left }
        }
    }

    private mutating func parseConcat() throws(ChatTemplateError) -> JinjaExpression {
        var left = try parseMultiplicative()
        while accept(symbol: "~") { left = .binary("~", left, try parseMultiplicative(), line: line) }
        return left
    }

    private mutating func parseMultiplicative() throws(ChatTemplateError) -> JinjaExpression {
        var left = try parsePower()
        while let token = peek, case .symbol(let s) = token.kind, ["*", "/", "//", "%"].contains(s) {
            cursor += 1
            left = .binary(s, left, try parsePower(), line: line)
        }
        return left
    }

    private mutating func parsePower() throws(ChatTemplateError) -> JinjaExpression {
        var left = try parseUnary()
        while accept(symbol: "**") { left = .binary("**", left, try parseUnary(), line: line) }
        return left
    }

    private mutating func parseUnary() throws(ChatTemplateError) -> JinjaExpression {
        if accept(symbol: "-") { return try parseFilters(.unary("-", try parseUnaryOperand(), line: line)) }
        if accept(symbol: "+") { return try parseFilters(.unary("+", try parseUnaryOperand(), line: line)) }
        return try parseFilters(try parsePostfix(try parsePrimary()))
    }

    private mutating func parseUnaryOperand() throws(ChatTemplateError) -> JinjaExpression {
        if accept(symbol: "-") { return .unary("-", try parseUnaryOperand(), line: line) }
        return try parsePostfix(try parsePrimary())
    }

    private mutating func parsePrimary() throws(ChatTemplateError) -> JinjaExpression {
        guard let token = next() else { throw .syntax(line: line, message: "expected an expression at end of tag") }
        switch token.kind {
        case .string(var value):
            // Adjacent string literals concatenate, as in Python.
            while case .string(let more)? = peek?.kind {
                value += more
                cursor += 1
            }
            return .literal(.string(value))
        case .integer(let value):
            return .literal(.integer(value))
        case .float(let value):
            return .literal(.float(value))
        case .name(let name):
            switch name {
            case "true", "True": return .literal(.bool(true))
            case "false", "False": return .literal(.bool(false))
            case "none", "None": return .literal(.none)
            default: return .variable(name)
            }
        case .symbol("("):
            let first = try parseExpression()
            if accept(symbol: ",") {
                var items = [first]
                while !isSymbol(")") {
                    items.append(try parseExpression())
                    if !accept(symbol: ",") { break }
                }
                try expect(symbol: ")")
                return .list(items)
            }
            try expect(symbol: ")")
            return first
        case .symbol("["):
            var items: [JinjaExpression] = []
            while !isSymbol("]") {
                items.append(try parseExpression())
                if !accept(symbol: ",") { break }
            }
            try expect(symbol: "]")
            return .list(items)
        case .symbol("{"):
            var pairs: [(key: JinjaExpression, value: JinjaExpression)] = []
            while !isSymbol("}") {
                let key = try parseExpression()
                try expect(symbol: ":")
                pairs.append((key, try parseExpression()))
                if !accept(symbol: ",") { break }
            }
            try expect(symbol: "}")
            return .dictionary(pairs)
        case .symbol(let s):
            throw .syntax(line: token.line, message: "unexpected \"\(s)\"")
        }
    }

    private mutating func parsePostfix(_ base: JinjaExpression) throws(ChatTemplateError) -> JinjaExpression {
        var value = base
        while true {
            if accept(symbol: ".") {
                guard let token = next() else { throw .syntax(line: line, message: "expected an attribute name after \".\"") }
                switch token.kind {
                case .name(let name): value = .attribute(value, name)
                case .integer(let index): value = .subscript(value, .literal(.integer(index)))
                default: throw .syntax(line: token.line, message: "expected an attribute name after \".\"")
                }
            } else if accept(symbol: "[") {
                value = try parseSubscript(value)
            } else if isSymbol("(") {
                value = try parseCall(value)
            } else {
                return value
            }
        }
    }

    private mutating func parseSubscript(_ value: JinjaExpression) throws(ChatTemplateError) -> JinjaExpression {
        var start: JinjaExpression? = nil
        if !isSymbol(":") { start = try parseExpression() }
        if accept(symbol: "]") {
            guard let start else { throw .syntax(line: line, message: "empty subscript") }
            return .subscript(value, start)
        }
        try expect(symbol: ":")
        var stop: JinjaExpression? = nil
        var step: JinjaExpression? = nil
        if !isSymbol("]") && !isSymbol(":") { stop = try parseExpression() }
        if accept(symbol: ":") && !isSymbol("]") { step = try parseExpression() }
        try expect(symbol: "]")
        return .slice(value, start: start, stop: stop, step: step)
    }

    private mutating func parseArguments() throws(ChatTemplateError) -> ([JinjaExpression], [(String, JinjaExpression)]) {
        try expect(symbol: "(")
        var arguments: [JinjaExpression] = []
        var keywords: [(String, JinjaExpression)] = []
        while !isSymbol(")") {
            if case .name(let name)? = peek?.kind, cursor + 1 < tokens.count, tokens[cursor + 1].kind == .symbol("=") {
                cursor += 2
                keywords.append((name, try parseExpression()))
            } else {
                arguments.append(try parseExpression())
            }
            if !accept(symbol: ",") { break }
        }
        try expect(symbol: ")")
        return (arguments, keywords)
    }

    private mutating func parseCall(_ callee: JinjaExpression) throws(ChatTemplateError) -> JinjaExpression {
        let callLine = line
        let (arguments, keywords) = try parseArguments()
        return .call(callee, arguments: arguments, keywords: keywords, line: callLine)
    }

    private mutating func parseFilters(_ base: JinjaExpression) throws(ChatTemplateError) -> JinjaExpression {
        var value = base
        while true {
            if accept(symbol: "|") {
                guard case .name(let name)? = next()?.kind else { throw .syntax(line: line, message: "expected a filter name after \"|\"") }
                var arguments: [JinjaExpression] = []
                var keywords: [(String, JinjaExpression)] = []
                if isSymbol("(") { (arguments, keywords) = try parseArguments() }
                value = .filter(value, name: name, arguments: arguments, keywords: keywords, line: line)
            } else if acceptName("is") {
                let negated = acceptName("not")
                guard case .name(let name)? = next()?.kind else { throw .syntax(line: line, message: "expected a test name after \"is\"") }
                var arguments: [JinjaExpression] = []
                if isSymbol("(") {
                    (arguments, _) = try parseArguments()
                } else if let token = peek, Self.startsTestArgument(token.kind) {
                    arguments = [try parsePostfix(try parsePrimary())]
                }
                value = .test(value, name: name, arguments: arguments, negated: negated, line: line)
            } else if isSymbol("(") {
                value = try parseCall(value)
            } else {
                return value
            }
        }
    }

    /// Whether a token can begin the single argument of a test written without parentheses
    /// (`x is divisibleby 3`, `x is sameas none`).
    private static func startsTestArgument(_ kind: JinjaToken.Kind) -> Bool {
        switch kind {
        case .string, .integer, .float: return true
        case .name(let n): return !["and", "or", "else", "if", "not", "in", "is"].contains(n)
        case .symbol(let s): return s == "[" || s == "{"
        }
    }
}
