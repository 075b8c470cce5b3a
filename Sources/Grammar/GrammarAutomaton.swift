/// Top-down matching of a `Grammar`, determinised lazily: a matcher state is the set of parse
/// stacks alive after the text so far (each stack's top a character class), interned as a small
/// integer, and transitions between states are computed once and then looked up.
///
/// Stacks are persistent linked lists of element positions (the top, then the return positions
/// of the rules it is inside), interned too, so equal stacks are equal integers and a state is a
/// sorted list of stack ids. A reference in tail position pushes no return position (a loop
/// written as right recursion keeps its depth), so the states of a grammar repeat and the table
/// stays small.
///
/// Not thread-safe: one owner at a time (the engine thread; see `TokenGrammar`).
final class GrammarAutomaton {
    let grammar: Grammar
    /// Stack nodes: the element position on top and the node below (-1: none).
    private var nodePosition: [Int32] = []
    private var nodeParent: [Int32] = []
    private var nodeIndex: [Int64: Int32] = [:]
    /// States: their stack tops (sorted node ids) and whether the text so far is a full match.
    private(set) var stateNodes: [[Int32]] = []
    private(set) var stateAccepting: [Bool] = []
    private var stateIndex: [[Int32]: Int32] = [:]
    /// `asciiNext[state * 128 + c]`: the next state after ASCII `c`; `unknown` until computed,
    /// `dead` when no stack accepts `c`.
    private(set) var asciiNext: [Int32] = []
    private var otherNext: [Int64: Int32] = [:]
    static let dead: Int32 = -1
    static let unknown: Int32 = -2
    /// The most states one grammar may create (a guard against grammars that explode).
    static let maxStates = 200_000

    /// The state before any text.
    private(set) var start: Int32 = 0

    init(grammar: Grammar) {
        self.grammar = grammar
        var tops: [Int32] = [], accepting = false
        for alt in grammar.alternatives[Int(grammar.root)] {
            expand(alt, parent: -1, into: &tops, accepting: &accepting)
        }
        start = intern(tops, accepting: accepting)
    }

    var stateCount: Int { stateNodes.count }

    // MARK: - Stacks

    private func node(_ position: Int32, _ parent: Int32) -> Int32 {
        let key = Int64(position) << 32 | Int64(UInt32(bitPattern: parent))
        if let n = nodeIndex[key] { return n }
        let n = Int32(nodePosition.count)
        nodePosition.append(position)
        nodeParent.append(parent)
        nodeIndex[key] = n
        return n
    }

    /// Expands the stack (position, parent) until every resulting stack has a character class
    /// on top; a stack that empties is a full match.
    private func expand(_ position: Int32, parent: Int32, into tops: inout [Int32], accepting: inout Bool) {
        var work: [(Int32, Int32)] = [(position, parent)]
        var seen = Set<Int64>()
        while let (p, up) = work.popLast() {
            guard seen.insert(Int64(p) << 32 | Int64(UInt32(bitPattern: up))).inserted else { continue }
            switch grammar.kinds[Int(p)] {
            case Grammar.end:
                if up < 0 { accepting = true } else { work.append((nodePosition[Int(up)], nodeParent[Int(up)])) }
            case Grammar.chars:
                tops.append(node(p, up))
            default:
                let r = Int(grammar.values[Int(p)])
                // Tail position: nothing of this alternative remains after the reference.
                let back = grammar.kinds[Int(p) + 1] == Grammar.end ? up : node(p + 1, up)
                for alt in grammar.alternatives[r] { work.append((alt, back)) }
            }
        }
    }

    private func intern(_ tops: [Int32], accepting: Bool) -> Int32 {
        var key = Array(Set(tops)).sorted()
        if accepting { key.append(-1) }
        if let s = stateIndex[key] { return s }
        let s = Int32(stateNodes.count)
        stateNodes.append(accepting ? Array(key.dropLast()) : key)
        stateAccepting.append(accepting)
        stateIndex[key] = s
        asciiNext.append(contentsOf: repeatElement(Self.unknown, count: 128))
        return s
    }

    // MARK: - Transitions

    /// The state after code point `c` from `state`, or `dead`.
    @inline(__always) func next(_ state: Int32, _ c: UInt32) -> Int32 {
        if c < 128 {
            let cached = asciiNext[Int(state) * 128 + Int(c)]
            if cached != Self.unknown { return cached }
        } else if let cached = otherNext[Int64(state) << 21 | Int64(c)] {
            return cached
        }
        return compute(state, c)
    }

    private func compute(_ state: Int32, _ c: UInt32) -> Int32 {
        var tops: [Int32] = [], accepting = false
        for n in stateNodes[Int(state)] {
            let p = nodePosition[Int(n)]
            guard grammar.classContains(grammar.values[Int(p)], c) else { continue }
            expand(p + 1, parent: nodeParent[Int(n)], into: &tops, accepting: &accepting)
        }
        let result = tops.isEmpty && !accepting || stateNodes.count >= Self.maxStates ? Self.dead : intern(tops, accepting: accepting)
        if c < 128 { asciiNext[Int(state) * 128 + Int(c)] = result } else { otherNext[Int64(state) << 21 | Int64(c)] = result }
        return result
    }

    /// Whether some stack of `state` accepts a code point in `lo...hi` (for partial UTF-8).
    func acceptsSome(_ state: Int32, _ lo: UInt32, _ hi: UInt32) -> Bool {
        stateNodes[Int(state)].contains { grammar.classIntersects(grammar.values[Int(nodePosition[Int($0)])], lo, hi) }
    }

    /// The only code point `state` allows, when it allows exactly one and is not a full match.
    func forcedCodePoint(_ state: Int32) -> UInt32? {
        guard !stateAccepting[Int(state)] else { return nil }
        var forced: UInt32?
        for n in stateNodes[Int(state)] {
            let ranges = grammar.classes[Int(grammar.values[Int(nodePosition[Int(n)])])]
            guard ranges.count == 1, ranges[0].lowerBound == ranges[0].upperBound else { return nil }
            let c = ranges[0].lowerBound
            if let f = forced, f != c { return nil }
            forced = c
        }
        return forced
    }

    /// Whether `state` is a full match that allows no further character.
    func isComplete(_ state: Int32) -> Bool {
        stateAccepting[Int(state)] && stateNodes[Int(state)].isEmpty
    }
}
