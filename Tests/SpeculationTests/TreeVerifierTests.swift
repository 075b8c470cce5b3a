import Model
import Testing
import Speculation

/// Stochastic acceptance must preserve the target distribution: over many seeded trials of a
/// two-level draft tree on a small fixed distribution, the emitted token pairs follow the target's
/// joint distribution (chi-square), and a verifier that skips the residual correction fails.
@Suite struct TreeVerifierTests {
    typealias Verify = (_ ids: [Int32], _ p: inout [Float], _ children: [Int32], _ uniform: () -> Double) -> TreeVerifier.Outcome

    static let ids: [Int32] = [0, 1, 2, 3, 4]
    /// p(x1) at the root and p(x2 | x1) below each first token.
    static let root: [Float] = [0.4, 0.25, 0.2, 0.1, 0.05]
    static let below: [[Float]] = [
        [0.1, 0.6, 0.1, 0.1, 0.1], [0.3, 0.3, 0.2, 0.1, 0.1], [0.05, 0.05, 0.8, 0.05, 0.05],
        [0.2, 0.2, 0.2, 0.2, 0.2], [0.5, 0.1, 0.1, 0.1, 0.2],
    ]
    /// The draft: root children 1 and 0 (the less likely first), below 1: 2 and 0, below 0: 1.
    static let rootChildren: [Int32] = [1, 0]
    static let grandchildren: [Int32: [Int32]] = [1: [2, 0], 0: [1]]

    static let correct: Verify = { ids, p, children, uniform in
        TreeVerifier.verify(ids: ids, probabilities: &p, children: children, uniform: uniform)
    }
    /// Broken on purpose: on rejection it samples from the original distribution instead of the
    /// residual, so drafted tokens are emitted too often.
    static let broken: Verify = { ids, p, children, uniform in
        for (c, token) in children.enumerated() where uniform() < Double(p[Int(token)]) { return .accepted(child: c) }
        return .rejected(token: TreeVerifier.sample(ids: ids, weights: p, total: p.reduce(0, +), uniform: uniform))
    }

    /// Chi-square statistic of the emitted (x1, x2) pairs against p(x1) p(x2 | x1).
    static func chiSquare(_ verify: Verify, trials: Int, seed: UInt64) -> Double {
        var random = SamplerRandom(seed: seed)
        let uniform = { random.nextUnit() }
        var counts = [Int](repeating: 0, count: 25)
        for _ in 0..<trials {
            var p = root
            let x1: Int32
            var x2: Int32?
            switch verify(ids, &p, rootChildren, uniform) {
            case .accepted(let c):
                x1 = rootChildren[c]
                var q = below[Int(x1)]
                switch verify(ids, &q, grandchildren[x1] ?? [], uniform) {
                case .accepted(let g): x2 = grandchildren[x1]![g]
                case .rejected(let t): x2 = t
                }
            case .rejected(let t):
                x1 = t
            }
            // A path that ended after one token: the next step samples x2 from the target as usual.
            let second = x2 ?? TreeVerifier.sample(ids: ids, weights: below[Int(x1)], total: 1, uniform: uniform)
            counts[Int(x1) * 5 + Int(second)] += 1
        }
        var chi = 0.0
        for a in 0..<5 {
            for b in 0..<5 {
                let expected = Double(trials) * Double(root[a]) * Double(below[a][b])
                let d = Double(counts[a * 5 + b]) - expected
                chi += d * d / expected
            }
        }
        return chi
    }

    /// 24 degrees of freedom: the 0.999 quantile is 51.18.
    static let critical = 51.18

    @Test func acceptancePreservesTheTargetDistribution() {
        let chi = Self.chiSquare(Self.correct, trials: 200_000, seed: 42)
        #expect(chi < Self.critical, "chi-square \(chi)")
    }

    @Test func aVerifierWithoutTheResidualFailsTheSameTest() {
        let chi = Self.chiSquare(Self.broken, trials: 200_000, seed: 42)
        #expect(chi > Self.critical * 10, "chi-square \(chi)")
    }

    @Test func certainChildrenAreAlwaysAcceptedAndImpossibleOnesNever() {
        var p: [Float] = [0, 1, 0]
        var u = SamplerRandom(seed: 1)
        #expect(TreeVerifier.verify(ids: [0, 1, 2], probabilities: &p, children: [2, 1], uniform: { u.nextUnit() }) == .accepted(child: 1))
        let q: [Float] = [0.5, 0.5, 0]
        for _ in 0..<100 {
            var r = q
            if case .accepted = TreeVerifier.verify(ids: [0, 1, 2], probabilities: &r, children: [2], uniform: { u.nextUnit() }) {
                Issue.record("a child with probability 0 was accepted")
            }
        }
    }
}
