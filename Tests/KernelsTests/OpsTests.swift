import Testing
import Kernels
import Foundation

/// Tolerances of every kernel set's ops against their Swift (f64) twins.
enum OpsTolerance {
    /// rmsNorm: f32 lane sums vs an f64 sum, relative per element.
    static let rmsNormRelative: Float = 1e-5
    /// softmax: polynomial exp (~2 ulp) and f32 sum, absolute on probabilities.
    static let softmaxAbsolute: Float = 2e-6
    /// siluMul: polynomial exp, relative per element (plus a tiny absolute floor).
    static let siluRelative: Float = 1e-5
    /// geluTanhMul: siluRelative, plus this absolute floor (the reference's cancellation).
    static let geluAbsolute: Float = 1e-7
    /// rope against the direct angle formula (ggml's repeated-product angles drift a few ulp).
    static let ropeAbsolute: Float = 1e-4
}

private let lengths = [1, 3, 15, 16, 17, 31, 33, 127, 129, 1000]

/// Every op on every kernel set this CPU runs (the scalar set included), against the Swift twins.
@Suite struct OpsTests {
    @Test(arguments: runnableSets, lengths)
    func dotIsBitIdenticalToReferenceAndAlignmentFree(kernels: KernelSet, count: Int) {
        let seed = UInt64(count)
        var rng = SeededRandom(seed: seed)
        let a = rng.floats(count), b = rng.floats(count)
        let fast = Ops.dot(a, b, count: count, kernels: kernels)
        #expect(fast.bitPattern == Ops.dotReference(a, b, count: count).bitPattern, "\(kernels), seed \(seed)")
        var exact = 0.0
        for i in 0..<count { exact += Double(a[i]) * Double(b[i]) }
        #expect(abs(Double(fast) - exact) <= 1e-5 * max(1, abs(exact)))
        // Same values at every misalignment give the same bits.
        let bufA = UnsafeMutablePointer<Float>.allocate(capacity: count + 16)
        let bufB = UnsafeMutablePointer<Float>.allocate(capacity: count + 16)
        defer { bufA.deallocate(); bufB.deallocate() }
        for shift in 0..<16 {
            (bufA + shift).update(from: a, count: count)
            (bufB + (15 - shift)).update(from: b, count: count)
            #expect(Ops.dot(bufA + shift, bufB + (15 - shift), count: count, kernels: kernels).bitPattern == fast.bitPattern,
                    "\(kernels): shift \(shift)")
        }
    }

    @Test(arguments: runnableSets, lengths)
    func axpyMatchesReference(kernels: KernelSet, count: Int) {
        var rng = SeededRandom(seed: 100 + UInt64(count))
        let x = rng.floats(count)
        var y1 = rng.floats(count)
        var y2 = y1
        Ops.axpy(0.37, x, &y1, count: count, kernels: kernels)
        Ops.axpyReference(0.37, x, &y2, count: count)
        #expect(bits(y1) == bits(y2))
    }

    @Test(arguments: runnableSets, lengths)
    func rmsNormMatchesReference(kernels: KernelSet, count: Int) {
        var rng = SeededRandom(seed: 200 + UInt64(count))
        let x = rng.floats(count, scale: 4), w = rng.floats(count)
        var y1 = [Float](repeating: 0, count: count), y2 = y1
        Ops.rmsNorm(x, weight: w, count: count, epsilon: 1e-5, into: &y1, kernels: kernels)
        Ops.rmsNormReference(x, weight: w, count: count, epsilon: 1e-5, into: &y2)
        for i in 0..<count {
            #expect(abs(y1[i] - y2[i]) <= OpsTolerance.rmsNormRelative * max(abs(y2[i]), 1e-3), "\(kernels): i \(i)")
        }
        // In place (y aliases x) gives the same result.
        var inPlace = x
        inPlace.withUnsafeMutableBufferPointer { p in
            Ops.rmsNorm(p.baseAddress!, weight: w, count: count, epsilon: 1e-5, into: p.baseAddress!, kernels: kernels)
        }
        #expect(bits(inPlace) == bits(y1))
    }

    /// Top-k and log-sum-exp against a sort and a float64 sum; ties take the lower id first.
    @Test(arguments: runnableSets, [1, 7, 16, 33, 1000, 49152])
    func topKMatchesASort(kernels: KernelSet, count: Int) {
        var rng = SeededRandom(seed: 900 + UInt64(count))
        var x = rng.floats(count, scale: 8)
        if count > 40 { x[37] = x[5] }  // a tie
        let k = min(8, count)
        var ids = [Int32](repeating: -1, count: k)
        var values = [Float](repeating: 0, count: k)
        let lse = Ops.topK(x, count: count, k: k, ids: &ids, values: &values, kernels: kernels)
        let expected = x.indices.sorted { x[$0] != x[$1] ? x[$0] > x[$1] : $0 < $1 }.prefix(k)
        #expect(ids.map(Int.init) == Array(expected), "\(kernels)")
        #expect(values == expected.map { x[$0] })
        let m = Double(x.max()!)
        let reference = m + log(x.reduce(0.0) { $0 + exp(Double($1) - m) })
        #expect(abs(Double(lse) - reference) < 1e-4 * max(1, abs(reference)), "\(kernels)")
    }

    /// argmax is topK's first id (ties: the lower index), and logSumExp topK's sum, with banned
    /// (-infinity) entries and a tie at the maximum.
    @Test(arguments: runnableSets, [1, 7, 33, 1000, 49152])
    func argmaxAndLogSumExpAgreeWithTopK(kernels: KernelSet, count: Int) {
        var rng = SeededRandom(seed: 950 + UInt64(count))
        var x = rng.floats(count, scale: 8)
        if count > 3 { x[2] = -.infinity }
        if count > 40, let m = x.indices.max(by: { x[$0] < x[$1] }) { x[m + 1 < count ? m + 1 : m - 1] = x[m] }  // a tie at the top
        var id: Int32 = -1
        var value: Float = 0
        let lse = Ops.topK(x, count: count, k: 1, ids: &id, values: &value, kernels: kernels)
        let first = x.indices.first { x[$0] == x.max()! }!
        #expect(Ops.argmax(x, count: count) == Int32(first), "\(kernels)")
        #expect(id == Int32(first))
        #expect(Ops.logSumExp(x, count: count, kernels: kernels) == lse)
    }

    @Test(arguments: runnableSets, lengths)
    func softmaxMatchesReference(kernels: KernelSet, count: Int) {
        var rng = SeededRandom(seed: 300 + UInt64(count))
        var x1 = rng.floats(count, scale: 20)
        if count > 2 { x1[1] = -1e30 }  // a masked-out logit
        if count > 3 { x1[3] = -.infinity }  // a banned token
        var x2 = x1
        Ops.softmax(&x1, count: count, kernels: kernels)
        Ops.softmaxReference(&x2, count: count)
        var sum: Float = 0
        for i in 0..<count {
            #expect(abs(x1[i] - x2[i]) <= OpsTolerance.softmaxAbsolute, "\(kernels): i \(i): \(x1[i]) vs \(x2[i])")
            sum += x1[i]
        }
        #expect(abs(sum - 1) < 1e-4)
        if count > 3 { #expect(x1[3] == 0 && x1[1] == 0, "\(kernels): banned tokens keep probability 0") }
    }

    @Test(arguments: runnableSets, lengths)
    func siluMulMatchesReference(kernels: KernelSet, count: Int) {
        var rng = SeededRandom(seed: 400 + UInt64(count))
        var g1 = rng.floats(count, scale: 12)
        if count > 2 { g1[0] = -200; g1[2] = 200 }  // saturating tails
        let u = rng.floats(count, scale: 2)
        var g2 = g1
        Ops.siluMul(&g1, u, count: count, kernels: kernels)
        Ops.siluMulReference(&g2, u, count: count)
        for i in 0..<count {
            #expect(abs(g1[i] - g2[i]) <= OpsTolerance.siluRelative * abs(g2[i]) + 1e-30, "\(kernels): i \(i): \(g1[i]) vs \(g2[i])")
        }
    }

    @Test(arguments: runnableSets, lengths)
    func geluTanhMulMatchesReference(kernels: KernelSet, count: Int) {
        var rng = SeededRandom(seed: 450 + UInt64(count))
        var g1 = rng.floats(count, scale: 8)
        if count > 3 { g1[0] = -200; g1[2] = 200; g1[3] = 0 }  // saturating tails, and zero
        let u = rng.floats(count, scale: 2)
        var g2 = g1
        Ops.geluTanhMul(&g1, u, count: count, kernels: kernels)
        Ops.geluTanhMulReference(&g2, u, count: count)
        for i in 0..<count {
            // The Double reference's 1 + tanh(y) cancels for y << 0; the absolute floor covers that.
            #expect(abs(g1[i] - g2[i]) <= OpsTolerance.siluRelative * abs(g2[i]) + OpsTolerance.geluAbsolute,
                    "\(kernels): i \(i): \(g1[i]) vs \(g2[i])")
        }
        if count > 3 { #expect(g1[2] == 200 * u[2] && abs(g1[0]) < 1e-30 && g1[3] == 0, "\(kernels): tails and zero") }
    }

    /// Linear scaling and Llama 3's factors divide the angles as ggml does: halving t_i (scale 1/2, or
    /// factors of 2) is exact in f32, so position 2p so scaled gives position p's angles bit for bit;
    /// other scales and factors match the formula in f64 (within the drift of the repeated product).
    @Test(arguments: [0, 1, 7, 100, 4095])
    func ropeAnglesApplyScaleAndFactors(position: Int) {
        let headDim = 64, half = headDim / 2, theta: Float = 500000
        var cs = [Float](repeating: 0, count: half), sn = cs, cs2 = cs, sn2 = cs
        Ops.ropeAngles(position: position, theta: theta, headDim: headDim, cos: &cs, sin: &sn)
        Ops.ropeAngles(position: 2 * position, theta: theta, headDim: headDim, frequencyScale: 0.5, cos: &cs2, sin: &sn2)
        #expect(bits(cs2) == bits(cs) && bits(sn2) == bits(sn), "scale 1/2 at 2p is not position p")
        let twos = [Float](repeating: 2, count: half)
        Ops.ropeAngles(position: 2 * position, theta: theta, headDim: headDim, factors: twos, cos: &cs2, sin: &sn2)
        #expect(bits(cs2) == bits(cs) && bits(sn2) == bits(sn), "factors 2 at 2p is not position p")
        let factors = (0..<half).map { Float(1 + $0 % 8) }, scale: Float = 0.25
        Ops.ropeAngles(position: position, theta: theta, headDim: headDim, frequencyScale: scale, factors: factors,
                       cos: &cs2, sin: &sn2)
        for i in 0..<half {
            let angle = Double(scale) * Double(position) * pow(Double(theta), -2 * Double(i) / Double(headDim)) / Double(factors[i])
            let drift = Double(i + 2) * 1.2e-7 * angle + 1e-6
            #expect(abs(Double(cs2[i]) - cos(angle)) <= drift && abs(Double(sn2[i]) - sin(angle)) <= drift, "i \(i)")
        }
    }

    @Test(arguments: runnableSets, [0, 1, 7, 100, 1000])
    func ropeRotatesPairs(kernels: KernelSet, position: Int) throws {
        for neox in [false, true] {
            var rng = SeededRandom(seed: 500 + UInt64(position))
            let heads = 3, headDim = 64
            var x1 = rng.floats(heads * headDim, scale: 2)
            var x2 = x1, x3 = x1
            let before = x1
            Ops.rope(&x1, heads: heads, headDim: headDim, position: position, theta: 100000, neox: neox, kernels: kernels)
            Ops.ropeReference(&x2, heads: heads, headDim: headDim, position: position, theta: 100000, neox: neox)
            Ops.rope(&x3, heads: heads, headDim: headDim, position: position, theta: 100000, neox: neox,
                     kernels: try KernelSet.named(.scalar))
            #expect(bits(x1) == bits(x3), "\(kernels) neox \(neox): not the scalar set's bits")
            for i in 0..<x1.count {
                #expect(abs(x1[i] - x2[i]) <= OpsTolerance.ropeAbsolute * Float(max(1, position / 100)), "\(kernels) neox \(neox): i \(i)")
            }
            // Pair 0 of head 0 turns by exactly `position` radians.
            let c = Float(cos(Double(position))), s = Float(sin(Double(position)))
            let partner = neox ? headDim / 2 : 1
            #expect(abs(x1[0] - (before[0] * c - before[partner] * s)) < 1e-5)
            #expect(abs(x1[partner] - (before[0] * s + before[partner] * c)) < 1e-5)
            if position == 0 { #expect(bits(x1) == bits(before)) }
        }
    }

    /// f16 -> f32 is exact for all 65,536 halves and f32 -> f16 rounds to nearest even as Swift's
    /// Float16 does (subnormals, overflow to infinity, ties), on every set.
    @Test(arguments: runnableSets)
    func halfConversionsMatchFloat16(kernels: KernelSet) {
        let halves = (0...UInt16.max).map { $0 }
        var floats = [Float](repeating: 0, count: halves.count)
        Ops.halfToFloat(halves, &floats, count: halves.count, kernels: kernels)
        var wrong = 0
        for (h, f) in zip(halves, floats) {
            let expected = Float(Float16(bitPattern: h))
            if !(expected.isNaN && f.isNaN) && expected.bitPattern != f.bitPattern { wrong += 1 }
        }
        #expect(wrong == 0, "\(kernels): \(wrong) halves widen wrongly")
        var rng = SeededRandom(seed: 600)
        var x: [Float] = [0, -0.0, 65504, 65519.99, 65520, 1e9, -1e9, 5.96e-8, 2.98e-8, 2.99e-8, 6.1e-5, 1e-10,
                          .infinity, -.infinity, 1.00048828125, 1.00146484375, -1.00048828125]
        for i in 0..<5000 { x.append(rng.float() * Float(pow(2.0, Double(i % 50 - 30)))) }
        // Every tie between neighbouring halves in [1, 2).
        for m in stride(from: 0, to: 1024, by: 7) { x.append(1 + (Float(m) + 0.5) / 1024) }
        var out = [UInt16](repeating: 0, count: x.count)
        Ops.floatToHalf(x, &out, count: x.count, kernels: kernels)
        for (v, h) in zip(x, out) { #expect(h == Float16(v).bitPattern, "\(kernels): \(v) -> \(h), Float16 gives \(Float16(v).bitPattern)") }
    }
}

@Suite struct BLASTests {
    @Test(arguments: [(1, 1, 1), (3, 5, 7), (17, 33, 31), (64, 129, 65)])
    func sgemmMatchesNaive(shape: (Int, Int, Int)) {
        let (m, n, k) = shape
        var rng = SeededRandom(seed: UInt64(m * n * k))
        let a = rng.floats(m * k), b = rng.floats(k * n)
        // Bᵀ stored [n x k] for the transposed case.
        var bt = [Float](repeating: 0, count: n * k)
        for i in 0..<k { for j in 0..<n { bt[j * k + i] = b[i * n + j] } }
        var c = [Float](repeating: 0, count: m * n), ct = c
        BLAS.sgemm(m: m, n: n, k: k, a: a, lda: k, b: b, ldb: n, c: &c, ldc: n)
        BLAS.sgemm(m: m, n: n, k: k, a: a, lda: k, b: bt, ldb: k, transposeB: true, c: &ct, ldc: n)
        for i in 0..<m {
            for j in 0..<n {
                var s = 0.0
                for p in 0..<k { s += Double(a[i * k + p]) * Double(b[p * n + j]) }
                #expect(abs(Double(c[i * n + j]) - s) <= 1e-5 * Double(k), "C[\(i),\(j)]")
                #expect(abs(Double(ct[i * n + j]) - s) <= 1e-5 * Double(k), "Cᵀ[\(i),\(j)]")
            }
        }
    }
}
