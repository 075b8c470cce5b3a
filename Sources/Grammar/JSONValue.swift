import JSONText

/// A JSON value that keeps an object's keys in document order (a schema's property order is the
/// order the output is generated in) and a number's literal text.
public indirect enum JSONValue: Equatable, Sendable {
    case null
    case bool(Bool)
    case number(String)
    case string(String)
    case array([JSONValue])
    case object([(String, JSONValue)])

    public static func == (a: JSONValue, b: JSONValue) -> Bool {
        switch (a, b) {
        case (.null, .null): return true
        case (.bool(let x), .bool(let y)): return x == y
        case (.number(let x), .number(let y)): return x == y || (Double(x) != nil && Double(x) == Double(y))
        case (.string(let x), .string(let y)): return x == y
        case (.array(let x), .array(let y)): return x == y
        case (.object(let x), .object(let y)):
            return x.count == y.count && zip(x, y).allSatisfy { $0.0 == $1.0 && $0.1 == $1.1 }
        default: return false
        }
    }

    /// The value of `key` in an object (the first, if repeated).
    public subscript(key: String) -> JSONValue? {
        guard case .object(let members) = self else { return nil }
        return members.first { $0.0 == key }?.1
    }

    public var stringValue: String? {
        if case .string(let s) = self { return s }
        return nil
    }

    /// Compact JSON text with `json.dumps`' separators (`", "` and `": "`), through `JSONWriter`.
    public var text: String {
        switch self {
        case .null: return "null"
        case .bool(let b): return b ? "true" : "false"
        case .number(let n): return n
        case .string(let s): return JSONWriter.string(s)
        case .array(let items): return JSONWriter.array(items.map(\.text))
        case .object(let members): return JSONWriter.object(members.map { (key: $0.0, value: $0.1.text) })
        }
    }

    /// A JSON string literal (`JSONWriter.string`: non-ASCII kept as is, control characters escaped).
    public static func quoted(_ s: String) -> String { JSONWriter.string(s) }

    // MARK: - Parsing

    /// Parses JSON text, keeping key order. Throws `GrammarError.invalidSchema` with the offset.
    public static func parse(_ text: String) throws -> JSONValue {
        var p = Parser(bytes: Array(text.utf8))
        p.skip()
        let v = try p.value(depth: 0)
        p.skip()
        guard p.i == p.bytes.count else { throw p.error("unexpected text after the value") }
        return v
    }

    struct Parser {
        let bytes: [UInt8]
        var i = 0

        func error(_ message: String) -> GrammarError { .invalidSchema(path: "offset \(i)", message: message) }

        mutating func skip() {
            while i < bytes.count, bytes[i] == 0x20 || bytes[i] == 0x0A || bytes[i] == 0x0D || bytes[i] == 0x09 { i += 1 }
        }

        mutating func literal(_ word: String, _ v: JSONValue) throws -> JSONValue {
            let w = Array(word.utf8)
            guard i + w.count <= bytes.count, Array(bytes[i..<(i + w.count)]) == w else { throw error("invalid literal") }
            i += w.count
            return v
        }

        mutating func value(depth: Int) throws -> JSONValue {
            guard depth < 512 else { throw error("nested too deeply") }
            guard i < bytes.count else { throw error("unexpected end") }
            switch bytes[i] {
            case UInt8(ascii: "n"): return try literal("null", .null)
            case UInt8(ascii: "t"): return try literal("true", .bool(true))
            case UInt8(ascii: "f"): return try literal("false", .bool(false))
            case UInt8(ascii: "\""): return .string(try string())
            case UInt8(ascii: "["):
                i += 1
                var items: [JSONValue] = []
                skip()
                if i < bytes.count && bytes[i] == UInt8(ascii: "]") { i += 1; return .array(items) }
                while true {
                    skip()
                    items.append(try value(depth: depth + 1))
                    skip()
                    guard i < bytes.count else { throw error("unterminated array") }
                    if bytes[i] == UInt8(ascii: ",") { i += 1; continue }
                    guard bytes[i] == UInt8(ascii: "]") else { throw error("expected ',' or ']'") }
                    i += 1
                    return .array(items)
                }
            case UInt8(ascii: "{"):
                i += 1
                var members: [(String, JSONValue)] = []
                skip()
                if i < bytes.count && bytes[i] == UInt8(ascii: "}") { i += 1; return .object(members) }
                while true {
                    skip()
                    guard i < bytes.count, bytes[i] == UInt8(ascii: "\"") else { throw error("expected a key") }
                    let key = try string()
                    skip()
                    guard i < bytes.count, bytes[i] == UInt8(ascii: ":") else { throw error("expected ':'") }
                    i += 1
                    skip()
                    members.append((key, try value(depth: depth + 1)))
                    skip()
                    guard i < bytes.count else { throw error("unterminated object") }
                    if bytes[i] == UInt8(ascii: ",") { i += 1; continue }
                    guard bytes[i] == UInt8(ascii: "}") else { throw error("expected ',' or '}'") }
                    i += 1
                    return .object(members)
                }
            default:
                let start = i
                while i < bytes.count, (bytes[i] >= 0x30 && bytes[i] <= 0x39) || [0x2D, 0x2B, 0x2E, 0x65, 0x45].contains(bytes[i]) { i += 1 }
                let s = String(decoding: bytes[start..<i], as: UTF8.self)
                guard !s.isEmpty, Double(s) != nil else { throw error("invalid value") }
                return .number(s)
            }
        }

        mutating func string() throws -> String {
            i += 1
            var out: [UInt8] = []
            while i < bytes.count {
                let b = bytes[i]
                i += 1
                if b == UInt8(ascii: "\"") { return String(decoding: out, as: UTF8.self) }
                guard b == UInt8(ascii: "\\") else { out.append(b); continue }
                guard i < bytes.count else { break }
                let e = bytes[i]
                i += 1
                switch e {
                case UInt8(ascii: "n"): out.append(0x0A)
                case UInt8(ascii: "t"): out.append(0x09)
                case UInt8(ascii: "r"): out.append(0x0D)
                case UInt8(ascii: "b"): out.append(0x08)
                case UInt8(ascii: "f"): out.append(0x0C)
                case UInt8(ascii: "u"):
                    var code = try hex4()
                    if code >= 0xD800 && code < 0xDC00, i + 1 < bytes.count, bytes[i] == UInt8(ascii: "\\"), bytes[i + 1] == UInt8(ascii: "u") {
                        i += 2
                        let low = try hex4()
                        if low >= 0xDC00 && low < 0xE000 {
                            code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                        } else {
                            // A high surrogate without its low half is U+FFFD; the escape after it stands alone.
                            append(scalar: 0xFFFD, to: &out)
                            code = low
                        }
                    }
                    append(scalar: code, to: &out)
                default: out.append(e)
                }
            }
            throw error("unterminated string")
        }

        /// The UTF-8 of the scalar `code`, or of U+FFFD where `code` is none (a lone surrogate).
        func append(scalar code: UInt32, to out: inout [UInt8]) {
            out += Array(String(Character(Unicode.Scalar(code) ?? "\u{FFFD}")).utf8)
        }

        mutating func hex4() throws -> UInt32 {
            guard i + 4 <= bytes.count, let v = UInt32(String(decoding: bytes[i..<(i + 4)], as: UTF8.self), radix: 16) else {
                throw error("invalid \\u escape")
            }
            i += 4
            return v
        }
    }
}
