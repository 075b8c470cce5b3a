// MARK: - Template segments

/// One piece of template source: literal text, `{{ … }}` or `{% … %}` (comments are dropped).
enum JinjaSegment: Equatable {
    case text(String)
    case output([JinjaToken], line: Int)
    case statement([JinjaToken], line: Int)
}

/// A token inside `{{ }}` or `{% %}`.
struct JinjaToken: Equatable {
    enum Kind: Equatable {
        case name(String)
        case string(String)
        case integer(Int)
        case float(Double)
        case symbol(String)
    }
    var kind: Kind
    var line: Int
}

// MARK: - Lexer

/// Splits template source into segments with the whitespace rules Hugging Face uses for chat
/// templates: `trim_blocks` (drop the newline after a block tag), `lstrip_blocks` (drop indentation
/// before a block tag), `-` markers (strip all whitespace on that side), and one trailing newline of
/// the source removed (`keep_trailing_newline=False`).
enum JinjaLexer {
    private enum Piece {
        case text([Unicode.Scalar])
        case tag(kind: Unicode.Scalar, body: [Unicode.Scalar], line: Int, stripBefore: Bool, stripAfter: Bool, plus: Bool)
    }

    static func segments(_ source: String) throws(ChatTemplateError) -> [JinjaSegment] {
        var s = Array(source.unicodeScalars)
        if s.last == "\n" {
            s.removeLast()
            if s.last == "\r" { s.removeLast() }
        }
        var pieces: [Piece] = []
        var text: [Unicode.Scalar] = []
        var i = 0
        var line = 1
        while i < s.count {
            let c = s[i]
            if c == "{", i + 1 < s.count, s[i + 1] == "{" || s[i + 1] == "%" || s[i + 1] == "#" {
                let kind = s[i + 1]
                let close: Unicode.Scalar = kind == "{" ? "}" : kind
                let tagLine = line
                var j = i + 2
                var stripBefore = false
                var plus = false
                if j < s.count && s[j] == "-" { stripBefore = true; j += 1 }
                else if j < s.count && s[j] == "+" { plus = true; j += 1 }
                // Find the closer, skipping string literals inside expressions.
                var body: [Unicode.Scalar] = []
                var quote: Unicode.Scalar? = nil
                var found = false
                while j < s.count {
                    let d = s[j]
                    if d == "\n" { line += 1 }
                    if let q = quote {
                        body.append(d)
                        if d == "\\" && j + 1 < s.count { body.append(s[j + 1]); j += 2; continue }
                        if d == q { quote = nil }
                        j += 1
                        continue
                    }
                    if kind != "#" && (d == "'" || d == "\"") { quote = d; body.append(d); j += 1; continue }
                    if d == close && j + 1 < s.count && s[j + 1] == "}" { found = true; break }
                    body.append(d)
                    j += 1
                }
                guard found else {
                    throw .syntax(line: tagLine, message: "unclosed \"{\(kind)\"")
                }
                var stripAfter = false
                if body.last == "-" { stripAfter = true; body.removeLast() }
                else if body.last == "+" && kind == "%" { body.removeLast() }
                pieces.append(.text(text))
                text = []
                pieces.append(.tag(kind: kind, body: body, line: tagLine, stripBefore: stripBefore, stripAfter: stripAfter, plus: plus))
                i = j + 2
                // `{% raw %}` copies text verbatim up to `{% endraw %}`.
                if kind == "%", String(String.UnicodeScalarView(body)).trimmingSpaces == "raw" {
                    throw .unsupported(construct: "{% raw %}", line: tagLine)
                }
                continue
            }
            if c == "\n" { line += 1 }
            text.append(c)
            i += 1
        }
        pieces.append(.text(text))

        // lstrip_blocks needs each tag's position in the source, before neighbouring trims change the text.
        var startsLine = [Bool](repeating: false, count: pieces.count)
        for index in pieces.indices where index > 0 {
            guard case .text(let before) = pieces[index - 1] else { continue }
            var k = before.count
            while k > 0 && (before[k - 1] == " " || before[k - 1] == "\t") { k -= 1 }
            startsLine[index] = k == 0 ? index == 1 : before[k - 1] == "\n"
        }
        // Whitespace control, applied to the text on each side of every tag.
        for index in pieces.indices {
            guard case .tag(let kind, _, _, let stripBefore, let stripAfter, let plus) = pieces[index] else { continue }
            let isBlock = kind == "%" || kind == "#"
            if index > 0, case .text(var before) = pieces[index - 1] {
                if stripBefore {
                    while let last = before.last, last.properties.isWhitespace { before.removeLast() }
                } else if isBlock && !plus && startsLine[index] {
                    // lstrip_blocks: drop the indentation before a tag that starts its line.
                    while let last = before.last, last == " " || last == "\t" { before.removeLast() }
                }
                pieces[index - 1] = .text(before)
            }
            if index + 1 < pieces.count, case .text(var after) = pieces[index + 1] {
                if stripAfter {
                    let k = after.firstIndex { !$0.properties.isWhitespace } ?? after.count
                    after.removeSubrange(0..<k)
                } else if isBlock {
                    // trim_blocks: drop one newline right after the tag.
                    if after.first == "\n" { after.removeFirst() }
                    else if after.count >= 2 && after[0] == "\r" && after[1] == "\n" { after.removeFirst(2) }
                }
                pieces[index + 1] = .text(after)
            }
        }

        var segments: [JinjaSegment] = []
        for piece in pieces {
            switch piece {
            case .text(let scalars):
                if !scalars.isEmpty { segments.append(.text(String(String.UnicodeScalarView(scalars)))) }
            case .tag(let kind, let body, let line, _, _, _):
                if kind == "#" { continue }
                let tokens = try tokenize(body, line: line)
                segments.append(kind == "{" ? .output(tokens, line: line) : .statement(tokens, line: line))
            }
        }
        return segments
    }

    // MARK: - Expression tokens

    private static let symbols2: Set<String> = ["==", "!=", "<=", ">=", "//", "**"]
    private static let symbols1: Set<Unicode.Scalar> = [
        "+", "-", "*", "/", "%", "~", "<", ">", "(", ")", "[", "]", "{", "}", ",", ".", ":", "|", "=",
    ]

    static func tokenize(_ s: [Unicode.Scalar], line startLine: Int) throws(ChatTemplateError) -> [JinjaToken] {
        var tokens: [JinjaToken] = []
        var i = 0
        var line = startLine
        while i < s.count {
            let c = s[i]
            if c == "\n" { line += 1; i += 1; continue }
            if c.properties.isWhitespace { i += 1; continue }
            if c == "_" || c.properties.isAlphabetic {
                var j = i
                while j < s.count && (s[j] == "_" || s[j].properties.isAlphabetic || ("0"..."9").contains(s[j])) { j += 1 }
                tokens.append(JinjaToken(kind: .name(String(String.UnicodeScalarView(s[i..<j]))), line: line))
                i = j
                continue
            }
            if ("0"..."9").contains(c) {
                var j = i
                while j < s.count && (("0"..."9").contains(s[j]) || s[j] == "_") { j += 1 }
                var isFloat = false
                if j + 1 < s.count && s[j] == "." && ("0"..."9").contains(s[j + 1]) {
                    isFloat = true
                    j += 1
                    while j < s.count && ("0"..."9").contains(s[j]) { j += 1 }
                }
                if j < s.count && (s[j] == "e" || s[j] == "E") {
                    var k = j + 1
                    if k < s.count && (s[k] == "+" || s[k] == "-") { k += 1 }
                    if k < s.count && ("0"..."9").contains(s[k]) {
                        isFloat = true
                        j = k
                        while j < s.count && ("0"..."9").contains(s[j]) { j += 1 }
                    }
                }
                let literal = String(String.UnicodeScalarView(s[i..<j])).replacingUnderscores
                if isFloat {
                    guard let value = Double(literal) else { throw .syntax(line: line, message: "bad number \(literal)") }
                    tokens.append(JinjaToken(kind: .float(value), line: line))
                } else {
                    guard let value = Int(literal) else { throw .syntax(line: line, message: "integer \(literal) is too large") }
                    tokens.append(JinjaToken(kind: .integer(value), line: line))
                }
                i = j
                continue
            }
            if c == "'" || c == "\"" {
                var value = String.UnicodeScalarView()
                var j = i + 1
                var closed = false
                while j < s.count {
                    let d = s[j]
                    if d == c { closed = true; break }
                    if d == "\n" { line += 1 }
                    if d == "\\" && j + 1 < s.count {
                        let e = s[j + 1]
                        switch e {
                        case "n": value.append("\n")
                        case "t": value.append("\t")
                        case "r": value.append("\r")
                        case "\\", "'", "\"": value.append(e)
                        case "u" where j + 5 < s.count:
                            let hex = String(String.UnicodeScalarView(s[(j + 2)...(j + 5)]))
                            if let v = UInt32(hex, radix: 16), let scalar = Unicode.Scalar(v) {
                                value.append(scalar)
                                j += 6
                                continue
                            }
                            value.append("\\")
                            value.append(e)
                        default:
                            value.append("\\")
                            value.append(e)
                        }
                        j += 2
                        continue
                    }
                    value.append(d)
                    j += 1
                }
                guard closed else { throw .syntax(line: line, message: "unterminated string literal") }
                tokens.append(JinjaToken(kind: .string(String(value)), line: line))
                i = j + 1
                continue
            }
            if i + 1 < s.count {
                let two = String(String.UnicodeScalarView([c, s[i + 1]]))
                if symbols2.contains(two) {
                    tokens.append(JinjaToken(kind: .symbol(two), line: line))
                    i += 2
                    continue
                }
            }
            if symbols1.contains(c) {
                tokens.append(JinjaToken(kind: .symbol(String(c)), line: line))
                i += 1
                continue
            }
            throw .syntax(line: line, message: "unexpected character \"\(c)\"")
        }
        return tokens
    }
}

extension String {
    fileprivate var trimmingSpaces: String {
        let scalars = Array(unicodeScalars)
        guard let start = scalars.firstIndex(where: { !$0.properties.isWhitespace }),
              let end = scalars.lastIndex(where: { !$0.properties.isWhitespace }) else { return "" }
        return String(String.UnicodeScalarView(scalars[start...end]))
    }

    fileprivate var replacingUnderscores: String { String(filter { $0 != "_" }) }
}
