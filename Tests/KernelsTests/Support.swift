import Kernels

/// Seeded SplitMix64; every randomized test prints its seed in failure messages.
struct SeededRandom {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    /// Uniform in [-1, 1).
    mutating func float() -> Float { Float(next() >> 40) / Float(1 << 23) - 1 }
    mutating func byte() -> UInt8 { UInt8(truncatingIfNeeded: next()) }
    mutating func floats(_ n: Int, scale: Float = 1) -> [Float] { (0..<n).map { _ in float() * scale } }
}

func f16Bits(_ x: Float) -> UInt16 { Float16(x).bitPattern }
func f16Value(_ bits: UInt16) -> Float { Float(Float16(bitPattern: bits)) }

/// Random raw ggml bytes for a matrix, with realistic finite scales.
func randomRawWeights(_ format: WeightFormat, out: Int, inFeatures: Int, rng: inout SeededRandom) -> [UInt8] {
    switch format {
    case .f32:
        return rng.floats(out * inFeatures, scale: 0.1).withUnsafeBytes { Array($0) }
    case .f16:
        return rng.floats(out * inFeatures, scale: 0.1).map { f16Bits($0) }.withUnsafeBytes { Array($0) }
    case .q4_0, .q4_1, .q8_0:
        var bytes: [UInt8] = []
        bytes.reserveCapacity(format.rawByteCount(outFeatures: out, inFeatures: inFeatures))
        for _ in 0..<(out * inFeatures / 32) {
            let d = f16Bits(0.001 + abs(rng.float()) * 0.02)
            bytes += [UInt8(d & 0xFF), UInt8(d >> 8)]
            if format == .q4_1 {
                let m = f16Bits(-abs(rng.float()) * 0.15)
                bytes += [UInt8(m & 0xFF), UInt8(m >> 8)]
            }
            for _ in 0..<(format == .q8_0 ? 32 : 16) { bytes.append(rng.byte()) }
        }
        return bytes
    case .bf16:
        return rng.floats(out * inFeatures, scale: 0.1).map { UInt16($0.bitPattern >> 16) }.withUnsafeBytes { Array($0) }
    case .q5_0, .q5_1, .q2_K, .q3_K, .q4_K, .q5_K, .q6_K, .iq4_nl:
        // Random bytes (every value, sub-block scale and minimum occurs) with modest f16 scales.
        var bytes = (0..<format.rawByteCount(outFeatures: out, inFeatures: inFeatures)).map { _ in rng.byte() }
        let (d, dmin) = f16ScaleOffsets(format)
        let superBlock = format.blockSize == 256
        for b in 0..<(out * inFeatures / format.blockSize) {
            let o = b * format.bytesPerBlock
            let dv = f16Bits((superBlock ? 0.0001 : 0.001) + abs(rng.float()) * (superBlock ? 0.002 : 0.02))
            bytes[o + d] = UInt8(dv & 0xFF); bytes[o + d + 1] = UInt8(dv >> 8)
            if let dmin {
                let mv = f16Bits(format == .q5_1 ? -abs(rng.float()) * 0.15 : abs(rng.float()) * 0.002)
                bytes[o + dmin] = UInt8(mv & 0xFF); bytes[o + dmin + 1] = UInt8(mv >> 8)
            }
        }
        return bytes
    }
}

/// Byte offsets of the f16 scale (and minimum scale) in a raw block of the 5-bit and K formats.
func f16ScaleOffsets(_ format: WeightFormat) -> (Int, Int?) {
    switch format {
    case .q5_0, .iq4_nl: return (0, nil)
    case .q5_1, .q4_K, .q5_K: return (0, 2)
    case .q2_K: return (80, 82)
    case .q3_K: return (108, nil)
    case .q6_K: return (208, nil)
    default: return (0, nil)
    }
}

/// inFeatures of at least `n` that `format`'s blocks divide (K-quants: multiples of 256).
func fitting(_ n: Int, _ format: WeightFormat) -> Int { (n + format.blockSize - 1) / format.blockSize * format.blockSize }

/// Independent Swift dequantization of row r straight from the raw ggml bytes (the test oracle).
func referenceDequantRaw(_ format: WeightFormat, _ raw: [UInt8], inFeatures: Int, row r: Int) -> [Float] {
    func u16(_ at: Int) -> UInt16 { UInt16(raw[at]) | UInt16(raw[at + 1]) << 8 }
    var out = [Float](repeating: 0, count: inFeatures)
    switch format {
    case .f32:
        raw.withUnsafeBytes { p in
            for i in 0..<inFeatures { out[i] = p.load(fromByteOffset: (r * inFeatures + i) * 4, as: Float.self) }
        }
    case .f16:
        for i in 0..<inFeatures { out[i] = f16Value(u16((r * inFeatures + i) * 2)) }
    case .q4_0, .q4_1, .q8_0:
        let bpb = format.bytesPerBlock, nb = inFeatures / 32
        for b in 0..<nb {
            let o = (r * nb + b) * bpb
            let d = f16Value(u16(o))
            switch format {
            case .q8_0:
                for i in 0..<32 { out[b * 32 + i] = Float(Int8(bitPattern: raw[o + 2 + i])) * d }
            case .q4_0:
                for i in 0..<16 {
                    out[b * 32 + i] = Float(Int(raw[o + 2 + i] & 0x0F) - 8) * d
                    out[b * 32 + 16 + i] = Float(Int(raw[o + 2 + i] >> 4) - 8) * d
                }
            default:
                let m = f16Value(u16(o + 2))
                for i in 0..<16 {
                    out[b * 32 + i] = Float(raw[o + 4 + i] & 0x0F) * d + m
                    out[b * 32 + 16 + i] = Float(raw[o + 4 + i] >> 4) * d + m
                }
            }
        }
    case .bf16:
        for i in 0..<inFeatures { out[i] = Float(bitPattern: UInt32(u16((r * inFeatures + i) * 2)) << 16) }
    case .q5_0, .q5_1, .q2_K, .q3_K, .q4_K, .q5_K, .q6_K, .iq4_nl:
        let n = format.blockSize, nb = inFeatures / n
        for b in 0..<nb {
            let o = (r * nb + b) * format.bytesPerBlock
            let values = referenceDequantBlock(format, Array(raw[o..<(o + format.bytesPerBlock)]))
            out.replaceSubrange(b * n..<(b + 1) * n, with: values)
        }
    }
    return out
}

/// One raw block of a 5-bit or K format, dequantized as ggml's reference C code writes it
/// (dequantize_row_*), in f32: an oracle written apart from CKernels' decoder.
func referenceDequantBlock(_ format: WeightFormat, _ q: [UInt8]) -> [Float] {
    func f16(_ at: Int) -> Float { f16Value(UInt16(q[at]) | UInt16(q[at + 1]) << 8) }
    var y: [Float] = []
    switch format {
    case .q5_0, .q5_1:
        let d = f16(0), qsAt = format == .q5_0 ? 6 : 8, qhAt = qsAt - 4
        let qh = (0..<4).reduce(UInt32(0)) { $0 | UInt32(q[qhAt + $1]) << (8 * $1) }
        y = [Float](repeating: 0, count: 32)
        for j in 0..<16 {
            let x0 = Int(q[qsAt + j] & 0x0F) | Int((qh >> j) & 1) << 4
            let x1 = Int(q[qsAt + j] >> 4) | Int((qh >> (j + 16)) & 1) << 4
            if format == .q5_0 {
                y[j] = Float(x0 - 16) * d
                y[j + 16] = Float(x1 - 16) * d
            } else {
                let m = f16(2)
                y[j] = Float(x0) * d + m
                y[j + 16] = Float(x1) * d + m
            }
        }
    case .q2_K:
        let d = f16(80), dmin = f16(82)
        var scaleIndex = 0
        for half in 0..<2 {
            for shift in stride(from: 0, to: 8, by: 2) {
                for sub in 0..<2 {
                    let sc = q[scaleIndex]; scaleIndex += 1
                    let dl = d * Float(sc & 0xF), ml = dmin * Float(sc >> 4)
                    for l in 0..<16 { y.append(dl * Float((q[16 + half * 32 + sub * 16 + l] >> shift) & 3) - ml) }
                }
            }
        }
    case .q3_K:
        let d = f16(108)
        // The 16 six-bit scales: low nibbles from bytes 0-7, high pairs from bytes 8-11.
        var scales = [Int](repeating: 0, count: 16)
        for j in 0..<16 {
            let low = j < 8 ? Int(q[96 + j] & 0xF) : Int(q[96 + j - 8] >> 4)
            let high = Int(q[96 + 8 + j % 4] >> (2 * (j / 4))) & 3
            scales[j] = (low | high << 4) - 32
        }
        var mask: UInt8 = 1, scaleAt = 0
        for half in 0..<2 {
            for shift in stride(from: 0, to: 8, by: 2) {
                for sub in 0..<2 {
                    let dl = d * Float(scales[scaleAt]); scaleAt += 1
                    for l in 0..<16 {
                        let k = sub * 16 + l
                        let v = Int((q[32 + half * 32 + k] >> shift) & 3) - (q[k] & mask != 0 ? 0 : 4)
                        y.append(dl * Float(v))
                    }
                }
                mask <<= 1
            }
        }
    case .q4_K, .q5_K:
        let d = f16(0), dmin = f16(2)
        func scaleMin(_ j: Int) -> (Int, Int) {
            if j < 4 { return (Int(q[4 + j] & 63), Int(q[8 + j] & 63)) }
            return (Int(q[4 + j + 4] & 0xF) | Int(q[4 + j - 4] >> 6) << 4, Int(q[4 + j + 4] >> 4) | Int(q[4 + j] >> 6) << 4)
        }
        let qsAt = format == .q4_K ? 16 : 48
        for chunk in 0..<4 {
            for part in 0..<2 {
                let (sc, m) = scaleMin(2 * chunk + part)
                let dl = d * Float(sc), ml = dmin * Float(m)
                for l in 0..<32 {
                    var v = Int(q[qsAt + chunk * 32 + l] >> (4 * part)) & 0xF
                    if format == .q5_K { v |= Int((q[16 + l] >> (2 * chunk + part)) & 1) << 4 }
                    y.append(dl * Float(v) - ml)
                }
            }
        }
    case .q6_K:
        let d = f16(208)
        y = [Float](repeating: 0, count: 256)
        for half in 0..<2 {
            for l in 0..<32 {
                let ql0 = q[half * 64 + l], ql1 = q[half * 64 + l + 32], qh = q[128 + half * 32 + l]
                let v = [Int(ql0 & 0xF) | Int(qh & 3) << 4, Int(ql1 & 0xF) | Int((qh >> 2) & 3) << 4,
                         Int(ql0 >> 4) | Int((qh >> 4) & 3) << 4, Int(ql1 >> 4) | Int((qh >> 6) & 3) << 4]
                for k in 0..<4 {
                    let i = half * 128 + k * 32 + l
                    let sc = Float(Int8(bitPattern: q[192 + i / 16]))
                    y[i] = d * sc * Float(v[k] - 32)
                }
            }
        }
    case .iq4_nl:
        let table: [Float] = [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113]
        let d = f16(0)
        y = [Float](repeating: 0, count: 32)
        for j in 0..<16 {
            y[j] = d * table[Int(q[2 + j] & 0xF)]
            y[j + 16] = d * table[Int(q[2 + j] >> 4)]
        }
    default:
        preconditionFailure("referenceDequantBlock: \(format) has no block oracle")
    }
    return y
}

func makeWeights(_ format: WeightFormat, out: Int, inFeatures: Int, raw: [UInt8]) throws -> LinearWeights {
    try raw.withUnsafeBytes { try LinearWeights(format: format, outFeatures: out, inFeatures: inFeatures, bytes: $0) }
}

/// y [rows x out] through `apply`, on `kernels`.
func applied(_ w: LinearWeights, _ x: [Float], rows: Int, pool: ThreadPool, outputs: Range<Int>? = nil,
             kernels: KernelSet = .current) -> [Float] {
    let acts = QuantizedActivations(maxRows: max(rows, 1), maxInFeatures: w.inFeatures)
    x.withUnsafeBufferPointer { acts.quantize($0.baseAddress!, rows: rows, inFeatures: w.inFeatures, pool: pool, kernels: kernels) }
    let range = outputs ?? 0..<w.outFeatures
    var y = [Float](repeating: .nan, count: rows * range.count)
    y.withUnsafeMutableBufferPointer {
        w.apply(acts, outputs: range, into: $0.baseAddress!, ldy: range.count, pool: pool, kernels: kernels)
    }
    return y
}

/// Every kernel set this CPU runs (the scalar reference first); tests run each of them.
let runnableSets = KernelSet.runnable
/// The SIMD sets this CPU runs.
let simdSets = runnableSets.filter { $0.name != .scalar }

func bits(_ v: [Float]) -> [UInt32] { v.map(\.bitPattern) }
