/// JSON text as Python's `json.dumps(value, ensure_ascii=False)` writes it: the one JSON writer of
/// the targets that write JSON text themselves (ChatTemplate's `tojson`, Grammar's JSON values,
/// schema literals and GBNF string literals). Containers take their items already written, so
/// each value type keeps its own recursion. Stateless; thread-safe.
public enum JSONWriter {
    /// The JSON string literal of `s`: in double quotes, with `\"`, `\\`, the short escapes `\n`,
    /// `\r`, `\t`, `\b`, `\f`, `\u00XX` for the other control characters (below U+0020), and every
    /// other character (non-ASCII included) as is.
    public static func string(_ s: String) -> String {
        var out = "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case "\u{08}": out += "\\b"
            case "\u{0C}": out += "\\f"
            default:
                if u.value < 0x20 {
                    let hex = String(u.value, radix: 16)
                    out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                } else {
                    out.unicodeScalars.append(u)
                }
            }
        }
        return out + "\""
    }

    /// An array of written `items`: compact (`[a, b]`, json.dumps' `", "`) without `indent`; with
    /// it, one item a line, indented `indent` spaces per nesting level below `level` (the items
    /// must have been written for `level + 1`). Empty: `[]`.
    public static func array(_ items: [String], indent: Int? = nil, level: Int = 0) -> String {
        container("[", items, "]", indent: indent, level: level)
    }

    /// An object of `members` (keys, and values already written): compact (`{"k": v, "l": w}`) or
    /// indented as `array`. Keys keep their order. Empty: `{}`.
    public static func object(_ members: [(key: String, value: String)], indent: Int? = nil, level: Int = 0) -> String {
        container("{", members.map { string($0.key) + ": " + $0.value }, "}", indent: indent, level: level)
    }

    private static func container(_ open: String, _ items: [String], _ close: String, indent: Int?, level: Int) -> String {
        if items.isEmpty { return open + close }
        guard let indent else { return open + items.joined(separator: ", ") + close }
        func newline(_ depth: Int) -> String { "\n" + String(repeating: " ", count: indent * depth) }
        return open + items.map { newline(level + 1) + $0 }.joined(separator: ",") + newline(level) + close
    }
}
