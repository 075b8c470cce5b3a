/// The numbers a JSON schema's `minimum`, `maximum`, `exclusiveMinimum` and `exclusiveMaximum`
/// allow, compiled to GBNF that matches exactly those numbers, digit by digit.
///
/// A number is written as a sign, an integer part `I` (at most 16 digits, no leading zeros) and,
/// for `number`, an optional fraction `F` (no exponent: an exponent would escape the bounds).
/// With integer-valued bounds the set of allowed `(I, F)` is a union of integer-part ranges, each
/// with one fraction class: any fraction, a fraction of zeros only (`x <= U` at `I == U`), or a
/// fraction with a non-zero digit (`x > L` at `I == L`). Each integer-part range becomes digit
/// alternatives the way llama.cpp's json-schema-to-grammar builds them: split by digit count,
/// then per leading digit (`25..=300` is `2 [5-9] | [3-9] [0-9] | [1-2] [0-9]{2} | 3 00`).
///
/// Integers take any bound (a fractional one rounds inwards). A number's fractional bound is
/// refused: comparing fractions digit by digit is not implemented.
struct NumberRange: Equatable {
    /// One bound: the value, and whether it is excluded.
    struct Bound: Equatable {
        var value: Int64
        var strict: Bool
    }

    /// Bounds, nil where open. Values are clamped to what 16 digits can write.
    var lower: Bound?
    var upper: Bound?
    /// Integers only (no fraction part).
    var integer: Bool

    /// The most digits of an integer part (the `json-integer` primitive's limit too).
    static let maxDigits = 16
    static let maxMagnitude: Int64 = 9_999_999_999_999_999

    /// The range `schema` sets, or nil when it sets no bound. Throws for a bound that is not a
    /// number, or a fractional bound on a `number`.
    static func from(_ schema: JSONValue, integer: Bool, path: String) throws -> NumberRange? {
        var range = NumberRange(lower: nil, upper: nil, integer: integer)
        var any = false
        for (key, isLower) in [("minimum", true), ("maximum", false), ("exclusiveMinimum", true), ("exclusiveMaximum", false)] {
            guard let raw = schema[key] else { continue }
            var strict = key.hasPrefix("exclusive")
            let text: String
            switch raw {
            case .number(let t):
                text = t
            case .bool(let flag) where strict:
                // Draft 4: `exclusiveMinimum: true` makes `minimum` exclusive.
                let base = isLower ? "minimum" : "maximum"
                guard flag, case .number(let t)? = schema[base] else { continue }
                text = t
            default:
                throw GrammarError.invalidSchema(path: path + "/" + key, message: "\(key) must be a number")
            }
            guard let value = Double(text), value.isFinite else {
                throw GrammarError.invalidSchema(path: path + "/" + key, message: "\(key) must be a finite number")
            }
            any = true
            var bound: Double = value
            if value != value.rounded() {
                guard integer else {
                    throw GrammarError.unsupportedFeature(
                        keyword: key, path: path,
                        message: "a fractional bound (\(text)) on a number is not supported; use an integer bound, or type integer")
                }
                // An integer above 2.5 is at least 3: the rounded bound includes its value.
                bound = isLower ? value.rounded(.up) : value.rounded(.down)
                strict = false
            }
            range.tighten(Bound(value: clamp(bound), strict: strict), lower: isLower)
        }
        return any ? range : nil
    }

    /// A bound value as an `Int64` within what 16 digits can write, one beyond on each side
    /// standing for "further than any written number".
    static func clamp(_ v: Double) -> Int64 {
        if v > Double(maxMagnitude) { return maxMagnitude + 1 }
        if v < -Double(maxMagnitude) { return -maxMagnitude - 1 }
        return Int64(v)
    }

    /// Keeps the tighter of the current bound and `b` (on equal values, the strict one).
    mutating func tighten(_ b: Bound, lower isLower: Bool) {
        if isLower {
            if let l = lower, l.value > b.value || (l.value == b.value && l.strict) { return }
            lower = b
        } else {
            if let u = upper, u.value < b.value || (u.value == b.value && u.strict) { return }
            upper = b
        }
    }

    // MARK: - GBNF

    /// What may follow an integer part.
    enum Fraction: Equatable {
        /// Any fraction, or none.
        case any
        /// None, or zeros only (the value equals the integer part).
        case zero
        /// One with a non-zero digit (the value exceeds the integer part).
        case positive
        /// Nothing may follow (this integer part is excluded).
        case excluded

        func meet(_ other: Fraction) -> Fraction {
            if self == other || other == .any { return self }
            if self == .any { return other }
            return .excluded
        }
    }

    /// GBNF (alternatives) for the numbers in range, or nil when no number of at most 16 digits
    /// is in it.
    func gbnf() -> String? {
        var alternatives: [String] = []
        // Non-negative numbers, written without a sign.
        if upper.map({ $0.value > 0 || ($0.value == 0 && !$0.strict) }) ?? true {
            let low = lower.map { $0.value < 0 ? Bound(value: 0, strict: false) : $0 } ?? Bound(value: 0, strict: false)
            alternatives += magnitudes(low, upper)
        }
        // Negative numbers: "-" and a magnitude y > 0 with x = -y, so the bounds swap.
        if lower.map({ $0.value < 0 }) ?? true {
            let low = upper.map { $0.value >= 0 ? Bound(value: 0, strict: true) : Bound(value: -$0.value, strict: $0.strict) }
                ?? Bound(value: 0, strict: true)
            let high = lower.map { Bound(value: -$0.value, strict: $0.strict) }
            let negative = magnitudes(low, high)
            if !negative.isEmpty { alternatives.insert("\"-\" " + Self.group(negative), at: 0) }
        }
        return alternatives.isEmpty ? nil : alternatives.joined(separator: " | ")
    }

    /// Alternatives for magnitudes `m` (integer part and fraction) with `low <= m <= high`
    /// (strictness per bound), `low.value >= 0`.
    func magnitudes(_ low: Bound, _ high: Bound?) -> [String] {
        var pieces: [(from: Int64, to: Int64?, fraction: Fraction)] = []
        let atLow: Fraction = low.strict ? .positive : .any
        let atHigh: Fraction = high.map { $0.strict ? .excluded : .zero } ?? .any
        if let high, low.value > high.value { return [] }
        if let high, low.value == high.value {
            pieces.append((low.value, low.value, atLow.meet(atHigh)))
        } else {
            pieces.append((low.value, low.value, atLow))
            if let high {
                if low.value + 1 <= high.value - 1 { pieces.append((low.value + 1, high.value - 1, .any)) }
                pieces.append((high.value, high.value, atHigh))
            } else {
                pieces.append((low.value + 1, nil, .any))
            }
        }
        // Integers have no fraction: a value that needs one is excluded.
        if integer {
            pieces = pieces.map { p in (p.from, p.to, p.fraction == .any || p.fraction == .zero ? .any : .excluded) }
        }
        // Only what 16 digits can write, then adjacent pieces with the same fraction merged.
        var merged: [(from: Int64, to: Int64?, fraction: Fraction)] = []
        for var p in pieces where p.fraction != .excluded && p.from <= Self.maxMagnitude {
            if let to = p.to, to > Self.maxMagnitude { p.to = nil }
            if let last = merged.last, last.fraction == p.fraction, let end = last.to, end + 1 == p.from {
                merged[merged.count - 1].to = p.to
            } else {
                merged.append(p)
            }
        }
        return merged.map { p in
            let digits = Self.group(Self.integers(p.from, p.to))
            switch p.fraction {
            case .any: return integer ? digits : "\(digits) ( \".\" [0-9]{1,16} )?"
            case .zero: return "\(digits) ( \".\" \"0\"{1,16} )?"
            case .positive: return "\(digits) \".\" \"0\"{0,15} [1-9] [0-9]{0,15}"
            case .excluded: return ""
            }
        }
    }

    /// `( a | b )` for several alternatives, `a` for one.
    static func group(_ alternatives: [String]) -> String {
        alternatives.count == 1 ? alternatives[0] : "( " + alternatives.joined(separator: " | ") + " )"
    }

    /// Alternatives matching the decimal numerals (no leading zeros) of the integers in
    /// `from...to` (`to` nil: up to 16 digits), `0 <= from`.
    static func integers(_ from: Int64, _ to: Int64?) -> [String] {
        let high = to ?? maxMagnitude
        guard from <= high else { return [] }
        let fromDigits = String(from).count, highDigits = String(high).count
        var out: [String] = []
        for length in fromDigits...highDigits {
            if to == nil && length > fromDigits {
                // Every longer numeral: one alternative.
                out.append(length == maxDigits ? "[1-9] [0-9]{\(maxDigits - 1)}" : "[1-9] [0-9]{\(length - 1),\(maxDigits - 1)}")
                break
            }
            let low = length == fromDigits ? from : power(length - 1)
            let top = length == highDigits ? high : power(length) - 1
            out.append(group(sameLength(Array(String(low).utf8), Array(String(top).utf8))))
        }
        return out
    }

    static func power(_ n: Int) -> Int64 {
        (0..<n).reduce(Int64(1)) { acc, _ in acc * 10 }
    }

    /// Alternatives matching the digit strings of one length between `low` and `high`
    /// (inclusive), compared digit by digit from the left.
    static func sameLength(_ low: [UInt8], _ high: [UInt8]) -> [String] {
        guard let a = low.first, let b = high.first else { return [] }
        let rest = low.count - 1
        let tail = rest == 0 ? "" : rest == 1 ? " [0-9]" : " [0-9]{\(rest)}"
        if a == b {
            let inner = sameLength(Array(low.dropFirst()), Array(high.dropFirst()))
            return ["\"\(Character(Unicode.Scalar(a)))\"" + (inner.isEmpty ? "" : " " + group(inner))]
        }
        // The low digit with the rest at least low's rest, the digits between with any rest,
        // the high digit with the rest at most high's rest; an edge whose rest is unconstrained
        // joins the middle.
        let lowFree = low.dropFirst().allSatisfy { $0 == UInt8(ascii: "0") }
        let highFree = high.dropFirst().allSatisfy { $0 == UInt8(ascii: "9") }
        var out: [String] = []
        let nines = [UInt8](repeating: UInt8(ascii: "9"), count: rest), zeros = [UInt8](repeating: UInt8(ascii: "0"), count: rest)
        if !lowFree {
            out.append("\"\(Character(Unicode.Scalar(a)))\" " + group(sameLength(Array(low.dropFirst()), nines)))
        }
        let middleLow = lowFree ? a : a + 1, middleHigh = highFree ? b : b - 1
        if middleLow <= middleHigh {
            let set = middleLow == middleHigh ? "[\(Character(Unicode.Scalar(middleLow)))]"
                : "[\(Character(Unicode.Scalar(middleLow)))-\(Character(Unicode.Scalar(middleHigh)))]"
            out.append(set + tail)
        }
        if !highFree {
            out.append("\"\(Character(Unicode.Scalar(b)))\" " + group(sameLength(zeros, Array(high.dropFirst()))))
        }
        return out
    }
}
