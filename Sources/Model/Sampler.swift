#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Kernels

// MARK: - Sampling parameters

/// How the next token is chosen from logits (OpenAI request fields).
///
/// The pipeline, in order: presence/frequency penalties on logits → temperature → top-k → top-p →
/// min-p → renormalize → draw. `temperature == 0` means greedy (argmax after penalties).
public struct SamplingParameters: Sendable, Equatable {
    /// Logit divisor; 0 selects greedy decoding.
    public var temperature: Float
    /// Keep only the `topK` most likely tokens; 0 (or ≥ vocabulary size) disables.
    public var topK: Int
    /// Keep the smallest set of most likely tokens whose probability mass reaches `topP`; 1 disables.
    public var topP: Float
    /// Drop tokens whose probability is below `minP` × the top probability; 0 disables.
    public var minP: Float
    /// Subtracted once from the logit of every token already generated (OpenAI `presence_penalty`).
    public var presencePenalty: Float
    /// Subtracted from a token's logit once per time it was generated (OpenAI `frequency_penalty`).
    public var frequencyPenalty: Float
    /// Seed for reproducible draws; nil seeds from the system generator.
    public var seed: UInt64?

    /// Creates parameters; the defaults are OpenAI's (temperature 1, no truncation, no penalties).
    public init(
        temperature: Float = 1, topK: Int = 0, topP: Float = 1, minP: Float = 0,
        presencePenalty: Float = 0, frequencyPenalty: Float = 0, seed: UInt64? = nil
    ) {
        self.temperature = temperature
        self.topK = topK
        self.topP = topP
        self.minP = minP
        self.presencePenalty = presencePenalty
        self.frequencyPenalty = frequencyPenalty
        self.seed = seed
    }

    /// Argmax decoding without penalties.
    public static let greedy = SamplingParameters(temperature: 0)
}

// MARK: - Token history

/// How often each token ID has been generated so far in one sequence; input to the penalties.
///
/// Storage is sized to the vocabulary once; `add` does not allocate in steady state.
/// Thread-safety: a value type; one per sequence.
public struct TokenCounts: Sendable {
    private var counts: [Int32]
    /// Distinct IDs seen, in first-seen order (penalties touch only these).
    public private(set) var seenIDs: [Int32]

    /// Empty history for a vocabulary of `vocabularySize` tokens.
    public init(vocabularySize: Int) {
        counts = [Int32](repeating: 0, count: vocabularySize)
        seenIDs = []
        seenIDs.reserveCapacity(min(vocabularySize, 4096))
    }

    /// Records one generated token. IDs outside the vocabulary are a programmer error.
    public mutating func add(_ id: Int32) {
        precondition(id >= 0 && Int(id) < counts.count, "token ID \(id) outside vocabulary of \(counts.count)")
        if counts[Int(id)] == 0 { seenIDs.append(id) }
        counts[Int(id)] += 1
    }

    /// How many times `id` was generated.
    public func count(of id: Int32) -> Int { id >= 0 && Int(id) < counts.count ? Int(counts[Int(id)]) : 0 }

    /// Forgets all tokens, keeping the storage.
    public mutating func removeAll() {
        for id in seenIDs { counts[Int(id)] = 0 }
        seenIDs.removeAll(keepingCapacity: true)
    }
}

// MARK: - Random numbers

/// xoshiro256** (Blackman & Vigna, 2018), seeded through splitmix64: fast, reproducible across
/// platforms for a given seed.
public struct SamplerRandom: RandomNumberGenerator, Sendable {
    private var s0, s1, s2, s3: UInt64

    /// A generator whose sequence is fully determined by `seed`.
    public init(seed: UInt64) {
        var x = seed
        func splitMix() -> UInt64 {
            x &+= 0x9E37_79B9_7F4A_7C15
            var z = x
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        s0 = splitMix(); s1 = splitMix(); s2 = splitMix(); s3 = splitMix()
    }

    public mutating func next() -> UInt64 {
        let result = ((s1 &* 5) << 7 | (s1 &* 5) >> 57) &* 9
        let t = s1 << 17
        s2 ^= s0
        s3 ^= s1
        s1 ^= s2
        s0 ^= s3
        s2 ^= t
        s3 = s3 << 45 | s3 >> 19
        return result
    }

    /// Uniform in [0, 1) with 53 random bits.
    public mutating func nextUnit() -> Double {
        Double(next() >> 11) * 0x1.0p-53
    }
}

// MARK: - Sampler

/// Chooses the next token from a row of logits; the one sampling implementation used by the engine
/// and by the speculative verifier (which reads `distribution(logits:count:history:)`).
///
/// Buffers are sized to the vocabulary at `init`; sampling allocates nothing per token.
/// Thread-safety: a value type with mutable state (RNG, scratch); one per sequence.
public struct Sampler: Sendable {
    /// The parameters this sampler applies.
    public let parameters: SamplingParameters
    private var random: SamplerRandom
    /// Candidate token IDs; the first `candidateCount` are the current distribution's support.
    private var candidateIDs: [Int32]
    /// Unnormalized, then normalized, probability per candidate (parallel to `candidateIDs`).
    private var candidateProbabilities: [Float]
    private var candidateCount = 0
    /// Scratch for sorting candidates.
    private var sortKeys: [UInt64]

    /// Creates a sampler for logits rows of `vocabularySize` entries.
    public init(parameters: SamplingParameters, vocabularySize: Int) {
        self.parameters = parameters
        var systemRandom = SystemRandomNumberGenerator()
        random = SamplerRandom(seed: parameters.seed ?? systemRandom.next())
        candidateIDs = [Int32](repeating: 0, count: vocabularySize)
        candidateProbabilities = [Float](repeating: 0, count: vocabularySize)
        sortKeys = [UInt64](repeating: 0, count: vocabularySize)
    }

    /// Picks the next token.
    ///
    /// - Parameters:
    ///   - logits: `[count]` logits for one position; penalties are applied to it **in place**. Only
    ///     read during the call.
    ///   - count: vocabulary size (at most the size given at `init`).
    ///   - history: tokens generated so far, for the penalties.
    /// - Returns: a token ID in `0..<count`. Greedy (temperature 0) returns the lowest ID among equal maxima.
    public mutating func sample(logits: UnsafeMutablePointer<Float>, count: Int, history: TokenCounts) -> Int32 {
        precondition(count > 0 && count <= candidateIDs.count, "logits count \(count) outside 1...\(candidateIDs.count)")
        applyPenalties(logits, count: count, history: history)
        if parameters.temperature <= 0 {
            return Ops.argmax(logits, count: count)
        }
        computeDistribution(logits, count: count)
        let u = random.nextUnit()
        var cumulative: Double = 0
        for i in 0..<candidateCount {
            cumulative += Double(candidateProbabilities[i])
            if u < cumulative { return candidateIDs[i] }
        }
        return candidateIDs[candidateCount - 1]  // rounding left u above the last cumulative sum
    }

    /// A uniform number in [0, 1) from this sampler's own generator (the speculative verifier
    /// draws its acceptance tests from it, so a seeded request stays reproducible).
    public mutating func nextUnit() -> Double { random.nextUnit() }

    /// The final distribution the sampler would draw from: penalties, temperature, top-k, top-p,
    /// min-p, renormalized. For temperature 0 it is the argmax with probability 1.
    ///
    /// - Parameters: as for `sample`; `logits` is modified in place by the penalties.
    /// - Returns: the support `ids` and their `probabilities` (summing to 1), in unspecified order.
    ///   The slices share the sampler's buffers (copy-on-write: no copy unless kept across calls).
    public mutating func distribution(
        logits: UnsafeMutablePointer<Float>, count: Int, history: TokenCounts
    ) -> (ids: ArraySlice<Int32>, probabilities: ArraySlice<Float>) {
        precondition(count > 0 && count <= candidateIDs.count, "logits count \(count) outside 1...\(candidateIDs.count)")
        applyPenalties(logits, count: count, history: history)
        if parameters.temperature <= 0 {
            candidateIDs[0] = Ops.argmax(logits, count: count)
            candidateProbabilities[0] = 1
            candidateCount = 1
        } else {
            computeDistribution(logits, count: count)
        }
        return (candidateIDs[0..<candidateCount], candidateProbabilities[0..<candidateCount])
    }

    // MARK: - Greedy choice and log-probabilities (`Kernels.Ops`, for callers that see only Model)

    /// Index of the largest of `count` logits, the lowest among ties (`Ops.argmax`).
    public static func argmax(_ logits: UnsafePointer<Float>, count: Int) -> Int32 {
        Ops.argmax(logits, count: count)
    }

    /// The log-sum-exp of `count` logits and the `top` most likely tokens with their
    /// log-probabilities (descending; ties: the lower ID first), from one `Ops.topK` pass.
    /// A token's log-probability is its logit minus `logSumExp`.
    public static func logprobs(_ logits: UnsafePointer<Float>, count: Int,
                                top: Int) -> (logSumExp: Float, top: [(id: Int32, logprob: Float)]) {
        let k = min(top, count)
        guard k > 0 else { return (Ops.logSumExp(logits, count: count), []) }
        var ids = [Int32](repeating: 0, count: k)
        var values = [Float](repeating: 0, count: k)
        let lse = Ops.topK(logits, count: count, k: k, ids: &ids, values: &values)
        return (lse, (0..<k).map { (id: ids[$0], logprob: values[$0] - lse) })
    }

    // MARK: - Pipeline steps

    /// OpenAI's penalties: `logit[j] -= count[j] * frequency + (count[j] > 0 ? presence : 0)`.
    private func applyPenalties(_ logits: UnsafeMutablePointer<Float>, count: Int, history: TokenCounts) {
        let presence = parameters.presencePenalty
        let frequency = parameters.frequencyPenalty
        guard presence != 0 || frequency != 0 else { return }
        for id in history.seenIDs where Int(id) < count {
            logits[Int(id)] -= Float(history.count(of: id)) * frequency + presence
        }
    }

    /// Fills the candidate buffers with the truncated, normalized distribution.
    private mutating func computeDistribution(_ logits: UnsafeMutablePointer<Float>, count: Int) {
        let inverseTemperature = 1 / parameters.temperature
        var maxLogit = -Float.infinity
        for i in 0..<count where logits[i] > maxLogit { maxLogit = logits[i] }
        // Softmax numerators relative to the top token, so the top probability is exactly 1 here.
        // Sums run in Double: 50k small terms in Float lose enough mass to move the top-p cut.
        var total: Double = 0
        candidateIDs.withUnsafeMutableBufferPointer { ids in
            candidateProbabilities.withUnsafeMutableBufferPointer { probs in
                for i in 0..<count {
                    let p = expf((logits[i] - maxLogit) * inverseTemperature)
                    ids[i] = Int32(i)
                    probs[i] = p
                    total += Double(p)
                }
            }
        }
        candidateCount = count

        let topK = parameters.topK > 0 && parameters.topK < count ? parameters.topK : count
        let truncates = topK < count || parameters.topP < 1 || parameters.minP > 0
        if truncates {
            if topK < count {
                selectTopK(topK)
                total = 0
                for i in 0..<candidateCount { total += Double(candidateProbabilities[i]) }
            }
            // Only tokens that can survive need sorting. Min-p cuts below minP (relative to the top,
            // which is 1 here) whatever top-p keeps; for top-p, the first threshold in the cascade
            // whose tokens alone reach the top-p mass contains the whole top-p prefix, so sorting
            // just those is exact.
            var threshold = max(parameters.minP, 0)
            if parameters.topP < 1 {
                let target = Double(parameters.topP) * total
                for candidate: Float in [0.1, 0.01, 1e-3, 1e-4, 1e-6] where candidate > threshold {
                    if massAbove(candidate) >= target {
                        threshold = candidate
                        break
                    }
                }
            }
            compactCandidates(threshold: threshold)
            sortCandidatesDescending()
            var keep = candidateCount
            if parameters.topP < 1 {
                let target = Double(parameters.topP) * total
                var cumulative: Double = 0
                for i in 0..<candidateCount {
                    cumulative += Double(candidateProbabilities[i])
                    if cumulative >= target {
                        keep = i + 1
                        break
                    }
                }
            }
            candidateCount = max(1, keep)
        }
        var kept: Double = 0
        for i in 0..<candidateCount { kept += Double(candidateProbabilities[i]) }
        let scale = Float(1 / kept)
        for i in 0..<candidateCount { candidateProbabilities[i] *= scale }
    }

    /// Total unnormalized probability of the candidates at or above `threshold`.
    private func massAbove(_ threshold: Float) -> Double {
        candidateProbabilities.withUnsafeBufferPointer { probs in
            var mass: Double = 0
            for i in 0..<candidateCount where probs[i] >= threshold { mass += Double(probs[i]) }
            return mass
        }
    }

    /// Keeps candidates with (unnormalized, top = 1) probability ≥ `threshold`.
    private mutating func compactCandidates(threshold: Float) {
        var kept = 0
        for i in 0..<candidateCount where candidateProbabilities[i] >= threshold {
            candidateIDs[kept] = candidateIDs[i]
            candidateProbabilities[kept] = candidateProbabilities[i]
            kept += 1
        }
        candidateCount = kept
    }

    /// Keeps the `k` most likely candidates (lower ID first among equals), via a min-heap of size k
    /// kept in the front of the buffers.
    private mutating func selectTopK(_ k: Int) {
        candidateIDs.withUnsafeMutableBufferPointer { ids in
            candidateProbabilities.withUnsafeMutableBufferPointer { probs in
                // "a ranks below b": lower probability, or equal probability and higher ID.
                func below(_ a: Int, _ b: Int) -> Bool {
                    probs[a] < probs[b] || (probs[a] == probs[b] && ids[a] > ids[b])
                }
                func swapAt(_ a: Int, _ b: Int) {
                    ids.swapAt(a, b)
                    probs.swapAt(a, b)
                }
                func siftDown(_ start: Int) {
                    var i = start
                    while true {
                        let l = 2 * i + 1, r = l + 1
                        var m = i
                        if l < k && below(l, m) { m = l }
                        if r < k && below(r, m) { m = r }
                        if m == i { return }
                        swapAt(i, m)
                        i = m
                    }
                }
                for i in stride(from: k / 2 - 1, through: 0, by: -1) { siftDown(i) }
                for i in k..<candidateCount where below(0, i) {
                    swapAt(0, i)
                    siftDown(0)
                }
            }
        }
        candidateCount = k
    }

    /// Sorts the candidate prefix by probability, descending (lower ID first on ties).
    ///
    /// Each candidate is packed into one `UInt64` key — probability bits (non-negative floats order
    /// like their bit patterns) above the inverted ID — and heap-sorted in place: no allocation.
    private mutating func sortCandidatesDescending() {
        let n = candidateCount
        guard n > 1 else { return }
        sortKeys.withUnsafeMutableBufferPointer { keys in
            candidateIDs.withUnsafeMutableBufferPointer { ids in
                candidateProbabilities.withUnsafeMutableBufferPointer { probs in
                    for i in 0..<n {
                        keys[i] = UInt64(probs[i].bitPattern) << 32 | UInt64(UInt32.max - UInt32(ids[i]))
                    }
                    // Min-heap; moving the minimum to the back each round leaves descending order.
                    func siftDown(_ start: Int, _ end: Int) {
                        var i = start
                        let value = keys[i]
                        while true {
                            var child = 2 * i + 1
                            if child >= end { break }
                            if child + 1 < end && keys[child + 1] < keys[child] { child += 1 }
                            if keys[child] >= value { break }
                            keys[i] = keys[child]
                            i = child
                        }
                        keys[i] = value
                    }
                    for i in stride(from: n / 2 - 1, through: 0, by: -1) { siftDown(i, n) }
                    for end in stride(from: n - 1, to: 0, by: -1) {
                        keys.swapAt(0, end)
                        siftDown(0, end)
                    }
                    for i in 0..<n {
                        probs[i] = Float(bitPattern: UInt32(truncatingIfNeeded: keys[i] >> 32))
                        ids[i] = Int32(bitPattern: UInt32.max - UInt32(truncatingIfNeeded: keys[i]))
                    }
                }
            }
        }
    }
}

