import JSONText

/// Compiles a JSON schema (the subset structured outputs use) to GBNF whose every match is a
/// JSON text valid against the schema, written with `json.dumps`' separators (`", "`, `": "`,
/// no other whitespace: fixed separators let the grammar force them, and a small model cannot
/// wander into endless whitespace).
///
/// Supported: `type` (string, integer, number, boolean, null, object, array, or a list of
/// them), `properties` (generated in schema order), `required`, `additionalProperties` (extra
/// properties are never generated, so any value is accepted), `enum`, `const`, `items`,
/// `minItems`, `maxItems`, `minLength`, `maxLength`, `anyOf`, `$ref` to `#`, `#/$defs/...` or
/// `#/definitions/...`, and annotations that do not constrain (`title`, `description`,
/// `default`, `examples`, ...). Anything else is refused with the keyword and its path, rather
/// than producing output that might not validate.
public struct JSONSchemaGrammar {
    public static let supportedKeywords = [
        "type", "properties", "required", "additionalProperties", "enum", "const", "items", "minItems", "maxItems",
        "minLength", "maxLength", "anyOf", "$ref", "$defs", "definitions",
        "title", "description", "default", "examples", "$schema", "$id", "$comment", "deprecated", "readOnly", "writeOnly",
    ]
    static let keywordSet = Set(supportedKeywords)

    /// The schema being compiled (what `$ref`s resolve against).
    var root: JSONValue = .object([])
    var rules: [(String, String)] = []
    var ruleNames: Set<String> = []
    var refRules: [String: String] = [:]

    public init() {}

    /// GBNF for `schema` (a JSON object, or `true` for any JSON value).
    public static func gbnf(schema: JSONValue) throws -> String {
        var compiler = JSONSchemaGrammar()
        let top = try compiler.rule(for: schema, hint: "root")
        if top != "root" { compiler.rules.insert(("root", top), at: 0) }
        return compiler.rendered()
    }

    /// GBNF for any JSON object (`response_format: json_object`).
    public static func gbnfForAnyObject() -> String {
        var compiler = JSONSchemaGrammar()
        compiler.rules.append(("root", compiler.primitive("object")))
        return compiler.rendered()
    }

    /// Compiles one schema (its `$ref`s resolve within it) into rules of this grammar; returns
    /// the name of the rule that matches it. For grammars that combine several schemas.
    public mutating func rule(for schema: JSONValue, hint: String) throws -> String {
        root = schema
        refRules = [:]
        return try compile(schema, path: "#", hint: hint)
    }

    /// Adds a rule with a GBNF `body` (it may use rules returned by `rule(for:hint:)`); returns
    /// its name (`hint`, made unique).
    public mutating func add(_ hint: String, body: String) -> String {
        addRule(hint, body)
    }

    /// A GBNF string literal matching exactly `text`.
    public static func gbnfLiteral(_ text: String) -> String { literal(text) }

    /// The rules compiled so far plus the primitives they use, as GBNF text.
    public func rendered() -> String {
        rules.map { "\($0.0) ::= \($0.1)" }.joined(separator: "\n") + "\n"
    }

    // MARK: - Primitives

    /// Primitive rules, named `json-NAME`, with the primitives each uses.
    static let primitives: [String: (body: String, uses: [String])] = [
        "value": ("json-object | json-array | json-string | json-number | json-boolean | json-null",
                  ["object", "array", "string", "number", "boolean", "null"]),
        "object": ("\"{\" ( json-string \": \" json-value ( \", \" json-string \": \" json-value )* )? \"}\"", ["string", "value"]),
        "array": ("\"[\" ( json-value ( \", \" json-value )* )? \"]\"", ["value"]),
        "string": ("\"\\\"\" json-char* \"\\\"\"", ["char"]),
        "char": ("[^\"\\\\\\x00-\\x1F] | \"\\\\\" ( [\"\\\\/bfnrt] | \"u\" [0-9a-fA-F]{4} )", []),
        "integer": ("\"-\"? ( \"0\" | [1-9] [0-9]{0,15} )", []),
        "number": ("json-integer ( \".\" [0-9]{1,16} )? ( [eE] [-+]? [0-9]{1,3} )?", ["integer"]),
        "boolean": ("\"true\" | \"false\"", []),
        "null": ("\"null\"", []),
    ]

    /// Adds primitive `name` (and what it uses) once; returns its rule name.
    mutating func primitive(_ name: String) -> String {
        let rule = "json-" + name
        guard !ruleNames.contains(rule) else { return rule }
        ruleNames.insert(rule)
        let (body, uses) = Self.primitives[name]!
        rules.append((rule, body))
        for used in uses { _ = primitive(used) }
        return rule
    }

    mutating func addRule(_ hint: String, _ body: String) -> String {
        var base = hint.map { $0.isLetter || $0.isNumber ? String($0) : "-" }.joined().lowercased()
        if base.isEmpty || base.first!.isNumber { base = "r-" + base }
        var name = base
        var k = 1
        while ruleNames.contains(name) { k += 1; name = "\(base)-\(k)" }
        ruleNames.insert(name)
        rules.append((name, body))
        return name
    }

    /// A GBNF string literal matching exactly `text`: GBNF reads JSON's string escapes (`Grammar`'s
    /// `parseChar`), so it is the JSON string literal of `text`.
    static func literal(_ text: String) -> String { JSONWriter.string(text) }

    // MARK: - Schemas

    /// Compiles `schema` at `path`; returns a GBNF expression (a rule name or an alternation
    /// wrapped as a rule).
    mutating func compile(_ schema: JSONValue, path: String, hint: String) throws -> String {
        if case .bool(true) = schema { return primitive("value") }
        guard case .object(let members) = schema else {
            throw GrammarError.invalidSchema(path: path, message: "a schema must be a JSON object")
        }
        for (key, _) in members where !Self.keywordSet.contains(key) {
            throw GrammarError.unsupportedKeyword(keyword: key, path: path)
        }
        if let ref = schema["$ref"] {
            guard let target = ref.stringValue else { throw GrammarError.invalidSchema(path: path, message: "$ref must be a string") }
            return try reference(target, path: path)
        }
        if let c = schema["const"] { return addRule(hint, Self.literal(c.text)) }
        if let e = schema["enum"] {
            guard case .array(let values) = e, !values.isEmpty else {
                throw GrammarError.invalidSchema(path: path + "/enum", message: "enum must be a non-empty list")
            }
            return addRule(hint, values.map { Self.literal($0.text) }.joined(separator: " | "))
        }
        if let any = schema["anyOf"] {
            guard case .array(let options) = any, !options.isEmpty else {
                throw GrammarError.invalidSchema(path: path + "/anyOf", message: "anyOf must be a non-empty list of schemas")
            }
            var alternatives: [String] = []
            for (k, option) in options.enumerated() {
                alternatives.append(try compile(option, path: "\(path)/anyOf/\(k)", hint: "\(hint)-\(k)"))
            }
            return addRule(hint, alternatives.joined(separator: " | "))
        }
        var types: [String] = []
        switch schema["type"] {
        case nil:
            if schema["properties"] != nil { types = ["object"] } else if schema["items"] != nil { types = ["array"] }
        case .string(let t)?: types = [t]
        case .array(let list)?:
            types = try list.map {
                guard let t = $0.stringValue else { throw GrammarError.invalidSchema(path: path + "/type", message: "type names must be strings") }
                return t
            }
        default: throw GrammarError.invalidSchema(path: path + "/type", message: "type must be a string or a list of strings")
        }
        if types.isEmpty { return primitive("value") }
        var alternatives: [String] = []
        for t in types {
            switch t {
            case "string": alternatives.append(try string(schema, path: path, hint: hint))
            case "integer", "number", "boolean", "null": alternatives.append(primitive(t))
            case "object": alternatives.append(try object(schema, path: path, hint: hint))
            case "array": alternatives.append(try array(schema, path: path, hint: hint))
            default:
                throw GrammarError.invalidSchema(path: path + "/type", message: "unknown type '\(t)'; use string, integer, number, boolean, null, object or array")
            }
        }
        return alternatives.count == 1 ? alternatives[0] : addRule(hint, alternatives.joined(separator: " | "))
    }

    mutating func reference(_ target: String, path: String) throws -> String {
        if let known = refRules[target] { return known }
        let resolved: JSONValue
        var name = "root"
        if target == "#" {
            resolved = root
        } else if target.hasPrefix("#/$defs/") || target.hasPrefix("#/definitions/") {
            let parts = target.dropFirst(2).split(separator: "/", maxSplits: 1).map(String.init)
            guard parts.count == 2, let defs = root[parts[0]], let def = defs[Self.unescapePointer(parts[1])] else {
                throw GrammarError.invalidSchema(path: path + "/$ref", message: "'\(target)' does not name a definition in the schema")
            }
            resolved = def
            name = parts[1]
        } else {
            throw GrammarError.invalidSchema(path: path + "/$ref", message: "only local references ('#', '#/$defs/NAME', '#/definitions/NAME') are supported, not '\(target)'")
        }
        // Reserve the rule first so recursive references resolve to it.
        let rule = addRule("def-" + name, "")
        refRules[target] = rule
        let body = try compile(resolved, path: target, hint: "def-" + name + "-body")
        if let i = rules.firstIndex(where: { $0.0 == rule }) { rules[i].1 = body }
        return rule
    }

    /// A JSON-pointer token with `~1` and `~0` unescaped.
    static func unescapePointer(_ token: String) -> String {
        var out = "", tilde = false
        for c in token {
            if tilde { out.append(c == "1" ? "/" : c == "0" ? "~" : c); tilde = false } else if c == "~" { tilde = true } else { out.append(c) }
        }
        return out
    }

    func count(_ schema: JSONValue, _ key: String, path: String) throws -> Int? {
        guard let v = schema[key] else { return nil }
        guard case .number(let text) = v, let n = Double(text), n >= 0, n == n.rounded() else {
            throw GrammarError.invalidSchema(path: path + "/" + key, message: "\(key) must be a non-negative integer")
        }
        guard n <= Double(Grammar.maxRepetition) else {
            throw GrammarError.invalidSchema(path: path + "/" + key, message: "\(key) above \(Grammar.maxRepetition) is not supported")
        }
        return Int(n)
    }

    static func repetition(_ low: Int, _ high: Int?) -> String {
        if let high { return low == high ? "{\(low)}" : "{\(low),\(high)}" }
        return low == 0 ? "*" : "{\(low),}"
    }

    mutating func string(_ schema: JSONValue, path: String, hint: String) throws -> String {
        let low = try count(schema, "minLength", path: path) ?? 0
        let high = try count(schema, "maxLength", path: path)
        if low == 0 && high == nil { return primitive("string") }
        if let high, high < low { throw GrammarError.invalidSchema(path: path, message: "maxLength is below minLength") }
        let char = primitive("char")
        return addRule(hint, "\"\\\"\" \(char)\(Self.repetition(low, high)) \"\\\"\"")
    }

    mutating func array(_ schema: JSONValue, path: String, hint: String) throws -> String {
        let item = try schema["items"].map { try compile($0, path: path + "/items", hint: hint + "-item") } ?? primitive("value")
        let low = try count(schema, "minItems", path: path) ?? 0
        let high = try count(schema, "maxItems", path: path)
        if let high, high < low { throw GrammarError.invalidSchema(path: path, message: "maxItems is below minItems") }
        if high == 0 { return addRule(hint, "\"[]\"") }
        let more = Self.repetition(max(low - 1, 0), high.map { $0 - 1 })
        let body = "\(item) ( \", \" \(item) )\(more)"
        return addRule(hint, low == 0 ? "\"[\" ( \(body) )? \"]\"" : "\"[\" \(body) \"]\"")
    }

    mutating func object(_ schema: JSONValue, path: String, hint: String) throws -> String {
        var properties: [(String, JSONValue)] = []
        if let p = schema["properties"] {
            guard case .object(let members) = p else {
                throw GrammarError.invalidSchema(path: path + "/properties", message: "properties must be an object")
            }
            properties = members
        }
        var required: [String] = []
        if let r = schema["required"] {
            guard case .array(let names) = r, let strings = Optional(names.compactMap(\.stringValue)), strings.count == names.count else {
                throw GrammarError.invalidSchema(path: path + "/required", message: "required must be a list of property names")
            }
            required = strings
        }
        for name in required where !properties.contains(where: { $0.0 == name }) {
            throw GrammarError.invalidSchema(path: path + "/required", message: "required property '\(name)' has no schema in properties")
        }
        if properties.isEmpty {
            // No declared properties: any object, or exactly {} when nothing more is allowed.
            if case .bool(false)? = schema["additionalProperties"] { return addRule(hint, "\"{}\"") }
            return primitive("object")
        }
        var pairs: [String] = []
        for (name, sub) in properties {
            let value = try compile(sub, path: "\(path)/properties/\(name)", hint: "\(hint)-\(name)")
            pairs.append("\(Self.literal(JSONValue.quoted(name) + ": ")) \(value)")
        }
        let isRequired = properties.map { required.contains($0.0) }
        // first_i: nothing written yet, at property i; after_i: something written before.
        var first = "", after = ""
        for i in stride(from: properties.count - 1, through: 0, by: -1) {
            let kv = pairs[i]
            let nextAfter = after.isEmpty ? "" : " " + after
            let nextFirst = first.isEmpty ? "" : first
            let afterBody = isRequired[i] ? "\", \" \(kv)\(nextAfter)" : "( \", \" \(kv) )?\(nextAfter)"
            let firstBody: String
            if isRequired[i] {
                firstBody = "\(kv)\(nextAfter)"
            } else {
                firstBody = nextFirst.isEmpty ? "( \(kv)\(nextAfter) )?" : "\(kv)\(nextAfter) | \(nextFirst)"
            }
            after = addRule("\(hint)-after-\(i)", afterBody)
            first = addRule("\(hint)-from-\(i)", firstBody)
        }
        return addRule(hint, "\"{\" \(first) \"}\"")
    }
}
