import Testing
import Kernels

@Suite struct DequantTests {
    @Test func q4_1HandBuiltBlock() throws {
        // d = 0.5, m = -1; byte i holds value i (low nibble) and value 16 + i = 15 - i (high nibble).
        var raw: [UInt8] = [0x00, 0x38, 0x00, 0xBC]
        for i in 0..<16 { raw.append(UInt8(i) | UInt8(15 - i) << 4) }
        let w = try makeWeights(.q4_1, out: 1, inFeatures: 32, raw: raw)
        var row = [Float](repeating: 0, count: 32)
        row.withUnsafeMutableBufferPointer { w.dequantizeRow(0, into: $0.baseAddress!) }
        for i in 0..<16 {
            #expect(row[i] == Float(i) * 0.5 - 1)
            #expect(row[16 + i] == Float(15 - i) * 0.5 - 1)
        }
        #expect(row[0] == -1 && row[15] == 6.5 && row[16] == 6.5 && row[31] == -1)
    }

    @Test func q4_0HandBuiltBlock() throws {
        // d = 0.25; value = (q - 8) * d; byte i: low nibble 15, high nibble i.
        var raw: [UInt8] = [0x00, 0x34]
        for i in 0..<16 { raw.append(0x0F | UInt8(i) << 4) }
        let w = try makeWeights(.q4_0, out: 1, inFeatures: 32, raw: raw)
        var row = [Float](repeating: 0, count: 32)
        row.withUnsafeMutableBufferPointer { w.dequantizeRow(0, into: $0.baseAddress!) }
        for i in 0..<16 {
            #expect(row[i] == 1.75)
            #expect(row[16 + i] == Float(i - 8) * 0.25)
        }
    }

    /// `LinearWeights(quantizingToQ8_0:)` is ggml's `quantize_row_q8_0_ref`: per 32 values d =
    /// amax / 127 stored as f16, q = round(x / d) (half away from zero); a zero block stays zero.
    @Test(arguments: [1, 3, 17])
    func q8_0QuantizationFollowsGgml(rows: Int) throws {
        let inFeatures = 64
        var state: UInt64 = UInt64(rows) * 7919
        let x: [Float] = (0..<(rows * inFeatures)).map { i in
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return i < 32 ? 0 : (Float(state >> 40) / Float(1 << 24) * 2 - 1) * Float(1 + i % 5)
        }
        let w = try x.withUnsafeBufferPointer { try LinearWeights(quantizingToQ8_0: $0.baseAddress!, outFeatures: rows, inFeatures: inFeatures) }
        #expect(w.format == .q8_0)
        var row = [Float](repeating: 0, count: inFeatures)
        for r in 0..<rows {
            row.withUnsafeMutableBufferPointer { w.dequantizeRow(r, into: $0.baseAddress!) }
            for b in 0..<(inFeatures / 32) {
                let block = Array(x[(r * inFeatures + b * 32)..<(r * inFeatures + b * 32 + 32)])
                let d = (block.map(abs).max() ?? 0) / 127
                let id: Float = d != 0 ? 1 / d : 0
                let expected = block.map { ($0 * id).rounded(.toNearestOrAwayFromZero) * Float(Float16(d)) }
                #expect(Array(row[(b * 32)..<(b * 32 + 32)]) == expected, "row \(r) block \(b)")
            }
        }
        #expect(row.count == inFeatures)
        #expect(throws: KernelError.self) { try x.withUnsafeBufferPointer { try LinearWeights(quantizingToQ8_0: $0.baseAddress!, outFeatures: 1, inFeatures: 48) } }
    }

    @Test func q8_0HandBuiltBlock() throws {
        // d = 2; values -128, -127, ..., and 127 at the end.
        var raw: [UInt8] = [0x00, 0x40]
        let q: [Int8] = (0..<31).map { Int8($0 * 8 - 128) } + [127]
        raw += q.map { UInt8(bitPattern: $0) }
        let w = try makeWeights(.q8_0, out: 1, inFeatures: 32, raw: raw)
        var row = [Float](repeating: 0, count: 32)
        row.withUnsafeMutableBufferPointer { w.dequantizeRow(0, into: $0.baseAddress!) }
        #expect(row == q.map { Float($0) * 2 })
        #expect(row[0] == -256 && row[31] == 254)
    }

    @Test func f16KnownBitPatterns() throws {
        // 1, -2, smallest subnormal 2^-24, largest finite 65504, -0, 0.5 + one ulp.
        let halves: [UInt16] = [0x3C00, 0xC000, 0x0001, 0x7BFF, 0x8000, 0x3801, 0x0400, 0x03FF]
        let expected: [Float] = [1, -2, 0x1p-24, 65504, -0.0, 0.5 + 0x1p-11, 0x1p-14, 0x1.FF8p-15]
        let raw = halves.withUnsafeBytes { Array($0) }
        let w = try makeWeights(.f16, out: 1, inFeatures: 8, raw: raw)
        var row = [Float](repeating: 7, count: 8)
        row.withUnsafeMutableBufferPointer { w.dequantizeRow(0, into: $0.baseAddress!) }
        #expect(bits(row) == bits(expected))
    }

    /// The packed (interleaved, padded) layout dequantizes every row exactly like the raw ggml blocks.
    @Test(arguments: WeightFormat.allCases, [1, 7, 16, 33, 49])
    func packedRowsMatchRawDequant(format: WeightFormat, out: Int) throws {
        let seed: UInt64 = 11 + UInt64(out)
        var rng = SeededRandom(seed: seed)
        let inFeatures = fitting(96, format)
        let raw = randomRawWeights(format, out: out, inFeatures: inFeatures, rng: &rng)
        let w = try makeWeights(format, out: out, inFeatures: inFeatures, raw: raw)
        var row = [Float](repeating: 0, count: inFeatures)
        for r in 0..<out {
            row.withUnsafeMutableBufferPointer { w.dequantizeRow(r, into: $0.baseAddress!) }
            #expect(bits(row) == bits(referenceDequantRaw(format, raw, inFeatures: inFeatures, row: r)),
                    "format \(format) row \(r) seed \(seed)")
        }
    }

    @Test func shapeErrors() throws {
        let bytes = [UInt8](repeating: 0, count: 40)
        #expect(throws: KernelError.inFeaturesNotMultipleOfBlock(format: .q4_1, inFeatures: 48, blockSize: 32)) {
            try makeWeights(.q4_1, out: 1, inFeatures: 48, raw: bytes)
        }
        #expect(throws: KernelError.byteCountMismatch(format: .q4_1, outFeatures: 1, inFeatures: 64, expected: 40, found: 39)) {
            try makeWeights(.q4_1, out: 1, inFeatures: 64, raw: Array(bytes.prefix(39)))
        }
        #expect(throws: KernelError.emptyShape(outFeatures: 0, inFeatures: 32)) {
            try makeWeights(.q8_0, out: 0, inFeatures: 32, raw: [])
        }
        let message = KernelError.byteCountMismatch(format: .q8_0, outFeatures: 2, inFeatures: 32, expected: 68, found: 1).description
        #expect(message.contains("68") && message.contains("Q8_0") && message.contains("check"))
    }
}
