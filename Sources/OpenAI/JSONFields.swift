import Foundation
import Grammar

/// One JSON object of a request body, read field by field. Every API surface parses its body
/// once into `JSONValue` (key order kept, so schemas generate their properties in document order)
/// and reads it through this type: each error is a 400 naming the field's full path
/// (`messages[2].content`) and what it must be.
///
/// A field set to `null` reads as absent. A repeated key reads as its last value (as
/// JSONSerialization and Python's json read it).
public struct JSONFields: Sendable {
    /// The members in document order.
    public let members: [(String, JSONValue)]
    /// Where this object sits in the body ("" for the body itself).
    public let path: String

    /// Reads `value` as an object at `path`; anything else is a 400 naming `path`.
    public init(_ value: JSONValue, path: String, expected: String = "an object") throws {
        guard case .object(let members) = value else {
            throw OpenAIError.invalid(path.isEmpty ? "body" : path, "'\(path)' must be \(expected)")
        }
        self.members = members
        self.path = path
    }

    /// Parses a request body: valid JSON whose top level is an object.
    public static func body(_ data: Data) throws -> JSONFields {
        guard !data.isEmpty else { throw OpenAIError.invalid("body", "The request body is empty; send a JSON object", code: "invalid_json") }
        let value: JSONValue
        do {
            value = try JSONValue.parse(String(decoding: data, as: UTF8.self))
        } catch {
            throw OpenAIError.invalid("body", "The request body is not valid JSON: \(error)", code: "invalid_json")
        }
        guard case .object(let members) = value else {
            throw OpenAIError.invalid("body", "The request body must be a JSON object", code: "invalid_json")
        }
        return try JSONFields(.object(members), path: "")
    }

    /// The full path of `key` in the body (`tools[0].function.name`).
    public func name(_ key: String) -> String { path.isEmpty ? key : "\(path).\(key)" }

    /// The value of `key`, nil when absent or null.
    public subscript(key: String) -> JSONValue? {
        guard let v = members.last(where: { $0.0 == key })?.1, v != .null else { return nil }
        return v
    }

    /// Whether `key` is present (even as null).
    public func contains(_ key: String) -> Bool { members.contains { $0.0 == key } }

    /// A 400 naming `key`.
    public func invalid(_ key: String, _ message: String, code: String? = "invalid_value") -> OpenAIError {
        OpenAIError.invalid(name(key), message, code: code)
    }

    // MARK: - Typed readers

    public func string(_ key: String) throws -> String? {
        guard let v = self[key] else { return nil }
        guard case .string(let s) = v else { throw invalid(key, "'\(name(key))' must be a string") }
        return s
    }

    public func bool(_ key: String) throws -> Bool? {
        guard let v = self[key] else { return nil }
        guard case .bool(let b) = v else { throw invalid(key, "'\(name(key))' must be true or false") }
        return b
    }

    public func int(_ key: String, _ range: ClosedRange<Int>) throws -> Int? {
        guard let v = self[key] else { return nil }
        guard let i = Self.integer(v) else {
            throw invalid(key, "'\(name(key))' must be an integer between \(range.lowerBound) and \(range.upperBound)")
        }
        guard range.contains(i) else {
            throw invalid(key, "'\(name(key))' is \(i); it must be between \(range.lowerBound) and \(range.upperBound)")
        }
        return i
    }

    public func number(_ key: String, _ range: ClosedRange<Float>) throws -> Float? {
        guard let v = self[key] else { return nil }
        guard case .number(let text) = v, let d = Double(text), d.isFinite else {
            throw invalid(key, "'\(name(key))' must be a number between \(range.lowerBound) and \(range.upperBound)")
        }
        let f = Float(d)
        guard range.contains(f) else {
            throw invalid(key, "'\(name(key))' is \(text); it must be between \(range.lowerBound) and \(range.upperBound)")
        }
        return f
    }

    /// The object at `key`.
    public func object(_ key: String, expected: String = "an object") throws -> JSONFields? {
        guard let v = self[key] else { return nil }
        return try JSONFields(v, path: name(key), expected: expected)
    }

    /// The list at `key`.
    public func array(_ key: String, expected: String = "a list") throws -> [JSONValue]? {
        guard let v = self[key] else { return nil }
        guard case .array(let items) = v else { throw invalid(key, "'\(name(key))' must be \(expected)") }
        return items
    }

    /// Refuses a key outside `allowed` (unless it is null, which reads as absent), naming the
    /// route's fields.
    public func refuseUnknown(_ allowed: [String], route: String) throws {
        for (key, value) in members where value != .null && !allowed.contains(key) {
            throw invalid(key, "'\(name(key))' is not a field of \(route); send \(allowed.joined(separator: ", "))")
        }
    }

    /// A JSON number that is an integer (1, 1.0, 1e2), as an Int.
    public static func integer(_ v: JSONValue) -> Int? {
        guard case .number(let text) = v else { return nil }
        if let i = Int(text) { return i }
        guard let d = Double(text), d.isFinite, d == d.rounded(), abs(d) < 9.0e18 else { return nil }
        return Int(d)
    }
}

/// A `JSONValue` in a Codable response (a tool call's `input`, a schema echoed back), its keys
/// sorted like the rest of the body.
struct JSONFragment: Encodable {
    var value: JSONValue

    init(_ value: JSONValue) { self.value = value }

    private struct Key: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }

    func encode(to encoder: Encoder) throws {
        switch value {
        case .null:
            var c = encoder.singleValueContainer()
            try c.encodeNil()
        case .bool(let b):
            var c = encoder.singleValueContainer()
            try c.encode(b)
        case .number(let text):
            var c = encoder.singleValueContainer()
            if let i = Int(text) { try c.encode(i) } else { try c.encode(Double(text) ?? 0) }
        case .string(let s):
            var c = encoder.singleValueContainer()
            try c.encode(s)
        case .array(let items):
            var c = encoder.unkeyedContainer()
            for item in items { try c.encode(JSONFragment(item)) }
        case .object(let members):
            var c = encoder.container(keyedBy: Key.self)
            for (k, v) in members { try c.encode(JSONFragment(v), forKey: Key(stringValue: k)) }
        }
    }
}
