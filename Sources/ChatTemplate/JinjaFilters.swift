// MARK: - Filters, tests, global functions and methods

/// The built-in library of the Jinja subset: filters (`x | trim`), tests (`x is defined`), global
/// functions (`raise_exception`, `namespace`, `range`) and Python methods chat templates call
/// (`content.strip()`, `message.items()`). Anything else is reported as unsupported with its line.
enum JinjaFilters {
    // MARK: - Filters

    static func apply(
        _ name: String, _ value: JinjaValue, _ args: [JinjaValue], _ kwargs: [String: JinjaValue], line: Int
    ) throws(ChatTemplateError) -> JinjaValue {
        func argument(_ index: Int, _ keyword: String) -> JinjaValue? {
            index < args.count ? args[index] : kwargs[keyword]
        }
        func stringValue() throws(ChatTemplateError) -> String {
            switch value {
            case .string(let s): return s
            case .undefined: return ""
            default: return value.text
            }
        }
        switch name {
        case "trim", "strip":
            return .string(strip(try stringValue(), characters: argument(0, "chars")))
        case "upper":
            return .string(try stringValue().uppercased())
        case "lower":
            return .string(try stringValue().lowercased())
        case "capitalize":
            let s = try stringValue()
            return .string(s.prefix(1).uppercased() + s.dropFirst().lowercased())
        case "title":
            return .string(title(try stringValue()))
        case "length", "count":
            switch value {
            case .string(let s): return .integer(s.count)
            case .list(let items): return .integer(items.count)
            case .dictionary(let d): return .integer(d.keys.count)
            case .undefined: return .integer(0)
            default: throw .type(message: "object of type \(value.typeName) has no length", line: line)
            }
        case "string":
            return .string(value.text)
        case "tojson":
            var indent: Int? = nil
            if case .integer(let n)? = argument(0, "indent") { indent = n }
            return .string(value.json(indent: indent))
        case "default", "d":
            let fallback = argument(0, "default_value") ?? .string("")
            let boolean = argument(1, "boolean")?.isTruthy ?? false
            return (boolean ? value.isTruthy : value.isDefined) ? value : fallback
        case "first":
            return value.iterationItems?.first ?? .undefined
        case "last":
            return value.iterationItems?.last ?? .undefined
        case "join":
            guard let items = value.iterationItems else { throw .type(message: "cannot join a \(value.typeName)", line: line) }
            let separator = argument(0, "d")?.text ?? ""
            if let attribute = argument(1, "attribute") {
                return .string(items.map { Self.attribute($0, attribute.text).text }.joined(separator: separator))
            }
            return .string(items.map(\.text).joined(separator: separator))
        case "replace":
            guard args.count >= 2 else { throw .type(message: "replace needs two arguments", line: line) }
            return .string(try stringValue().replacingAll(args[0].text, with: args[1].text))
        case "list":
            guard let items = value.iterationItems else { throw .type(message: "cannot make a list of a \(value.typeName)", line: line) }
            return .list(items)
        case "items":
            return try callMethod(value, "items", [], line: line)
        case "reverse":
            if case .string(let s) = value { return .string(String(s.reversed())) }
            return .list((value.iterationItems ?? []).reversed())
        case "unique":
            var seen: [JinjaValue] = []
            for item in value.iterationItems ?? [] where !seen.contains(where: { $0.equals(item) }) { seen.append(item) }
            return .list(seen)
        case "int":
            switch value {
            case .integer: return value
            case .float(let d): return .integer(Int(d))
            case .bool(let b): return .integer(b ? 1 : 0)
            case .string(let s): return .integer(Int(s.trimmingCharacters) ?? (argument(0, "default").flatMap { if case .integer(let i) = $0 { return i } else { return nil } } ?? 0))
            default: return .integer(0)
            }
        case "float":
            switch value {
            case .float: return value
            case .integer(let i): return .float(Double(i))
            case .string(let s): return .float(Double(s.trimmingCharacters) ?? 0)
            default: return .float(0)
            }
        case "abs":
            switch value {
            case .integer(let i): return .integer(abs(i))
            case .float(let d): return .float(abs(d))
            default: throw .type(message: "bad operand type for abs: \(value.typeName)", line: line)
            }
        case "safe", "escape", "e":
            // Chat templates render without autoescaping; `escape` is never meaningful for prompts.
            if name != "safe" { throw .unsupported(construct: "filter \"\(name)\"", line: line) }
            return value
        case "selectattr", "rejectattr", "select", "reject":
            guard let items = value.iterationItems else { throw .type(message: "cannot filter a \(value.typeName)", line: line) }
            let byAttribute = name.hasSuffix("attr")
            let keep = name.hasPrefix("select")
            var kept: [JinjaValue] = []
            for item in items {
                let subject: JinjaValue
                var rest = args
                if byAttribute {
                    guard !rest.isEmpty else { throw .type(message: "\(name) needs an attribute name", line: line) }
                    subject = Self.attribute(item, rest.removeFirst().text)
                } else {
                    subject = item
                }
                let passes: Bool
                if rest.isEmpty {
                    passes = subject.isTruthy
                } else {
                    let testName = rest.removeFirst().text
                    passes = try test(testName, subject, rest, line: line)
                }
                if passes == keep { kept.append(item) }
            }
            return .list(kept)
        case "map":
            guard let items = value.iterationItems else { throw .type(message: "cannot map a \(value.typeName)", line: line) }
            if let attribute = kwargs["attribute"] {
                let fallback = kwargs["default"]
                return .list(items.map { item in
                    let v = Self.attribute(item, attribute.text)
                    return v.isDefined ? v : (fallback ?? .undefined)
                })
            }
            guard let filterName = args.first?.text else { throw .type(message: "map needs a filter name or attribute=", line: line) }
            var mapped: [JinjaValue] = []
            for item in items { mapped.append(try apply(filterName, item, Array(args.dropFirst()), [:], line: line)) }
            return .list(mapped)
        case "sum":
            var total = JinjaValue.integer(0)
            for item in value.iterationItems ?? [] {
                switch (total, item) {
                case (.integer(let a), .integer(let b)): total = .integer(a + b)
                default: total = .float((total.numeric ?? 0) + (item.numeric ?? 0))
                }
            }
            return total
        case "indent":
            let width: Int
            if case .integer(let w)? = argument(0, "width") { width = w } else { width = 4 }
            let first = argument(1, "first")?.isTruthy ?? false
            let pad = String(repeating: " ", count: width)
            let lines = try stringValue().split(separator: "\n", omittingEmptySubsequences: false)
            return .string(lines.enumerated().map { i, l in (i == 0 && !first) || l.isEmpty ? String(l) : pad + l }.joined(separator: "\n"))
        default:
            throw .unsupported(construct: "filter \"\(name)\"", line: line)
        }
    }

    // MARK: - Tests

    static func test(_ name: String, _ value: JinjaValue, _ args: [JinjaValue], line: Int) throws(ChatTemplateError) -> Bool {
        switch name {
        case "defined": return value.isDefined
        case "undefined": return !value.isDefined
        case "none": if case .none = value { return true } else { return false }
        case "string": if case .string = value { return true } else { return false }
        case "number": if case .integer = value { return true } else if case .float = value { return true } else { return false }
        case "integer": if case .integer = value { return true } else { return false }
        case "float": if case .float = value { return true } else { return false }
        case "boolean": return value.isBool
        case "true": if case .bool(true) = value { return true } else { return false }
        case "false": if case .bool(false) = value { return true } else { return false }
        case "mapping": if case .dictionary = value { return true } else { return false }
        case "iterable":
            switch value {
            case .list, .dictionary, .string: return true
            default: return false
            }
        case "sequence":
            switch value {
            case .list, .dictionary, .string: return true
            default: return false
            }
        case "callable": return false
        case "even", "odd", "divisibleby":
            guard case .integer(let i) = value else { throw .type(message: "test \(name) needs an integer, not \(value.typeName)", line: line) }
            if name == "even" { return i % 2 == 0 }
            if name == "odd" { return i % 2 != 0 }
            guard case .integer(let d)? = args.first, d != 0 else { throw .type(message: "divisibleby needs a non-zero integer", line: line) }
            return i % d == 0
        case "equalto", "eq", "==", "sameas":
            return value.equals(args.first ?? .undefined)
        case "ne", "!=":
            return !value.equals(args.first ?? .undefined)
        case "lt", "<", "le", "<=", "gt", ">", "ge", ">=":
            guard let a = value.numeric, let b = args.first?.numeric else {
                throw .type(message: "test \(name) needs numbers", line: line)
            }
            switch name {
            case "lt", "<": return a < b
            case "le", "<=": return a <= b
            case "gt", ">": return a > b
            default: return a >= b
            }
        case "in":
            switch args.first {
            case .string(let s)?: if case .string(let sub) = value { return s.contains(sub) } else { return false }
            case .list(let items)?: return items.contains { $0.equals(value) }
            case .dictionary(let d)?: if case .string(let k) = value { return d[k] != nil } else { return false }
            default: return false
            }
        case "lower": if case .string(let s) = value { return s == s.lowercased() } else { return false }
        case "upper": if case .string(let s) = value { return s == s.uppercased() } else { return false }
        default:
            throw .unsupported(construct: "test \"\(name)\"", line: line)
        }
    }

    // MARK: - Global functions

    static func callGlobal(_ name: String, _ args: [JinjaValue], _ kwargs: JinjaDictionary, line: Int) throws(ChatTemplateError) -> JinjaValue {
        switch name {
        case "raise_exception":
            throw .raised(message: args.first?.text ?? "raise_exception() called", line: line)
        case "namespace":
            var attributes = JinjaDictionary()
            if case .dictionary(let d)? = args.first {
                for key in d.keys { attributes[key] = d[key] }
            }
            for key in kwargs.keys { attributes[key] = kwargs[key] }
            return .namespace(JinjaNamespace(attributes))
        case "dict":
            return .dictionary(kwargs)
        case "range":
            var bounds: [Int] = []
            for arg in args {
                guard case .integer(let i) = arg else { throw .type(message: "range() needs integers", line: line) }
                bounds.append(i)
            }
            let (start, stop, step): (Int, Int, Int)
            switch bounds.count {
            case 1: (start, stop, step) = (0, bounds[0], 1)
            case 2: (start, stop, step) = (bounds[0], bounds[1], 1)
            case 3: (start, stop, step) = (bounds[0], bounds[1], bounds[2])
            default: throw .type(message: "range() takes 1 to 3 arguments", line: line)
            }
            guard step != 0 else { throw .type(message: "range() step must not be zero", line: line) }
            let values = Array(stride(from: start, to: stop, by: step))
            guard values.count <= 100_000 else { throw .type(message: "range() of \(values.count) items is too long", line: line) }
            return .list(values.map { .integer($0) })
        default:
            throw .unsupported(construct: "function \"\(name)\"", line: line)
        }
    }

    // MARK: - Methods

    static func callMethod(_ receiver: JinjaValue, _ method: String, _ args: [JinjaValue], line: Int) throws(ChatTemplateError) -> JinjaValue {
        switch (receiver, method) {
        case (.string(let s), "strip"): return .string(strip(s, characters: args.first))
        case (.string(let s), "lstrip"): return .string(strip(s, characters: args.first, leading: true, trailing: false))
        case (.string(let s), "rstrip"): return .string(strip(s, characters: args.first, leading: false, trailing: true))
        case (.string(let s), "upper"): return .string(s.uppercased())
        case (.string(let s), "lower"): return .string(s.lowercased())
        case (.string(let s), "title"): return .string(title(s))
        case (.string(let s), "capitalize"): return .string(s.prefix(1).uppercased() + s.dropFirst().lowercased())
        case (.string(let s), "startswith"): return .bool(args.first.map { s.hasPrefix($0.text) } ?? false)
        case (.string(let s), "endswith"): return .bool(args.first.map { s.hasSuffix($0.text) } ?? false)
        case (.string(let s), "replace"):
            guard args.count >= 2 else { throw .type(message: "replace() needs two arguments", line: line) }
            return .string(s.replacingAll(args[0].text, with: args[1].text))
        case (.string(let s), "split"):
            if let separator = args.first, case .string(let sep) = separator, !sep.isEmpty {
                return .list(s.splittingAll(sep).map { .string($0) })
            }
            return .list(s.split(whereSeparator: { $0.isWhitespace }).map { .string(String($0)) })
        case (.dictionary(let d), "items"):
            return .list(d.keys.map { .list([.string($0), d[$0]!]) })
        case (.dictionary(let d), "keys"):
            return .list(d.keys.map { .string($0) })
        case (.dictionary(let d), "values"):
            return .list(d.keys.map { d[$0]! })
        case (.dictionary(let d), "get"):
            guard let key = args.first else { throw .type(message: "get() needs a key", line: line) }
            return d[key.text] ?? (args.count > 1 ? args[1] : .none)
        default:
            throw .unsupported(construct: "method \(method)() on a \(receiver.typeName)", line: line)
        }
    }

    // MARK: - Helpers

    static func attribute(_ value: JinjaValue, _ name: String) -> JinjaValue {
        switch value {
        case .dictionary(let d): return d[name] ?? .undefined
        case .namespace(let n): return n.attributes[name] ?? .undefined
        default: return .undefined
        }
    }

    /// Python `str.strip([chars])`.
    static func strip(_ s: String, characters: JinjaValue?, leading: Bool = true, trailing: Bool = true) -> String {
        var scalars = Substring(s).unicodeScalars[...]
        let set: Set<Unicode.Scalar>?
        if case .string(let chars)? = characters { set = Set(chars.unicodeScalars) } else { set = nil }
        func strippable(_ c: Unicode.Scalar) -> Bool { set?.contains(c) ?? c.properties.isWhitespace }
        if leading { while let c = scalars.first, strippable(c) { scalars.removeFirst() } }
        if trailing { while let c = scalars.last, strippable(c) { scalars.removeLast() } }
        return String(String.UnicodeScalarView(scalars))
    }

    /// Python `str.title()`: upper-case the first letter of each run of letters, lower-case the rest.
    static func title(_ s: String) -> String {
        var out = ""
        var previousIsLetter = false
        for c in s {
            out += previousIsLetter ? c.lowercased() : c.uppercased()
            previousIsLetter = c.isLetter
        }
        return out
    }
}

extension String {
    fileprivate var trimmingCharacters: String { JinjaFilters.strip(self, characters: nil) }

    /// Replaces every occurrence of `target` (Python `str.replace`); an empty target inserts between characters.
    fileprivate func replacingAll(_ target: String, with replacement: String) -> String {
        guard !target.isEmpty else {
            return replacement + map { String($0) + replacement }.joined()
        }
        return splittingAll(target).joined(separator: replacement)
    }

    /// Splits on every occurrence of a non-empty separator, keeping empty pieces (Python `str.split(sep)`).
    /// Compares Unicode scalars, so a separator may split inside a grapheme cluster as Python would.
    fileprivate func splittingAll(_ separator: String) -> [String] {
        let s = Array(unicodeScalars)
        let n = Array(separator.unicodeScalars)
        func piece(_ r: Range<Int>) -> String { String(String.UnicodeScalarView(s[r])) }
        var pieces: [String] = []
        var start = 0
        var i = 0
        while i + n.count <= s.count {
            if s[i..<(i + n.count)].elementsEqual(n) {
                pieces.append(piece(start..<i))
                i += n.count
                start = i
            } else {
                i += 1
            }
        }
        pieces.append(piece(start..<s.count))
        return pieces
    }
}
