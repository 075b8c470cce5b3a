import Foundation
import Model
import Testing

@Suite struct SamplerTests {
    /// Runs `body` on a mutable copy of `logits`.
    static func withLogits<R>(_ logits: [Float], _ body: (UnsafeMutablePointer<Float>, Int) -> R) -> R {
        var copy = logits
        return copy.withUnsafeMutableBufferPointer { body($0.baseAddress!, $0.count) }
    }

    /// The sampler's distribution as a dense array indexed by token ID.
    static func dense(_ parameters: SamplingParameters, _ logits: [Float], history: TokenCounts? = nil) -> [Float] {
        var sampler = Sampler(parameters: parameters, vocabularySize: logits.count)
        let history = history ?? TokenCounts(vocabularySize: logits.count)
        return withLogits(logits) { pointer, count in
            let d = sampler.distribution(logits: pointer, count: count, history: history)
            var out = [Float](repeating: 0, count: count)
            for (id, p) in zip(d.ids, d.probabilities) { out[Int(id)] = p }
            return out
        }
    }

    static func softmax(_ logits: [Float], temperature: Float = 1) -> [Float] {
        let m = logits.max()!
        let e = logits.map { Float(exp(Double(($0 - m) / temperature))) }
        let s = e.reduce(0, +)
        return e.map { $0 / s }
    }

    static func close(_ a: [Float], _ b: [Float], tolerance: Float = 1e-5) -> Bool {
        a.count == b.count && zip(a, b).allSatisfy { abs($0 - $1) <= tolerance }
    }

    // A small distribution with distinct probabilities: softmax gives ≈ [0.032, 0.087, 0.237, 0.644, 0.0002, ...].
    static let logits: [Float] = [1, 2, 3, 4, -3, 0.5, 2.5, -1]

    @Test(arguments: [UInt64(1), 2, 3])
    func greedyIsArgmaxWithLowestIDOnTies(seed: UInt64) {
        var sampler = Sampler(parameters: SamplingParameters(temperature: 0, seed: seed), vocabularySize: 6)
        let history = TokenCounts(vocabularySize: 6)
        #expect(Self.withLogits([0, 5, 1, 5, -2, 4]) { sampler.sample(logits: $0, count: $1, history: history) } == 1)
        #expect(Self.withLogits(Self.logits) { p, _ in sampler.sample(logits: p, count: 6, history: history) } == 3)
    }

    @Test func topKOneEqualsGreedy() {
        var random = SamplerRandom(seed: 7)
        for trial in 0..<50 {
            let logits = (0..<100).map { _ in Float(random.nextUnit() * 10 - 5) }
            var greedy = Sampler(parameters: .greedy, vocabularySize: 100)
            var topOne = Sampler(parameters: SamplingParameters(temperature: 0.8, topK: 1, seed: UInt64(trial)), vocabularySize: 100)
            let history = TokenCounts(vocabularySize: 100)
            let a = Self.withLogits(logits) { greedy.sample(logits: $0, count: $1, history: history) }
            let b = Self.withLogits(logits) { topOne.sample(logits: $0, count: $1, history: history) }
            #expect(a == b, "trial \(trial)")
        }
    }

    @Test func seededRunsRepeat() {
        let parameters = SamplingParameters(temperature: 1.2, topP: 0.95, seed: 42)
        func run() -> [Int32] {
            var sampler = Sampler(parameters: parameters, vocabularySize: Self.logits.count)
            var history = TokenCounts(vocabularySize: Self.logits.count)
            return (0..<200).map { _ in
                let id = Self.withLogits(Self.logits) { sampler.sample(logits: $0, count: $1, history: history) }
                history.add(id)
                return id
            }
        }
        let first = run()
        #expect(first == run())
        #expect(Set(first).count > 2)  // actually random, not stuck on one token
        let other = SamplingParameters(temperature: 1.2, topP: 0.95, seed: 43)
        var sampler = Sampler(parameters: other, vocabularySize: Self.logits.count)
        let history = TokenCounts(vocabularySize: Self.logits.count)
        let second = (0..<200).map { _ in Self.withLogits(Self.logits) { sampler.sample(logits: $0, count: $1, history: history) } }
        #expect(second != first)
    }

    @Test func temperatureOnlyIsSoftmax() {
        #expect(Self.close(Self.dense(SamplingParameters(temperature: 1), Self.logits), Self.softmax(Self.logits)))
        #expect(Self.close(Self.dense(SamplingParameters(temperature: 0.5), Self.logits), Self.softmax(Self.logits, temperature: 0.5)))
    }

    @Test func topKKeepsTheKMostLikely() {
        let d = Self.dense(SamplingParameters(topK: 2), Self.logits)
        let p = Self.softmax(Self.logits)
        let z = p[3] + p[2]
        #expect(Self.close(d, [0, 0, p[2] / z, p[3] / z, 0, 0, 0, 0]))
    }

    @Test func topPKeepsSmallestPrefixReachingMass() {
        let p = Self.softmax(Self.logits)
        // Sorted by probability: 3, 2, 6, 1, … ; top-p 0.8 needs tokens 3, 2 and 6.
        let order = p.indices.sorted { p[$0] > p[$1] }
        var cumulative: Float = 0
        var expectedSupport: [Int] = []
        for i in order {
            expectedSupport.append(i)
            cumulative += p[i]
            if cumulative >= 0.8 { break }
        }
        let d = Self.dense(SamplingParameters(topP: 0.8), Self.logits)
        let z = expectedSupport.reduce(Float(0)) { $0 + p[$1] }
        var expected = [Float](repeating: 0, count: p.count)
        for i in expectedSupport { expected[i] = p[i] / z }
        #expect(expectedSupport == [3, 2, 6])
        #expect(Self.close(d, expected))
        // A mass the top token alone reaches keeps only it.
        #expect(Self.close(Self.dense(SamplingParameters(topP: 0.1), Self.logits), [0, 0, 0, 1, 0, 0, 0, 0]))
    }

    @Test func minPDropsTokensBelowFractionOfTop() {
        let p = Self.softmax(Self.logits)
        let d = Self.dense(SamplingParameters(minP: 0.2), Self.logits)
        let kept = p.indices.filter { p[$0] >= 0.2 * p[3] }
        #expect(kept == [2, 3, 6])
        let z = kept.reduce(Float(0)) { $0 + p[$1] }
        var expected = [Float](repeating: 0, count: p.count)
        for i in kept { expected[i] = p[i] / z }
        #expect(Self.close(d, expected))
    }

    @Test func topPOnFlatLargeVocabularyIsExact() {
        // Many near-equal tokens: the fast path (tokens above 1e-4 of the top) is not enough mass.
        var logits = [Float](repeating: 0, count: 50_000)
        logits[0] = 12
        let d = Self.dense(SamplingParameters(topP: 0.9), logits)
        let support = d.filter { $0 > 0 }.count
        // In Double: token 0 has weight 1, the others exp(-12) each.
        let small = exp(-12.0)
        let total = 1 + small * 49_999
        var cumulative = 1 / total
        var expected = 1
        while cumulative < 0.9 { cumulative += small / total; expected += 1 }
        #expect(support == expected)
        #expect(abs(d.reduce(0, +) - 1) < 1e-3)
    }

    @Test func penaltiesFollowOpenAI() {
        var history = TokenCounts(vocabularySize: 4)
        history.add(1)
        history.add(1)
        history.add(1)
        history.add(2)
        let parameters = SamplingParameters(temperature: 0, presencePenalty: 0.5, frequencyPenalty: 0.25)
        var sampler = Sampler(parameters: parameters, vocabularySize: 4)
        var logits: [Float] = [1, 2, 3, 4]
        let id = logits.withUnsafeMutableBufferPointer { sampler.sample(logits: $0.baseAddress!, count: 4, history: history) }
        // logit[j] -= count * frequency + (count > 0) * presence
        let penalized: [Float] = [1, 2 - 3 * 0.25 - 0.5, 3 - 1 * 0.25 - 0.5, 4]
        #expect(logits == penalized)
        #expect(id == 3)
        #expect(history.seenIDs == [1, 2])
        history.removeAll()
        #expect(history.count(of: 1) == 0 && history.seenIDs.isEmpty)
    }

    @Test(arguments: [UInt64(2024), 99])
    func frequenciesMatchProbabilities(seed: UInt64) {
        let parameters = SamplingParameters(temperature: 0.9, topK: 5, topP: 0.97, seed: seed)
        let expected = Self.dense(parameters, Self.logits)
        var sampler = Sampler(parameters: parameters, vocabularySize: Self.logits.count)
        let history = TokenCounts(vocabularySize: Self.logits.count)
        let draws = 40_000
        var counts = [Int](repeating: 0, count: Self.logits.count)
        for _ in 0..<draws {
            counts[Int(Self.withLogits(Self.logits) { sampler.sample(logits: $0, count: $1, history: history) })] += 1
        }
        var chiSquare = 0.0
        var degrees = -1
        for (i, p) in expected.enumerated() {
            if p == 0 {
                #expect(counts[i] == 0, "token \(i) has probability 0 but was drawn")
                continue
            }
            let e = Double(p) * Double(draws)
            chiSquare += (Double(counts[i]) - e) * (Double(counts[i]) - e) / e
            degrees += 1
        }
        // 99.9th percentile of chi-square with ≤ 4 degrees of freedom is 18.5.
        #expect(degrees >= 2)
        #expect(chiSquare < 18.5, "seed \(seed): chi-square \(chiSquare) over \(degrees) dof; counts \(counts)")
    }

    @Test func randomIsDeterministicAndUniform() {
        var a = SamplerRandom(seed: 5)
        var b = SamplerRandom(seed: 5)
        #expect((0..<10).map { _ in a.next() } == (0..<10).map { _ in b.next() })
        var sum = 0.0
        var inRange = true
        for _ in 0..<100_000 {
            let u = a.nextUnit()
            inRange = inRange && u >= 0 && u < 1
            sum += u
        }
        #expect(inRange)
        #expect(abs(sum / 100_000 - 0.5) < 0.01)
    }

    @Test(arguments: [
        SamplingParameters(temperature: 0),
        SamplingParameters(temperature: 0.7),
        SamplingParameters(temperature: 0.7, topP: 0.9),
        SamplingParameters(temperature: 0.7, topK: 40, topP: 0.95, minP: 0.05),
    ])
    func fullVocabularyIsFast(parameters: SamplingParameters) {
        let vocabulary = 49_152
        var random = SamplerRandom(seed: 11)
        let logits = (0..<vocabulary).map { _ in Float(random.nextUnit() * 20 - 10) }
        var sampler = Sampler(parameters: SamplingParameters(
            temperature: parameters.temperature, topK: parameters.topK, topP: parameters.topP, minP: parameters.minP, seed: 1),
            vocabularySize: vocabulary)
        let history = TokenCounts(vocabularySize: vocabulary)
        var scratch = logits
        let start = ContinuousClock.now
        for _ in 0..<50 {
            _ = scratch.withUnsafeMutableBufferPointer { sampler.sample(logits: $0.baseAddress!, count: vocabulary, history: history) }
        }
        let perToken = (ContinuousClock.now - start) / 50
        print("sample over \(vocabulary) logits, \(parameters): \(perToken) per token")
        // A regression guard (an O(n²) step would take seconds), loose enough for a loaded shared machine.
        #expect(perToken < .milliseconds(20))
    }
}
