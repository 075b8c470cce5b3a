/// Lossless verification of a draft tree under sampling (temperature > 0), one node at a time:
/// multi-candidate speculative sampling with deterministic drafts (SpecInfer's recursive
/// rejection). At a node whose target distribution is p, the children x1, x2, ... are tried in
/// turn: child x_i is accepted with probability r(x_i), where r is the residual distribution
/// (p at first); on rejection r(x_i) is set to 0 and r renormalised. If no child is accepted,
/// the emitted token is sampled from the final residual. Every emitted token is therefore
/// distributed exactly as p, whatever the tree — a draft only changes how many tokens one step
/// yields, never which distribution they come from.
///
/// Greedy verification (temperature 0) is the special case p = one-hot at the argmax.
public enum TreeVerifier {
    /// The outcome at one node.
    public enum Outcome: Equatable, Sendable {
        /// The child at this index of `children` was accepted (its token is emitted; verification
        /// continues below it).
        case accepted(child: Int)
        /// No child was accepted; `token` (sampled from the residual) is emitted and the path ends.
        case rejected(token: Int32)
    }

    /// Verifies one node.
    ///
    /// - Parameters:
    ///   - ids: the support of the target distribution p at this node.
    ///   - probabilities: p over `ids` (sums to 1); used as scratch for the residual.
    ///   - children: the drafted child tokens to try, in order (distinct).
    ///   - uniform: a source of uniform numbers in [0, 1) (the request's own generator).
    public static func verify(ids: [Int32], probabilities: inout [Float], children: [Int32],
                              uniform: () -> Double) -> Outcome {
        precondition(ids.count == probabilities.count && !ids.isEmpty)
        var total = probabilities.reduce(0, +)
        for (c, token) in children.enumerated() {
            guard let at = ids.firstIndex(of: token), total > 0 else { continue }
            let r = Double(probabilities[at] / total)
            if uniform() < r { return .accepted(child: c) }
            total -= probabilities[at]
            probabilities[at] = 0
        }
        return .rejected(token: sample(ids: ids, weights: probabilities, total: total, uniform: uniform))
    }

    /// A draw from `weights` (unnormalised, summing to `total`) over `ids`.
    public static func sample(ids: [Int32], weights: [Float], total: Float, uniform: () -> Double) -> Int32 {
        let u = uniform() * Double(total)
        var cumulative = 0.0
        var last = ids[0]
        for (i, w) in weights.enumerated() where w > 0 {
            cumulative += Double(w)
            last = ids[i]
            if u < cumulative { return ids[i] }
        }
        return last  // rounding left u above the last cumulative sum
    }
}
