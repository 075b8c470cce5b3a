import CKernels

/// Timing harness for the matmul cost curve, for cast-bench (tests never time anything).
/// Builds random weights with a llama model's matrix shapes (defaults: SmolLM2-135M) and times one
/// "step": per layer, quantize the input and apply Q, K, V, O, gate, up, down, then the tied Q8_0
/// output matrix. With `stacked`, Q/K/V and gate/up are one stacked matrix each (as
/// `LinearWeights(format:inFeatures:stacking:)` builds), so a layer is 4 pool runs instead of 7.
/// Attention, norms and RoPE are not included.
public enum KernelBench {
    /// Matrix shapes of one model.
    public struct Shape: Sendable {
        public var layers = 30, hidden = 576, kvDim = 192, ffn = 1536, vocab = 49152
        public var layerFormat: WeightFormat = .q4_1, outputFormat: WeightFormat = .q8_0
        public init() {}
    }

    /// Median and minimum milliseconds of one step for each row count in `rows` (`iterations` timed
    /// steps after one warm-up each). The minimum is the better figure on a shared, noisy machine.
    public static func stepMilliseconds(shape: Shape = Shape(), rows: [Int], pool: ThreadPool, iterations: Int = 20,
                                        stacked: Bool = true) -> [(rows: Int, milliseconds: Double, minimum: Double)] {
        let maxRows = rows.max() ?? 1
        var seed: UInt64 = 0x9E37_79B9_7F4A_7C15
        func matrix(_ format: WeightFormat, _ o: Int, _ i: Int) -> LinearWeights {
            var bytes = [UInt8](repeating: 0, count: format.rawByteCount(outFeatures: o, inFeatures: i))
            for j in 0..<bytes.count {
                seed = seed &* 6364136223846793005 &+ 1442695040888963407
                bytes[j] = UInt8(truncatingIfNeeded: seed >> 33)
            }
            // Keep every f16 scale finite and small: d (and m) bytes set to ~0.01.
            if format.blockSize == 32 {
                let headers = format == .q4_1 ? 2 : 1
                for b in 0..<(bytes.count / format.bytesPerBlock) {
                    for h in 0..<headers {
                        bytes[b * format.bytesPerBlock + 2 * h] &= 0x3F
                        bytes[b * format.bytesPerBlock + 2 * h + 1] = (h == 1 ? 0xA0 : 0x20) | (bytes[b * format.bytesPerBlock + 2 * h + 1] & 0x03)
                    }
                }
            }
            return bytes.withUnsafeBytes { try! LinearWeights(format: format, outFeatures: o, inFeatures: i, bytes: $0) }
        }
        let s = shape
        func layer() -> [LinearWeights] {
            if stacked {
                return [matrix(s.layerFormat, s.hidden + 2 * s.kvDim, s.hidden), matrix(s.layerFormat, s.hidden, s.hidden),
                        matrix(s.layerFormat, 2 * s.ffn, s.hidden), matrix(s.layerFormat, s.hidden, s.ffn)]
            }
            return [matrix(s.layerFormat, s.hidden, s.hidden), matrix(s.layerFormat, s.kvDim, s.hidden),
                    matrix(s.layerFormat, s.kvDim, s.hidden), matrix(s.layerFormat, s.hidden, s.hidden),
                    matrix(s.layerFormat, s.ffn, s.hidden), matrix(s.layerFormat, s.ffn, s.hidden),
                    matrix(s.layerFormat, s.hidden, s.ffn)]
        }
        // Distinct weights per layer, as in a real model (so the caches see the full stream).
        let layers = (0..<s.layers).map { _ in layer() }
        let output = matrix(s.outputFormat, s.vocab, s.hidden)
        let xa = QuantizedActivations(maxRows: maxRows, maxInFeatures: max(s.hidden, s.ffn))
        let input = UnsafeMutablePointer<Float>.allocate(capacity: maxRows * max(s.hidden, s.ffn))
        let y = UnsafeMutablePointer<Float>.allocate(capacity: maxRows * max(s.vocab, s.ffn * 2))
        defer { input.deallocate(); y.deallocate() }
        for j in 0..<(maxRows * max(s.hidden, s.ffn)) { input[j] = Float((j * 7919) % 2001) / 1000 - 1 }

        func step(_ r: Int) {
            for w in layers {
                // The same input buffer stands in for each layer's activations.
                xa.quantize(input, rows: r, inFeatures: s.hidden, pool: pool)
                var next = 0
                if stacked {
                    w[0].apply(xa, into: y, ldy: s.hidden + 2 * s.kvDim, pool: pool)
                    next = 1
                } else {
                    w[0].apply(xa, into: y, ldy: s.hidden, pool: pool)
                    w[1].apply(xa, into: y, ldy: s.kvDim, pool: pool)
                    w[2].apply(xa, into: y, ldy: s.kvDim, pool: pool)
                    next = 3
                }
                xa.quantize(input, rows: r, inFeatures: s.hidden, pool: pool)
                w[next].apply(xa, into: y, ldy: s.hidden, pool: pool)
                xa.quantize(input, rows: r, inFeatures: s.hidden, pool: pool)
                if stacked {
                    w[2].apply(xa, into: y, ldy: 2 * s.ffn, pool: pool)
                } else {
                    w[4].apply(xa, into: y, ldy: s.ffn, pool: pool)
                    w[5].apply(xa, into: y, ldy: s.ffn, pool: pool)
                }
                xa.quantize(input, rows: r, inFeatures: s.ffn, pool: pool)
                w[w.count - 1].apply(xa, into: y, ldy: s.hidden, pool: pool)
            }
            xa.quantize(input, rows: r, inFeatures: s.hidden, pool: pool)
            output.apply(xa, into: y, ldy: s.vocab, pool: pool)
        }

        var results: [(rows: Int, milliseconds: Double, minimum: Double)] = []
        let clock = ContinuousClock()
        for r in rows {
            step(r)
            var times: [Double] = []
            for _ in 0..<max(1, iterations) {
                let d = clock.measure { step(r) }
                times.append(Double(d.components.seconds) * 1e3 + Double(d.components.attoseconds) * 1e-15)
            }
            times.sort()
            results.append((r, times[times.count / 2], times[0]))
        }
        return results
    }
}
