import Testing
import Kernels

/// Normalised mean squared error allowed between `apply` and an f64 product of the dequantized
/// weights with the unquantized activations. F32/F16 only see f32 rounding; the block formats see
/// the int8 quantization of the activations (about 1/254 relative per value).
enum MatmulTolerance {
    // NMSE over a whole sweep (all shapes and rows of one format and inFeatures). The block formats'
    // error is the int8 activations' (measured 1.2e-5 to 1.7e-5 for every one of them, the K-quants
    // included: their weights enter exactly, see README.md); the bound leaves a margin of ~30x.
    static let f32NMSE = 1e-10
    static let f16NMSE = 1e-10
    static let bf16NMSE = 1e-10
    static let q4_0NMSE = 5e-4
    static let q4_1NMSE = 5e-4
    static let q8_0NMSE = 5e-4
    static let q5_0NMSE = 5e-4
    static let q5_1NMSE = 5e-4
    static let q2_KNMSE = 5e-4
    static let q3_KNMSE = 5e-4
    static let q4_KNMSE = 5e-4
    static let q5_KNMSE = 5e-4
    static let q6_KNMSE = 5e-4
    static let iq4_nlNMSE = 5e-4

    static func nmse(_ format: WeightFormat) -> Double {
        switch format {
        case .f32: return f32NMSE
        case .f16: return f16NMSE
        case .bf16: return bf16NMSE
        case .q4_0: return q4_0NMSE
        case .q4_1: return q4_1NMSE
        case .q8_0: return q8_0NMSE
        case .q5_0: return q5_0NMSE
        case .q5_1: return q5_1NMSE
        case .q2_K: return q2_KNMSE
        case .q3_K: return q3_KNMSE
        case .q4_K: return q4_KNMSE
        case .q5_K: return q5_KNMSE
        case .q6_K: return q6_KNMSE
        case .iq4_nl: return iq4_nlNMSE
        }
    }
}

private let quantSizes = [32, 64, 96, 576, 1536]
private let kQuantSizes = [256, 512, 1536]
private let floatSizes = [1, 3, 31, 33, 127, 129, 576]
private let formatSizes: [(WeightFormat, Int)] =
    [WeightFormat.q4_0, .q4_1, .q8_0, .q5_0, .q5_1, .iq4_nl].flatMap { f in quantSizes.map { (f, $0) } }
    + [WeightFormat.q2_K, .q3_K, .q4_K, .q5_K, .q6_K].flatMap { f in kQuantSizes.map { (f, $0) } }
    + [WeightFormat.f32, .f16, .bf16].flatMap { f in floatSizes.map { (f, $0) } }

@Suite struct MatmulTests {
    static let pool = ThreadPool(threads: 2)

    /// On every kernel set, `apply` equals the scalar reference bit for bit; against the f64 oracle,
    /// every output is within the activation-quantization error bound and the sweep's NMSE within
    /// the format's.
    @Test(arguments: formatSizes)
    func matchesReferences(format: WeightFormat, inFeatures: Int) throws {
        var err = 0.0, sig = 0.0
        for out in [1, 7, 33, 49] {
            let seed = UInt64(inFeatures * 1000 + out)
            var rng = SeededRandom(seed: seed)
            let raw = randomRawWeights(format, out: out, inFeatures: inFeatures, rng: &rng)
            let w = try makeWeights(format, out: out, inFeatures: inFeatures, raw: raw)
            let dense = (0..<out).map { referenceDequantRaw(format, raw, inFeatures: inFeatures, row: $0) }
            for rows in [1, 2, 3, 4, 5, 8, 9, 17] {
                let x = rng.floats(rows * inFeatures, scale: 2)
                let acts = QuantizedActivations(maxRows: rows, maxInFeatures: inFeatures)
                x.withUnsafeBufferPointer { acts.quantize($0.baseAddress!, rows: rows, inFeatures: inFeatures, pool: nil, kernels: .current) }
                for set in runnableSets {
                    let y = applied(w, x, rows: rows, pool: Self.pool, kernels: set)
                    for r in 0..<rows {
                        for o in 0..<out {
                            let got = y[r * out + o]
                            let ref = w.referenceDot(acts, row: r, output: o)
                            #expect(got.bitPattern == ref.bitPattern,
                                    "\(set): \(format) in \(inFeatures) out \(out) rows \(rows) r \(r) o \(o): \(got) vs \(ref), seed \(seed)")
                        }
                    }
                }
                let y = applied(w, x, rows: rows, pool: Self.pool)
                for r in 0..<rows {
                    for o in 0..<out {
                        let got = y[r * out + o]
                        // Rounding x to a multiple of its block's d = amax/127 moves it by at most d/2.
                        var exact = 0.0, bound = 0.0, magnitude = 0.0
                        for b in 0..<((inFeatures + 31) / 32) {
                            let block = b * 32..<min(inFeatures, b * 32 + 32)
                            let amax = block.map { Double(abs(x[r * inFeatures + $0])) }.max()!
                            for i in block {
                                let product = Double(dense[o][i]) * Double(x[r * inFeatures + i])
                                exact += product
                                magnitude += abs(product)
                                if format.blockSize > 1 { bound += abs(Double(dense[o][i])) * amax / 254 }
                            }
                        }
                        #expect(abs(Double(got) - exact) <= bound * 1.001 + 1e-5 * magnitude,
                                "\(format) in \(inFeatures) out \(out) rows \(rows) r \(r) o \(o), seed \(seed)")
                        err += (Double(got) - exact) * (Double(got) - exact)
                        sig += exact * exact
                    }
                }
            }
        }
        let nmse = err / max(sig, 1e-30)
        print("matmul \(format) in \(inFeatures): NMSE \(nmse)")
        #expect(nmse <= MatmulTolerance.nmse(format), "\(format) in \(inFeatures): NMSE \(nmse)")
    }

    /// On every kernel set, one row's result does not depend on the call's row count, the row's
    /// index, the thread count, or the output range requested.
    @Test(arguments: runnableSets, WeightFormat.allCases)
    func batchInvariance(kernels: KernelSet, format: WeightFormat) throws {
        let seed: UInt64 = 4242
        var rng = SeededRandom(seed: seed)
        let out = 49, inFeatures = fitting(576, format)
        let w = try makeWeights(format, out: out, inFeatures: inFeatures,
                                raw: randomRawWeights(format, out: out, inFeatures: inFeatures, rng: &rng))
        let target = rng.floats(inFeatures, scale: 3)
        let one = ThreadPool(threads: 1), three = ThreadPool(threads: 3)
        let alone = bits(applied(w, target, rows: 1, pool: one, kernels: kernels))
        #expect(bits(applied(w, target, rows: 1, pool: Self.pool, kernels: kernels)) == alone, "\(kernels): 2 threads, seed \(seed)")
        #expect(bits(applied(w, target, rows: 1, pool: three, kernels: kernels)) == alone, "\(kernels): 3 threads, seed \(seed)")
        for rows in 1...17 {
            for index in Set([0, rows / 2, rows - 1]) {
                var x = rng.floats(rows * inFeatures, scale: 3)
                x.replaceSubrange(index * inFeatures..<(index + 1) * inFeatures, with: target)
                for pool in [one, Self.pool, three] {
                    let y = applied(w, x, rows: rows, pool: pool, kernels: kernels)
                    #expect(bits(Array(y[index * out..<(index + 1) * out])) == alone,
                            "\(kernels): \(format) rows \(rows) index \(index) threads \(pool.threadCount), seed \(seed)")
                }
            }
        }
        let slice = 5..<40
        let part = applied(w, target, rows: 1, pool: Self.pool, outputs: slice, kernels: kernels)
        #expect(bits(part) == Array(alone[slice]), "\(kernels): \(format) output slice, seed \(seed)")
    }

    /// Every SIMD set gives the scalar set's bits (weights and activations alike).
    @Test(arguments: simdSets, WeightFormat.allCases)
    func simdSetsAreBitIdenticalToScalar(kernels: KernelSet, format: WeightFormat) throws {
        let seed: UInt64 = 77
        var rng = SeededRandom(seed: seed)
        let out = 33, inFeatures = fitting(576, format), rows = 5
        let w = try makeWeights(format, out: out, inFeatures: inFeatures,
                                raw: randomRawWeights(format, out: out, inFeatures: inFeatures, rng: &rng))
        let x = rng.floats(rows * inFeatures)
        let fast = applied(w, x, rows: rows, pool: Self.pool, kernels: kernels)
        let slow = applied(w, x, rows: rows, pool: Self.pool, kernels: try KernelSet.named(.scalar))
        #expect(bits(fast) == bits(slow), "\(kernels) vs scalar: \(format), seed \(seed)")
    }

    @Test func activationQuantizationHandComputed() {
        // Block 0: 0, 1, ..., 31 (amax 31, d = 31/127); block 1: zeros (d = 0, q = 0).
        var x = (0..<32).map { Float($0) } + [Float](repeating: 0, count: 32)
        x[5] = -31
        let acts = QuantizedActivations(maxRows: 2, maxInFeatures: 64)
        acts.quantize(x, rows: 1, inFeatures: 64, pool: nil)
        #expect(acts.blockScale(row: 0, block: 0) == Float(31) / 127)
        #expect(acts.blockScale(row: 0, block: 1) == 0)
        #expect(acts.quantizedValue(row: 0, index: 31) == 127)
        #expect(acts.quantizedValue(row: 0, index: 5) == -127)
        #expect(acts.quantizedValue(row: 0, index: 0) == 0)
        #expect(acts.quantizedValue(row: 0, index: 10) == 41)  // 10 * 127 / 31 = 40.97
        #expect(acts.quantizedValue(row: 0, index: 40) == 0)
    }
}

@Suite struct StackedWeightsTests {
    /// A stacked matrix gives, column block by column block, the same bits as its parts.
    @Test(arguments: [WeightFormat.q4_1, .q8_0, .f16])
    func stackedEqualsParts(format: WeightFormat) throws {
        let seed: UInt64 = 91
        var rng = SeededRandom(seed: seed)
        let inFeatures = 64, outs = [33, 16, 7]
        let raws = outs.map { randomRawWeights(format, out: $0, inFeatures: inFeatures, rng: &rng) }
        let parts = try zip(outs, raws).map { try makeWeights(format, out: $0, inFeatures: inFeatures, raw: $1) }
        let stacked = try raws[0].withUnsafeBytes { r0 in
            try raws[1].withUnsafeBytes { r1 in
                try raws[2].withUnsafeBytes { r2 in
                    try LinearWeights(format: format, inFeatures: inFeatures,
                                      stacking: [(outs[0], r0), (outs[1], r1), (outs[2], r2)])
                }
            }
        }
        #expect(stacked.outFeatures == 56)
        let rows = 3
        let x = rng.floats(rows * inFeatures)
        let pool = ThreadPool(threads: 2)
        let all = applied(stacked, x, rows: rows, pool: pool)
        var column = 0
        for (i, part) in parts.enumerated() {
            let y = applied(part, x, rows: rows, pool: pool)
            for r in 0..<rows {
                #expect(bits(Array(all[(r * 56 + column)..<(r * 56 + column + outs[i])])) == bits(Array(y[(r * outs[i])..<((r + 1) * outs[i])])),
                        "\(format) part \(i) row \(r), seed \(seed)")
            }
            column += outs[i]
        }
    }
}
