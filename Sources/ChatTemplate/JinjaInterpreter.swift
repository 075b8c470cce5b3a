#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// MARK: - Interpreter

/// Renders a parsed template. Scoping follows Jinja: a `for` body gets its own scope per iteration,
/// so `{% set %}` inside a loop does not leak out (templates use `namespace()` for that); `if` does
/// not open a scope. Undefined names and attributes render as empty text and are falsy.
struct JinjaInterpreter {
    private var scopes: [[String: JinjaValue]]
    private var output = ""
    private var line = 1
    /// Upper bound on iterations of all loops together, against runaway templates.
    private var iterationBudget = 1_000_000

    private enum Flow { case normal, breakLoop, continueLoop }

    init(globals: [String: JinjaValue]) {
        scopes = [globals]
    }

    mutating func render(_ nodes: [JinjaNode]) throws(ChatTemplateError) -> String {
        _ = try execute(nodes)
        return output
    }

    // MARK: - Statements

    private mutating func execute(_ nodes: [JinjaNode]) throws(ChatTemplateError) -> Flow {
        for node in nodes {
            switch node {
            case .text(let text):
                output += text
            case .output(let expression, let nodeLine):
                line = nodeLine
                output += try evaluate(expression).text
            case .conditional(let branches, let otherwise, let nodeLine):
                line = nodeLine
                var chosen = otherwise
                for branch in branches {
                    if try evaluate(branch.condition).isTruthy {
                        chosen = branch.body
                        break
                    }
                }
                let flow = try execute(chosen)
                if flow != .normal { return flow }
            case .loop(let targets, let iterable, let filter, let body, let otherwise, let nodeLine):
                line = nodeLine
                try runLoop(targets: targets, iterable: iterable, filter: filter, body: body, otherwise: otherwise)
            case .assign(let target, let value, let nodeLine):
                line = nodeLine
                let result = try evaluate(value)
                try assign(target, result)
            case .assignBlock(let name, let body, let nodeLine):
                line = nodeLine
                let saved = output
                output = ""
                _ = try execute(body)
                let captured = output
                output = saved
                scopes[scopes.count - 1][name] = .string(captured)
            case .breakLoop:
                return .breakLoop
            case .continueLoop:
                return .continueLoop
            }
        }
        return .normal
    }

    private mutating func runLoop(
        targets: [String], iterable: JinjaExpression, filter: JinjaExpression?, body: [JinjaNode], otherwise: [JinjaNode]
    ) throws(ChatTemplateError) {
        let source = try evaluate(iterable)
        guard var items = source.iterationItems else {
            throw .type(message: "cannot loop over a \(source.typeName)", line: line)
        }
        if let filter {
            var kept: [JinjaValue] = []
            for item in items {
                scopes.append([:])
                try bind(targets, to: item)
                let keep = try evaluate(filter).isTruthy
                scopes.removeLast()
                if keep { kept.append(item) }
            }
            items = kept
        }
        if items.isEmpty {
            _ = try execute(otherwise)
            return
        }
        iterationBudget -= items.count
        guard iterationBudget >= 0 else { throw .type(message: "loops ran more than 1000000 iterations", line: line) }
        for (index, item) in items.enumerated() {
            var loop = JinjaDictionary()
            loop["index"] = .integer(index + 1)
            loop["index0"] = .integer(index)
            loop["revindex"] = .integer(items.count - index)
            loop["revindex0"] = .integer(items.count - index - 1)
            loop["first"] = .bool(index == 0)
            loop["last"] = .bool(index == items.count - 1)
            loop["length"] = .integer(items.count)
            loop["previtem"] = index > 0 ? items[index - 1] : .undefined
            loop["nextitem"] = index + 1 < items.count ? items[index + 1] : .undefined
            scopes.append(["loop": .dictionary(loop)])
            try bind(targets, to: item)
            let flow = try execute(body)
            scopes.removeLast()
            if flow == .breakLoop { break }
        }
    }

    private mutating func bind(_ targets: [String], to item: JinjaValue) throws(ChatTemplateError) {
        if targets.count == 1 {
            scopes[scopes.count - 1][targets[0]] = item
            return
        }
        guard case .list(let parts) = item, parts.count == targets.count else {
            throw .type(message: "cannot unpack a \(item.typeName) into \(targets.count) loop variables", line: line)
        }
        for (name, value) in zip(targets, parts) { scopes[scopes.count - 1][name] = value }
    }

    private mutating func assign(_ target: JinjaAssignTarget, _ value: JinjaValue) throws(ChatTemplateError) {
        switch target {
        case .name(let name):
            scopes[scopes.count - 1][name] = value
        case .attribute(let object, let name):
            guard case .namespace(let namespace) = lookup(object) else {
                throw .type(message: "{% set \(object).\(name) %} needs \(object) to be a namespace()", line: line)
            }
            namespace.attributes[name] = value
        }
    }

    private func lookup(_ name: String) -> JinjaValue {
        for scope in scopes.reversed() {
            if let value = scope[name] { return value }
        }
        return .undefined
    }

    // MARK: - Expressions

    private mutating func evaluate(_ expression: JinjaExpression) throws(ChatTemplateError) -> JinjaValue {
        switch expression {
        case .literal(let literal):
            return JinjaValue(literal)
        case .variable(let name):
            return lookup(name)
        case .list(let items):
            var values: [JinjaValue] = []
            for item in items { values.append(try evaluate(item)) }
            return .list(values)
        case .dictionary(let pairs):
            var dictionary = JinjaDictionary()
            for pair in pairs {
                let key = try evaluate(pair.key)
                dictionary[key.text] = try evaluate(pair.value)
            }
            return .dictionary(dictionary)
        case .attribute(let base, let name):
            return attribute(of: try evaluate(base), name)
        case .subscript(let base, let index):
            return try subscriptValue(try evaluate(base), try evaluate(index))
        case .slice(let base, let start, let stop, let step):
            let value = try evaluate(base)
            let startValue = try evaluateOptional(start)
            let stopValue = try evaluateOptional(stop)
            let stepValue = try evaluateOptional(step)
            return try slice(value, start: startValue, stop: stopValue, step: stepValue)
        case .call(let callee, let arguments, let keywords, let callLine):
            line = callLine
            return try call(callee, arguments, keywords)
        case .filter(let base, let name, let arguments, let keywords, let filterLine):
            let value = try evaluate(base)
            var args: [JinjaValue] = []
            for a in arguments { args.append(try evaluate(a)) }
            var kwargs: [String: JinjaValue] = [:]
            for (k, v) in keywords { kwargs[k] = try evaluate(v) }
            line = filterLine
            return try JinjaFilters.apply(name, value, args, kwargs, line: filterLine)
        case .test(let base, let name, let arguments, let negated, let testLine):
            let value = try evaluate(base)
            var args: [JinjaValue] = []
            for a in arguments { args.append(try evaluate(a)) }
            let result = try JinjaFilters.test(name, value, args, line: testLine)
            return .bool(result != negated)
        case .unary(let op, let operand, let opLine):
            let value = try evaluate(operand)
            switch (op, value) {
            case ("-", .integer(let i)): return .integer(-i)
            case ("-", .float(let d)): return .float(-d)
            case ("+", .integer), ("+", .float): return value
            default: throw .type(message: "bad operand type for unary \(op): \(value.typeName)", line: opLine)
            }
        case .binary(let op, let left, let right, let opLine):
            return try binary(op, try evaluate(left), try evaluate(right), line: opLine)
        case .compare(let first, let rest, let compareLine):
            var left = try evaluate(first)
            for (op, rightExpression) in rest {
                let right = try evaluate(rightExpression)
                guard try compare(op, left, right, line: compareLine) else { return .bool(false) }
                left = right
            }
            return .bool(true)
        case .and(let left, let right):
            let l = try evaluate(left)
            return l.isTruthy ? try evaluate(right) : l
        case .or(let left, let right):
            let l = try evaluate(left)
            return l.isTruthy ? l : try evaluate(right)
        case .not(let operand):
            return .bool(!(try evaluate(operand)).isTruthy)
        case .ternary(let then, let condition, let otherwise):
            if try evaluate(condition).isTruthy { return try evaluate(then) }
            return try evaluateOptional(otherwise) ?? .undefined
        }
    }

    private mutating func evaluateOptional(_ expression: JinjaExpression?) throws(ChatTemplateError) -> JinjaValue? {
        guard let expression else { return nil }
        return try evaluate(expression)
    }

    private func attribute(of value: JinjaValue, _ name: String) -> JinjaValue {
        switch value {
        case .dictionary(let d): return d[name] ?? .undefined
        case .namespace(let n): return n.attributes[name] ?? .undefined
        default: return .undefined
        }
    }

    private func subscriptValue(_ value: JinjaValue, _ index: JinjaValue) throws(ChatTemplateError) -> JinjaValue {
        switch (value, index) {
        case (.list(let items), .integer(let i)):
            let k = i < 0 ? items.count + i : i
            return k >= 0 && k < items.count ? items[k] : .undefined
        case (.string(let s), .integer(let i)):
            let chars = Array(s)
            let k = i < 0 ? chars.count + i : i
            return k >= 0 && k < chars.count ? .string(String(chars[k])) : .undefined
        case (.dictionary, .string(let key)), (.namespace, .string(let key)):
            return attribute(of: value, key)
        case (.undefined, _):
            return .undefined
        default:
            return .undefined
        }
    }

    private func slice(_ value: JinjaValue, start: JinjaValue?, stop: JinjaValue?, step: JinjaValue?) throws(ChatTemplateError) -> JinjaValue {
        func integer(_ v: JinjaValue?) throws(ChatTemplateError) -> Int? {
            switch v {
            case nil, .none?: return nil
            case .integer(let i)?: return i
            default: throw .type(message: "slice indices must be integers", line: line)
            }
        }
        let stepValue = try integer(step) ?? 1
        guard stepValue != 0 else { throw .type(message: "slice step cannot be zero", line: line) }
        func indices(_ count: Int) throws(ChatTemplateError) -> [Int] {
            // Python's slice.indices clamping.
            func clamp(_ i: Int?, _ defaultValue: Int) -> Int {
                guard var i else { return defaultValue }
                if i < 0 { i += count }
                return stepValue > 0 ? min(max(i, 0), count) : min(max(i, -1), count - 1)
            }
            let lo = clamp(try integer(start), stepValue > 0 ? 0 : count - 1)
            let hi = clamp(try integer(stop), stepValue > 0 ? count : -1)
            return Array(stride(from: lo, to: hi, by: stepValue))
        }
        switch value {
        case .list(let items):
            return .list(try indices(items.count).map { items[$0] })
        case .string(let s):
            let chars = Array(s)
            return .string(String(try indices(chars.count).map { chars[$0] }))
        case .undefined, .none:
            return .undefined
        default:
            throw .type(message: "cannot slice a \(value.typeName)", line: line)
        }
    }

    // MARK: - Operators

    private func binary(_ op: String, _ l: JinjaValue, _ r: JinjaValue, line opLine: Int) throws(ChatTemplateError) -> JinjaValue {
        if op == "~" { return .string(l.text + r.text) }
        switch (op, l, r) {
        case ("+", .string(let a), .string(let b)): return .string(a + b)
        case ("+", .list(let a), .list(let b)): return .list(a + b)
        case ("*", .string(let a), .integer(let n)): return .string(String(repeating: a, count: max(n, 0)))
        case ("*", .list(let a), .integer(let n)): return .list(Array(repeating: a, count: max(n, 0)).flatMap { $0 })
        case (_, .integer(let a), .integer(let b)):
            switch op {
            case "+": return .integer(a &+ b)
            case "-": return .integer(a &- b)
            case "*": return .integer(a &* b)
            case "/":
                guard b != 0 else { throw .type(message: "division by zero", line: opLine) }
                return .float(Double(a) / Double(b))
            case "//":
                guard b != 0 else { throw .type(message: "division by zero", line: opLine) }
                return .integer(Int((Double(a) / Double(b)).rounded(.down)))
            case "%":
                guard b != 0 else { throw .type(message: "modulo by zero", line: opLine) }
                let m = a % b
                return .integer(m != 0 && (m < 0) != (b < 0) ? m + b : m)  // Python's sign rule
            case "**":
                return b >= 0 ? .integer(Int(pow(Double(a), Double(b)))) : .float(pow(Double(a), Double(b)))
            default: break
            }
        default:
            if let a = l.numeric, let b = r.numeric, !(l.isBool && r.isBool) {
                switch op {
                case "+": return .float(a + b)
                case "-": return .float(a - b)
                case "*": return .float(a * b)
                case "/":
                    guard b != 0 else { throw .type(message: "division by zero", line: opLine) }
                    return .float(a / b)
                case "//":
                    guard b != 0 else { throw .type(message: "division by zero", line: opLine) }
                    return .float((a / b).rounded(.down))
                case "%":
                    guard b != 0 else { throw .type(message: "modulo by zero", line: opLine) }
                    return .float(a - b * (a / b).rounded(.down))
                case "**": return .float(pow(a, b))
                default: break
                }
            }
        }
        throw .type(message: "unsupported operand types for \(op): \(l.typeName) and \(r.typeName)", line: opLine)
    }

    private func compare(_ op: String, _ l: JinjaValue, _ r: JinjaValue, line opLine: Int) throws(ChatTemplateError) -> Bool {
        switch op {
        case "==": return l.equals(r)
        case "!=": return !l.equals(r)
        case "in": return try contains(r, l, line: opLine)
        case "not in": return !(try contains(r, l, line: opLine))
        default:
            let order: Int
            if case .string(let a) = l, case .string(let b) = r {
                order = a == b ? 0 : (a < b ? -1 : 1)
            } else if let a = l.numeric, let b = r.numeric {
                order = a == b ? 0 : (a < b ? -1 : 1)
            } else {
                throw .type(message: "cannot compare \(l.typeName) \(op) \(r.typeName)", line: opLine)
            }
            switch op {
            case "<": return order < 0
            case "<=": return order <= 0
            case ">": return order > 0
            default: return order >= 0
            }
        }
    }

    func contains(_ container: JinjaValue, _ item: JinjaValue, line opLine: Int) throws(ChatTemplateError) -> Bool {
        switch container {
        case .string(let s):
            guard case .string(let sub) = item else { throw .type(message: "'in <string>' needs a string on the left, not \(item.typeName)", line: opLine) }
            return sub.isEmpty || s.contains(sub)
        case .list(let items): return items.contains { $0.equals(item) }
        case .dictionary(let d):
            guard case .string(let key) = item else { return false }
            return d[key] != nil
        case .namespace(let n):
            guard case .string(let key) = item else { return false }
            return n.attributes[key] != nil
        case .undefined, .none: return false
        default: throw .type(message: "argument of type \(container.typeName) is not iterable", line: opLine)
        }
    }

    // MARK: - Calls

    private mutating func call(
        _ callee: JinjaExpression, _ argumentExpressions: [JinjaExpression], _ keywordExpressions: [(String, JinjaExpression)]
    ) throws(ChatTemplateError) -> JinjaValue {
        let callLine = line
        var arguments: [JinjaValue] = []
        for a in argumentExpressions { arguments.append(try evaluate(a)) }
        var keywords = JinjaDictionary()
        for (k, v) in keywordExpressions { keywords[k] = try evaluate(v) }
        line = callLine
        switch callee {
        case .variable(let name) where lookup(name).isDefined == false:
            return try JinjaFilters.callGlobal(name, arguments, keywords, line: callLine)
        case .attribute(let base, let method):
            let receiver = try evaluate(base)
            return try JinjaFilters.callMethod(receiver, method, arguments, line: callLine)
        default:
            throw .unsupported(construct: "calling this expression", line: callLine)
        }
    }
}

extension JinjaValue {
    var isBool: Bool {
        if case .bool = self { return true }
        return false
    }
}
