import JSONText

/// Compiles a JSON schema (the subset structured outputs and tool parameters use) to GBNF whose
/// every match is a JSON text valid against the schema, written with `json.dumps`' separators
/// (`", "`, `": "`, no other whitespace: fixed separators let the grammar force them, and a
/// small model cannot wander into endless whitespace).
///
/// Supported: `type` (string, integer, number, boolean, null, object, array, or a list of them;
/// inferred from the other keywords when absent), `nullable`, `properties` (generated in schema
/// order), `required`, `additionalProperties` (extra properties are never generated, so any
/// value is accepted), `enum`, `const`, `items`, `minItems`, `maxItems`, `minLength`,
/// `maxLength`, `pattern` (`RegexGrammar`), `format` (date, time, date-time, uuid, ipv4),
/// `minimum`, `maximum`, `exclusiveMinimum`, `exclusiveMaximum` (`NumberRange`: exact digit
/// grammars), `anyOf`, `oneOf` (as `anyOf`: the alternatives people write are disjoint, as
/// pydantic's tagged unions are), `allOf` (merged into one schema), `$ref` to `#`,
/// `#/$defs/...` or `#/definitions/...`, and annotations that do not constrain (`title`,
/// `description`, `default`, `examples`, `discriminator`, ...). Anything else is refused with
/// the keyword and its path, rather than producing output that might not validate.
public struct JSONSchemaGrammar {
    public static let supportedKeywords = [
        "type", "nullable", "properties", "required", "additionalProperties", "enum", "const", "items", "minItems", "maxItems",
        "minLength", "maxLength", "pattern", "format", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
        "anyOf", "oneOf", "allOf", "$ref", "$defs", "definitions",
    ] + annotations
    /// Keywords that do not constrain the instance (or, for `$defs`, only hold schemas).
    static let annotations = [
        "title", "description", "default", "examples", "$schema", "$id", "$comment", "deprecated", "readOnly", "writeOnly",
        "discriminator",
    ]
    static let keywordSet = Set(supportedKeywords)
    static let passiveKeywords = Set(annotations + ["$defs", "definitions"])
    /// The `format` values compiled to a grammar, each a primitive rule.
    public static let supportedFormats = ["date", "time", "date-time", "uuid", "ipv4"]

    /// The schema being compiled (what `$ref`s resolve against).
    var root: JSONValue = .object([])
    var rules: [(String, String)] = []
    var ruleNames: Set<String> = []
    var refRules: [String: String] = [:]

    public init() {}

    /// GBNF for `schema` (a JSON object, or `true` for any JSON value).
    public static func gbnf(schema: JSONValue) throws -> String {
        var compiler = JSONSchemaGrammar()
        // "root" is reserved for the entry rule: a schema's own rules (a nullable string's, say)
        // take the hint "root" too and must not claim the name.
        compiler.ruleNames.insert("root")
        let top = try compiler.rule(for: schema, hint: "root")
        compiler.rules.insert(("root", top), at: 0)
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
        // RFC 3339 full-date: February stops at 28, so every date exists in every year.
        "date": ("[1-9] [0-9]{3} \"-\" ( ( \"0\" [13578] | \"1\" [02] ) \"-\" ( \"0\" [1-9] | [12] [0-9] | \"3\" [01] ) | "
                 + "( \"0\" [469] | \"11\" ) \"-\" ( \"0\" [1-9] | [12] [0-9] | \"30\" ) | \"02-\" ( \"0\" [1-9] | \"1\" [0-9] | \"2\" [0-8] ) )", []),
        // RFC 3339 full-time (the offset is required).
        "time": ("( [01] [0-9] | \"2\" [0-3] ) \":\" [0-5] [0-9] \":\" [0-5] [0-9] ( \".\" [0-9]{1,6} )? "
                 + "( \"Z\" | [+-] ( [01] [0-9] | \"2\" [0-3] ) \":\" [0-5] [0-9] )", []),
        "date-time": ("json-date \"T\" json-time", ["date", "time"]),
        "uuid": ("[0-9a-f]{8} \"-\" [0-9a-f]{4} \"-\" [0-9a-f]{4} \"-\" [0-9a-f]{4} \"-\" [0-9a-f]{12}", []),
        "ipv4": ("json-octet ( \".\" json-octet ){3}", ["octet"]),
        "octet": ("\"25\" [0-5] | \"2\" [0-4] [0-9] | \"1\" [0-9] [0-9] | [1-9] [0-9] | [0-9]", []),
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
        let constraining = members.map(\.0).filter { !Self.passiveKeywords.contains($0) }
        if let ref = schema["$ref"] {
            guard let target = ref.stringValue else { throw GrammarError.invalidSchema(path: path, message: "$ref must be a string") }
            guard constraining.count > 1 else { return try reference(target, path: path) }
            // Keywords beside a reference constrain the referenced schema further.
            let rest = JSONValue.object(members.filter { $0.0 != "$ref" })
            return try compile(.object([("allOf", .array([.object([("$ref", ref)]), rest]))]), path: path, hint: hint)
        }
        if schema["allOf"] != nil {
            return try compile(try mergedAllOf(schema, path: path, depth: 0), path: path, hint: hint)
        }
        if let c = schema["const"] { return addRule(hint, Self.literal(c.text)) }
        if let e = schema["enum"] {
            guard case .array(let values) = e, !values.isEmpty else {
                throw GrammarError.invalidSchema(path: path + "/enum", message: "enum must be a non-empty list")
            }
            return addRule(hint, values.map { Self.literal($0.text) }.joined(separator: " | "))
        }
        if let key = ["anyOf", "oneOf"].first(where: { schema[$0] != nil }), case let any = schema[key]! {
            guard case .array(let options) = any, !options.isEmpty else {
                throw GrammarError.invalidSchema(path: path + "/" + key, message: "\(key) must be a non-empty list of schemas")
            }
            if let other = constraining.first(where: { $0 != key }) {
                throw GrammarError.unsupportedFeature(keyword: other, path: path,
                                                      message: "'\(other)' beside '\(key)' is not supported; move it into each of the alternatives")
            }
            var alternatives: [String] = []
            for (k, option) in options.enumerated() {
                alternatives.append(try compile(option, path: "\(path)/\(key)/\(k)", hint: "\(hint)-\(k)"))
            }
            return addRule(hint, alternatives.joined(separator: " | "))
        }
        var types: [String] = []
        switch schema["type"] {
        case nil:
            // The keywords say which types they constrain; generating only those types keeps
            // every instance valid (a bound on numbers says nothing of strings, but a string
            // would leave the bound unused).
            let implied: [(String, [String])] = [
                ("object", ["properties", "required", "additionalProperties"]), ("array", ["items", "minItems", "maxItems"]),
                ("string", ["minLength", "maxLength", "pattern", "format"]),
                ("number", ["minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"]),
            ]
            types = implied.filter { $0.1.contains { schema[$0] != nil } }.map(\.0)
        case .string(let t)?: types = [t]
        case .array(let list)?:
            types = try list.map {
                guard let t = $0.stringValue else { throw GrammarError.invalidSchema(path: path + "/type", message: "type names must be strings") }
                return t
            }
        default: throw GrammarError.invalidSchema(path: path + "/type", message: "type must be a string or a list of strings")
        }
        switch schema["nullable"] {
        case nil, .bool(false)?: break
        case .bool(true)?: if !types.isEmpty && !types.contains("null") { types.append("null") }
        default: throw GrammarError.invalidSchema(path: path + "/nullable", message: "nullable must be true or false")
        }
        if types.isEmpty { return primitive("value") }
        var alternatives: [String] = []
        for t in types {
            switch t {
            case "string": alternatives.append(try string(schema, path: path, hint: hint))
            case "integer", "number":
                if let range = try NumberRange.from(schema, integer: t == "integer", path: path) {
                    guard let body = range.gbnf() else {
                        throw GrammarError.invalidSchema(path: path, message: "no \(t) of at most \(NumberRange.maxDigits) digits lies within the bounds")
                    }
                    alternatives.append(addRule("\(hint)-\(t)", body))
                } else {
                    alternatives.append(primitive(t))
                }
            case "boolean", "null": alternatives.append(primitive(t))
            case "object": alternatives.append(try object(schema, path: path, hint: hint))
            case "array": alternatives.append(try array(schema, path: path, hint: hint))
            default:
                throw GrammarError.invalidSchema(path: path + "/type", message: "unknown type '\(t)'; use string, integer, number, boolean, null, object or array")
            }
        }
        return alternatives.count == 1 ? alternatives[0] : addRule(hint, alternatives.joined(separator: " | "))
    }

    /// The schema a local reference names, and a name for its rule.
    func resolve(_ target: String, path: String) throws -> (schema: JSONValue, name: String) {
        if target == "#" { return (root, "root") }
        guard target.hasPrefix("#/$defs/") || target.hasPrefix("#/definitions/") else {
            throw GrammarError.invalidSchema(path: path + "/$ref", message: "only local references ('#', '#/$defs/NAME', '#/definitions/NAME') are supported, not '\(target)'")
        }
        let parts = target.dropFirst(2).split(separator: "/", maxSplits: 1).map(String.init)
        guard parts.count == 2, let defs = root[parts[0]], let def = defs[Self.unescapePointer(parts[1])] else {
            throw GrammarError.invalidSchema(path: path + "/$ref", message: "'\(target)' does not name a definition in the schema")
        }
        return (def, parts[1])
    }

    mutating func reference(_ target: String, path: String) throws -> String {
        if let known = refRules[target] { return known }
        let (resolved, name) = try resolve(target, path: path)
        // Reserve the rule first so recursive references resolve to it.
        let rule = addRule("def-" + name, "")
        refRules[target] = rule
        let body = try compile(resolved, path: target, hint: "def-" + name + "-body")
        if let i = rules.firstIndex(where: { $0.0 == rule }) { rules[i].1 = body }
        return rule
    }

    /// `schema` with its `allOf` merged in: properties united (a property in several parts gets
    /// their `allOf`), `required` united, `type` intersected, annotations from the first part
    /// that has them; any other keyword must agree between the parts. References in the parts
    /// are followed (`depth` bounds a chain of them).
    func mergedAllOf(_ schema: JSONValue, path: String, depth: Int) throws -> JSONValue {
        guard depth < 32 else { throw GrammarError.invalidSchema(path: path, message: "allOf and $ref nest more than 32 deep") }
        guard case .object(let members) = schema else {
            throw GrammarError.invalidSchema(path: path, message: "a schema must be a JSON object")
        }
        var parts: [(JSONValue, String)] = [(.object(members.filter { $0.0 != "allOf" && $0.0 != "$ref" }), path)]
        if let ref = schema["$ref"] {
            guard let target = ref.stringValue else { throw GrammarError.invalidSchema(path: path, message: "$ref must be a string") }
            parts.append((try resolve(target, path: path).schema, target))
        }
        if let all = schema["allOf"] {
            guard case .array(let list) = all, !list.isEmpty else {
                throw GrammarError.invalidSchema(path: path + "/allOf", message: "allOf must be a non-empty list of schemas")
            }
            parts += list.enumerated().map { ($0.element, "\(path)/allOf/\($0.offset)") }
        }
        var merged: [(String, JSONValue)] = []
        for (part, partPath) in parts {
            var part = part
            if case .bool(true) = part { continue }
            if part["allOf"] != nil || part["$ref"] != nil { part = try mergedAllOf(part, path: partPath, depth: depth + 1) }
            guard case .object(let keys) = part else {
                throw GrammarError.invalidSchema(path: partPath, message: "a schema must be a JSON object")
            }
            for (key, value) in keys {
                guard let k = merged.firstIndex(where: { $0.0 == key }) else { merged.append((key, value)); continue }
                let old = merged[k].1
                if old == value || Self.passiveKeywords.contains(key) { continue }
                switch key {
                case "properties":
                    guard case .object(var into) = old, case .object(let more) = value else { break }
                    for (name, sub) in more {
                        if let j = into.firstIndex(where: { $0.0 == name }) {
                            if into[j].1 != sub { into[j].1 = .object([("allOf", .array([into[j].1, sub]))]) }
                        } else {
                            into.append((name, sub))
                        }
                    }
                    merged[k].1 = .object(into)
                    continue
                case "required":
                    guard case .array(let a) = old, case .array(let b) = value else { break }
                    merged[k].1 = .array(a + b.filter { !a.contains($0) })
                    continue
                case "type":
                    let names = { (v: JSONValue) -> [String] in
                        if case .array(let l) = v { return l.compactMap(\.stringValue) }
                        return v.stringValue.map { [$0] } ?? []
                    }
                    let b = names(value)
                    // An integer is a number: number ∩ integer is integer.
                    let common = names(old).flatMap { t -> [String] in
                        if b.contains(t) { return [t] }
                        if t == "number" && b.contains("integer") || t == "integer" && b.contains("number") { return ["integer"] }
                        return []
                    }
                    guard !common.isEmpty else {
                        throw GrammarError.invalidSchema(path: path + "/allOf", message: "the types of the allOf schemas have nothing in common")
                    }
                    merged[k].1 = .array(common.map { .string($0) })
                    continue
                default: break
                }
                throw GrammarError.unsupportedFeature(keyword: "allOf", path: path,
                                                      message: "the schemas set '\(key)' to different values; merging them is not supported")
            }
        }
        return .object(merged)
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
        if let shape = ["pattern", "format"].first(where: { schema[$0] != nil }) {
            // A pattern or format fixes the characters; a length on top of it would need the
            // intersection of two languages.
            if let other = ["format", "minLength", "maxLength"].first(where: { $0 != shape && schema[$0] != nil }) {
                throw GrammarError.unsupportedFeature(keyword: other, path: path, message: "'\(other)' together with '\(shape)' is not supported")
            }
            guard let value = schema[shape]?.stringValue else {
                throw GrammarError.invalidSchema(path: path + "/" + shape, message: "\(shape) must be a string")
            }
            let quote = "\"\\\"\""
            if shape == "pattern" {
                let body = try RegexGrammar.gbnf(value, anyCharacter: primitive("char"), path: path)
                return addRule(hint, "\(quote) \(body) \(quote)")
            }
            guard Self.supportedFormats.contains(value) else {
                throw GrammarError.unsupportedFeature(keyword: "format", path: path,
                                                      message: "format '\(value)' is not supported; supported formats: \(Self.supportedFormats.joined(separator: ", "))")
            }
            return addRule(hint, "\(quote) \(primitive(value)) \(quote)")
        }
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
