#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import JSONText

// MARK: - Values

/// A runtime value of the Jinja interpreter, following Python semantics where templates rely on them.
enum JinjaValue {
    case undefined
    case none
    case bool(Bool)
    case integer(Int)
    case float(Double)
    case string(String)
    case list([JinjaValue])
    case dictionary(JinjaDictionary)
    /// `namespace(...)`: a mutable attribute bag shared by reference, so loops can update it.
    case namespace(JinjaNamespace)

    init(_ literal: JinjaLiteral) {
        switch literal {
        case .none: self = .none
        case .bool(let b): self = .bool(b)
        case .integer(let i): self = .integer(i)
        case .float(let d): self = .float(d)
        case .string(let s): self = .string(s)
        }
    }

    var isDefined: Bool {
        if case .undefined = self { return false }
        return true
    }

    /// Python truthiness.
    var isTruthy: Bool {
        switch self {
        case .undefined, .none: return false
        case .bool(let b): return b
        case .integer(let i): return i != 0
        case .float(let d): return d != 0
        case .string(let s): return !s.isEmpty
        case .list(let items): return !items.isEmpty
        case .dictionary(let d): return !d.keys.isEmpty
        case .namespace: return true
        }
    }

    /// The Python type name, for error messages.
    var typeName: String {
        switch self {
        case .undefined: return "undefined"
        case .none: return "none"
        case .bool: return "bool"
        case .integer: return "int"
        case .float: return "float"
        case .string: return "string"
        case .list: return "list"
        case .dictionary: return "dict"
        case .namespace: return "namespace"
        }
    }

    /// Python `str()`: what `{{ value }}` prints.
    var text: String {
        switch self {
        case .undefined: return ""
        case .string(let s): return s
        default: return representation
        }
    }

    /// Python `repr()`, used inside lists and dicts.
    var representation: String {
        switch self {
        case .undefined: return ""
        case .none: return "None"
        case .bool(let b): return b ? "True" : "False"
        case .integer(let i): return String(i)
        case .float(let d): return Self.pythonFloat(d)
        case .string(let s):
            let quote: Character = s.contains("'") && !s.contains("\"") ? "\"" : "'"
            var out = String(quote)
            for c in s.unicodeScalars {
                switch c {
                case "\\": out += "\\\\"
                case "\n": out += "\\n"
                case "\r": out += "\\r"
                case "\t": out += "\\t"
                default:
                    if Character(c) == quote { out += "\\" }
                    out.unicodeScalars.append(c)
                }
            }
            out.append(quote)
            return out
        case .list(let items): return "[" + items.map(\.representation).joined(separator: ", ") + "]"
        case .dictionary(let d):
            return "{" + d.keys.map { "'\($0)': \(d.values[$0]!.representation)" }.joined(separator: ", ") + "}"
        case .namespace(let n):
            return "<Namespace " + n.attributes.keys.map { "\($0)=\(n.attributes.values[$0]!.representation)" }.joined(separator: ", ") + ">"
        }
    }

    /// Python's float repr: shortest round-trip digits, always with a decimal point or exponent.
    static func pythonFloat(_ d: Double) -> String {
        if d.isNaN { return "nan" }
        if d.isInfinite { return d > 0 ? "inf" : "-inf" }
        if d == d.rounded() && abs(d) < 1e16 { return String(Int(d)) + ".0" }
        return "\(d)"
    }

    /// Equality as Python `==` for the types templates compare.
    func equals(_ other: JinjaValue) -> Bool {
        switch (self, other) {
        case (.undefined, .undefined), (.none, .none): return true
        case (.bool(let a), .bool(let b)): return a == b
        case (.string(let a), .string(let b)): return a == b
        case (.list(let a), .list(let b)): return a.count == b.count && zip(a, b).allSatisfy { $0.equals($1) }
        case (.dictionary(let a), .dictionary(let b)):
            return a.keys.count == b.keys.count && a.keys.allSatisfy { k in b.values[k].map { a.values[k]!.equals($0) } ?? false }
        case (.namespace(let a), .namespace(let b)): return a === b
        default:
            if let x = numeric, let y = other.numeric { return x == y }
            return false
        }
    }

    /// The value as a number (bools count as 0/1, as in Python).
    var numeric: Double? {
        switch self {
        case .integer(let i): return Double(i)
        case .float(let d): return d
        case .bool(let b): return b ? 1 : 0
        default: return nil
        }
    }

    /// Items to iterate over: list items, dictionary keys, string characters.
    var iterationItems: [JinjaValue]? {
        switch self {
        case .list(let items): return items
        case .dictionary(let d): return d.keys.map { .string($0) }
        case .string(let s): return s.map { .string(String($0)) }
        case .undefined, .none: return []
        default: return nil
        }
    }

    // MARK: - JSON

    /// Hugging Face's `tojson`: `json.dumps(value, ensure_ascii=False, indent=indent)`, keys in
    /// insertion order (`JSONWriter`, `level`: this value's nesting depth).
    func json(indent: Int?, level: Int = 0) -> String {
        switch self {
        case .undefined, .none: return "null"
        case .bool(let b): return b ? "true" : "false"
        case .integer(let i): return String(i)
        case .float(let d): return d.isFinite ? Self.pythonFloat(d) : (d.isNaN ? "NaN" : (d > 0 ? "Infinity" : "-Infinity"))
        case .string(let s): return JSONWriter.string(s)
        case .list(let items): return JSONWriter.array(items.map { $0.json(indent: indent, level: level + 1) }, indent: indent, level: level)
        case .dictionary(let d): return Self.jsonObject(d, indent: indent, level: level)
        case .namespace(let n): return Self.jsonObject(n.attributes, indent: indent, level: level)
        }
    }

    private static func jsonObject(_ d: JinjaDictionary, indent: Int?, level: Int) -> String {
        JSONWriter.object(d.keys.map { (key: $0, value: d.values[$0]!.json(indent: indent, level: level + 1)) }, indent: indent, level: level)
    }
}

// MARK: - Containers

/// An insertion-ordered string-keyed dictionary (Python dicts keep order; `tojson` and `items` rely on it).
struct JinjaDictionary {
    private(set) var keys: [String] = []
    private(set) var values: [String: JinjaValue] = [:]

    init() {}

    init(_ pairs: [(String, JinjaValue)]) {
        for (key, value) in pairs { self[key] = value }
    }

    subscript(key: String) -> JinjaValue? {
        get { values[key] }
        set {
            if values[key] == nil, newValue != nil { keys.append(key) }
            if newValue == nil { keys.removeAll { $0 == key } }
            values[key] = newValue
        }
    }
}

/// Storage of a `namespace()` object.
final class JinjaNamespace {
    var attributes: JinjaDictionary
    init(_ attributes: JinjaDictionary) { self.attributes = attributes }
}
