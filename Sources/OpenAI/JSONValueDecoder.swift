import Foundation
import Grammar

/// Decodes a `Decodable` request type from one parsed `JSONValue`, so a body is parsed once, by
/// the strict parser that keeps key order (schemas are generated in document order), and typed
/// wire structs still use `Codable`.
///
/// Errors are `OpenAIError`s that name the field by its path (`input[2].content`) and the type
/// it must have; a wire type's own `init(from:)` throws `OpenAIError` for everything else.
/// `OrderedJSON` takes a subtree as it is (a JSON schema, `metadata`).
enum JSONValueDecoder {
    /// Parses `body` and decodes `T` from it.
    static func decode<T: Decodable>(_ type: T.Type, body: Data) throws -> T {
        guard !body.isEmpty else { throw OpenAIError.invalid("body", "The request body is empty; send a JSON object", code: "invalid_json") }
        let value: JSONValue
        do {
            value = try JSONValue.parse(String(decoding: body, as: UTF8.self))
        } catch {
            throw OpenAIError.invalid("body", "The request body is not valid JSON: \(error)", code: "invalid_json")
        }
        guard case .object = value else { throw OpenAIError.invalid("body", "The request body must be a JSON object", code: "invalid_json") }
        return try decode(type, from: value)
    }

    /// Decodes `T` from `value`.
    static func decode<T: Decodable>(_ type: T.Type, from value: JSONValue) throws -> T {
        try unbox(value, as: type, path: [])
    }

    /// The API's name of a field at `path`: `tools[0].parameters`, or `body` at the top.
    static func param(_ path: [CodingKey]) -> String {
        var out = ""
        for key in path {
            if let i = key.intValue { out += "[\(i)]" } else { out += out.isEmpty ? key.stringValue : "." + key.stringValue }
        }
        return out.isEmpty ? "body" : out
    }

    /// Wire types read integers as `Int`; another width is a programmer error, reported as a 500.
    static func onlyInt(_ path: [CodingKey]) -> OpenAIError {
        OpenAIError(status: .internalServerError, message: "wire types decode integers as Int ('\(param(path))')",
                    type: "server_error", param: nil, code: "internal_error")
    }

    static func mismatch(_ path: [CodingKey], _ expected: String) -> OpenAIError {
        let name = param(path)
        return OpenAIError.invalid(name, "'\(name)' must be \(expected)")
    }

    /// `value` as `T`: scalars directly (numbers checked for range and integrality), everything
    /// else through `T.init(from:)`.
    static func unbox<T: Decodable>(_ value: JSONValue, as type: T.Type, path: [CodingKey]) throws -> T {
        func cast<U>(_ u: U) throws -> T {
            guard let t = u as? T else { throw mismatch(path, "a \(T.self)") }
            return t
        }
        if T.self == OrderedJSON.self { return try cast(OrderedJSON(value: value)) }
        if T.self == String.self {
            guard case .string(let s) = value else { throw mismatch(path, "a string") }
            return try cast(s)
        }
        if T.self == Bool.self {
            guard case .bool(let b) = value else { throw mismatch(path, "true or false") }
            return try cast(b)
        }
        if T.self == Double.self || T.self == Float.self {
            guard case .number(let n) = value, let d = Double(n), d.isFinite else { throw mismatch(path, "a number") }
            return T.self == Float.self ? try cast(Float(d)) : try cast(d)
        }
        if T.self == Int.self {
            guard case .number(let n) = value, let d = Double(n), let i = Int(exactly: d) else { throw mismatch(path, "an integer") }
            return try cast(i)
        }
        return try T(from: ValueDecoder(value: value, codingPath: path))
    }
}

/// A JSON subtree taken as it is, key order kept (decoded only by `JSONValueDecoder`).
struct OrderedJSON: Decodable, Sendable {
    var value: JSONValue

    init(value: JSONValue) { self.value = value }

    init(from decoder: Decoder) throws {
        guard let d = decoder as? ValueDecoder else {
            throw DecodingError.typeMismatch(OrderedJSON.self, .init(codingPath: decoder.codingPath, debugDescription: "OrderedJSON decodes only through JSONValueDecoder"))
        }
        value = d.value
    }
}

/// A key for objects whose keys are not known in advance (to list and refuse unknown fields).
struct AnyKey: CodingKey {
    var stringValue: String
    var intValue: Int?
    init(stringValue: String) { self.stringValue = stringValue }
    init(intValue: Int) {
        stringValue = "\(intValue)"
        self.intValue = intValue
    }
}

extension Decoder {
    /// Refuses keys of this object outside `known`, naming the first one.
    func refuseUnknownKeys(_ known: Set<String>, what: String) throws {
        let keys = try container(keyedBy: AnyKey.self).allKeys.map(\.stringValue)
        if let unknown = keys.first(where: { !known.contains($0) }) {
            let name = JSONValueDecoder.param(codingPath + [AnyKey(stringValue: unknown)])
            throw OpenAIError.invalid(name, "'\(name)' is not a field of \(what) CastServe knows; accepted: \(known.sorted().joined(separator: ", "))",
                                      code: "unknown_parameter")
        }
    }
}

// MARK: - The decoder

final class ValueDecoder: Decoder {
    let value: JSONValue
    let codingPath: [CodingKey]
    var userInfo: [CodingUserInfoKey: Any] { [:] }

    init(value: JSONValue, codingPath: [CodingKey]) {
        self.value = value
        self.codingPath = codingPath
    }

    func container<Key: CodingKey>(keyedBy type: Key.Type) throws -> KeyedDecodingContainer<Key> {
        guard case .object(let members) = value else { throw JSONValueDecoder.mismatch(codingPath, "an object") }
        return KeyedDecodingContainer(Keyed<Key>(members: members, codingPath: codingPath))
    }

    func unkeyedContainer() throws -> UnkeyedDecodingContainer {
        guard case .array(let items) = value else { throw JSONValueDecoder.mismatch(codingPath, "a list") }
        return Unkeyed(items: items, codingPath: codingPath)
    }

    func singleValueContainer() throws -> SingleValueDecodingContainer { Single(value: value, codingPath: codingPath) }

    struct Keyed<Key: CodingKey>: KeyedDecodingContainerProtocol {
        let members: [(String, JSONValue)]
        let codingPath: [CodingKey]

        var allKeys: [Key] { members.compactMap { Key(stringValue: $0.0) } }
        func contains(_ key: Key) -> Bool { members.contains { $0.0 == key.stringValue } }

        func member(_ key: Key) throws -> JSONValue {
            guard let v = members.last(where: { $0.0 == key.stringValue })?.1 else {
                let name = JSONValueDecoder.param(codingPath + [key])
                throw OpenAIError.invalid(name, "'\(name)' is required", code: "missing_required_parameter")
            }
            return v
        }

        func decodeNil(forKey key: Key) throws -> Bool { (try? member(key)) == .null }
        func decode<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T {
            try JSONValueDecoder.unbox(member(key), as: type, path: codingPath + [key])
        }
        func decode(_ type: Bool.Type, forKey key: Key) throws -> Bool { try scalar(key) }
        func decode(_ type: String.Type, forKey key: Key) throws -> String { try scalar(key) }
        func decode(_ type: Double.Type, forKey key: Key) throws -> Double { try scalar(key) }
        func decode(_ type: Float.Type, forKey key: Key) throws -> Float { try scalar(key) }
        func decode(_ type: Int.Type, forKey key: Key) throws -> Int { try scalar(key) }
        func decode(_ type: Int8.Type, forKey key: Key) throws -> Int8 { throw JSONValueDecoder.onlyInt(codingPath + [key]) }
        func decode(_ type: Int16.Type, forKey key: Key) throws -> Int16 { throw JSONValueDecoder.onlyInt(codingPath + [key]) }
        func decode(_ type: Int32.Type, forKey key: Key) throws -> Int32 { throw JSONValueDecoder.onlyInt(codingPath + [key]) }
        func decode(_ type: Int64.Type, forKey key: Key) throws -> Int64 { throw JSONValueDecoder.onlyInt(codingPath + [key]) }
        func decode(_ type: UInt.Type, forKey key: Key) throws -> UInt { throw JSONValueDecoder.onlyInt(codingPath + [key]) }
        func decode(_ type: UInt8.Type, forKey key: Key) throws -> UInt8 { throw JSONValueDecoder.onlyInt(codingPath + [key]) }
        func decode(_ type: UInt16.Type, forKey key: Key) throws -> UInt16 { throw JSONValueDecoder.onlyInt(codingPath + [key]) }
        func decode(_ type: UInt32.Type, forKey key: Key) throws -> UInt32 { throw JSONValueDecoder.onlyInt(codingPath + [key]) }
        func decode(_ type: UInt64.Type, forKey key: Key) throws -> UInt64 { throw JSONValueDecoder.onlyInt(codingPath + [key]) }

        /// A scalar through `unbox` (the one place scalars are checked).
        private func scalar<T: Decodable>(_ key: Key) throws -> T { try JSONValueDecoder.unbox(member(key), as: T.self, path: codingPath + [key]) }

        func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type, forKey key: Key) throws -> KeyedDecodingContainer<NestedKey> {
            try ValueDecoder(value: member(key), codingPath: codingPath + [key]).container(keyedBy: type)
        }
        func nestedUnkeyedContainer(forKey key: Key) throws -> UnkeyedDecodingContainer {
            try ValueDecoder(value: member(key), codingPath: codingPath + [key]).unkeyedContainer()
        }
        func superDecoder() throws -> Decoder { ValueDecoder(value: .object(members), codingPath: codingPath) }
        func superDecoder(forKey key: Key) throws -> Decoder { ValueDecoder(value: try member(key), codingPath: codingPath + [key]) }
    }

    struct Unkeyed: UnkeyedDecodingContainer {
        let items: [JSONValue]
        let codingPath: [CodingKey]
        var currentIndex = 0
        var count: Int? { items.count }
        var isAtEnd: Bool { currentIndex >= items.count }

        init(items: [JSONValue], codingPath: [CodingKey]) {
            self.items = items
            self.codingPath = codingPath
        }

        mutating func next() throws -> (JSONValue, [CodingKey]) {
            guard !isAtEnd else { throw JSONValueDecoder.mismatch(codingPath, "a longer list") }
            defer { currentIndex += 1 }
            return (items[currentIndex], codingPath + [AnyKey(intValue: currentIndex)])
        }

        mutating func decodeNil() throws -> Bool {
            guard !isAtEnd, items[currentIndex] == .null else { return false }
            currentIndex += 1
            return true
        }
        mutating func decode<T: Decodable>(_ type: T.Type) throws -> T {
            let (v, path) = try next()
            return try JSONValueDecoder.unbox(v, as: type, path: path)
        }
        mutating func decode(_ type: Bool.Type) throws -> Bool { try decode(scalar: Bool.self) }
        mutating func decode(_ type: String.Type) throws -> String { try decode(scalar: String.self) }
        mutating func decode(_ type: Double.Type) throws -> Double { try decode(scalar: Double.self) }
        mutating func decode(_ type: Float.Type) throws -> Float { try decode(scalar: Float.self) }
        mutating func decode(_ type: Int.Type) throws -> Int { try decode(scalar: Int.self) }
        mutating func decode(_ type: Int8.Type) throws -> Int8 { throw JSONValueDecoder.onlyInt(codingPath) }
        mutating func decode(_ type: Int16.Type) throws -> Int16 { throw JSONValueDecoder.onlyInt(codingPath) }
        mutating func decode(_ type: Int32.Type) throws -> Int32 { throw JSONValueDecoder.onlyInt(codingPath) }
        mutating func decode(_ type: Int64.Type) throws -> Int64 { throw JSONValueDecoder.onlyInt(codingPath) }
        mutating func decode(_ type: UInt.Type) throws -> UInt { throw JSONValueDecoder.onlyInt(codingPath) }
        mutating func decode(_ type: UInt8.Type) throws -> UInt8 { throw JSONValueDecoder.onlyInt(codingPath) }
        mutating func decode(_ type: UInt16.Type) throws -> UInt16 { throw JSONValueDecoder.onlyInt(codingPath) }
        mutating func decode(_ type: UInt32.Type) throws -> UInt32 { throw JSONValueDecoder.onlyInt(codingPath) }
        mutating func decode(_ type: UInt64.Type) throws -> UInt64 { throw JSONValueDecoder.onlyInt(codingPath) }
        private mutating func decode<T: Decodable>(scalar: T.Type) throws -> T {
            let (v, path) = try next()
            return try JSONValueDecoder.unbox(v, as: T.self, path: path)
        }
        mutating func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type) throws -> KeyedDecodingContainer<NestedKey> {
            let (v, path) = try next()
            return try ValueDecoder(value: v, codingPath: path).container(keyedBy: type)
        }
        mutating func nestedUnkeyedContainer() throws -> UnkeyedDecodingContainer {
            let (v, path) = try next()
            return try ValueDecoder(value: v, codingPath: path).unkeyedContainer()
        }
        mutating func superDecoder() throws -> Decoder {
            let (v, path) = try next()
            return ValueDecoder(value: v, codingPath: path)
        }
    }

    struct Single: SingleValueDecodingContainer {
        let value: JSONValue
        let codingPath: [CodingKey]
        func decodeNil() -> Bool { value == .null }
        func decode<T: Decodable>(_ type: T.Type) throws -> T { try JSONValueDecoder.unbox(value, as: type, path: codingPath) }
        func decode(_ type: Bool.Type) throws -> Bool { try JSONValueDecoder.unbox(value, as: Bool.self, path: codingPath) }
        func decode(_ type: String.Type) throws -> String { try JSONValueDecoder.unbox(value, as: String.self, path: codingPath) }
        func decode(_ type: Double.Type) throws -> Double { try JSONValueDecoder.unbox(value, as: Double.self, path: codingPath) }
        func decode(_ type: Float.Type) throws -> Float { try JSONValueDecoder.unbox(value, as: Float.self, path: codingPath) }
        func decode(_ type: Int.Type) throws -> Int { try JSONValueDecoder.unbox(value, as: Int.self, path: codingPath) }
        func decode(_ type: Int8.Type) throws -> Int8 { throw JSONValueDecoder.onlyInt(codingPath) }
        func decode(_ type: Int16.Type) throws -> Int16 { throw JSONValueDecoder.onlyInt(codingPath) }
        func decode(_ type: Int32.Type) throws -> Int32 { throw JSONValueDecoder.onlyInt(codingPath) }
        func decode(_ type: Int64.Type) throws -> Int64 { throw JSONValueDecoder.onlyInt(codingPath) }
        func decode(_ type: UInt.Type) throws -> UInt { throw JSONValueDecoder.onlyInt(codingPath) }
        func decode(_ type: UInt8.Type) throws -> UInt8 { throw JSONValueDecoder.onlyInt(codingPath) }
        func decode(_ type: UInt16.Type) throws -> UInt16 { throw JSONValueDecoder.onlyInt(codingPath) }
        func decode(_ type: UInt32.Type) throws -> UInt32 { throw JSONValueDecoder.onlyInt(codingPath) }
        func decode(_ type: UInt64.Type) throws -> UInt64 { throw JSONValueDecoder.onlyInt(codingPath) }
    }
}
