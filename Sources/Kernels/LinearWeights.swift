import CKernels

/// A weight matrix W [outFeatures x inFeatures] (ggml row-major: output row o is inFeatures values),
/// repacked at init into the kernels' layout (quantized formats: 16 output rows interleaved per
/// 32-value block, see CKernels/kernels_scalar.c and internal.h; bf16 is widened to f32). Immutable after init; `apply` may run concurrently from
/// several threads as long as each call writes its own `y`.
///
/// Numerics: for every activation row and output, the result is computed by one fixed sequence of
/// operations (block by block, in order), so it is bit-identical whatever the number of rows in the
/// call, the row's position, and the thread count or split.
public final class LinearWeights: @unchecked Sendable {
    public let format: WeightFormat
    public let outFeatures: Int
    public let inFeatures: Int
    /// Bytes held in the packed layout.
    public let packedByteCount: Int
    let packed: UnsafeMutableRawPointer

    /// Copies and repacks `bytes` (the raw ggml tensor data); keeps no reference to `bytes`.
    /// Throws `KernelError` when the shape is empty, a quantized row is not whole blocks, or the byte
    /// count does not match the format and shape.
    public init(format: WeightFormat, outFeatures: Int, inFeatures: Int, bytes: UnsafeRawBufferPointer) throws {
        guard outFeatures >= 1, inFeatures >= 1 else {
            throw KernelError.emptyShape(outFeatures: outFeatures, inFeatures: inFeatures)
        }
        guard inFeatures % format.blockSize == 0 else {
            throw KernelError.inFeaturesNotMultipleOfBlock(format: format, inFeatures: inFeatures, blockSize: format.blockSize)
        }
        let expected = format.rawByteCount(outFeatures: outFeatures, inFeatures: inFeatures)
        guard bytes.count == expected, let base = bytes.baseAddress else {
            throw KernelError.byteCountMismatch(format: format, outFeatures: outFeatures, inFeatures: inFeatures,
                                                expected: expected, found: bytes.count)
        }
        self.format = format
        self.outFeatures = outFeatures
        self.inFeatures = inFeatures
        packedByteCount = ck_packed_size(format.ck, Int64(outFeatures), Int64(inFeatures))
        packed = UnsafeMutableRawPointer.allocate(byteCount: max(packedByteCount, 64), alignment: 64)
        ck_pack(format.ck, base, Int64(outFeatures), Int64(inFeatures), packed)
    }

    /// One matrix made of several stacked on top of each other (same format and inFeatures), e.g.
    /// Q, K and V, or gate and up: one `apply` then computes all of them in a single pool run (fewer
    /// synchronisation points per layer). Output row r holds [part 0 | part 1 | ...] in the order
    /// given, so part i's outputs start at column sum(outFeatures of parts before i). Results are
    /// bit-identical to applying the parts separately.
    public convenience init(format: WeightFormat, inFeatures: Int,
                            stacking parts: [(outFeatures: Int, bytes: UnsafeRawBufferPointer)]) throws {
        var total = 0, byteCount = 0
        for part in parts { total += max(0, part.outFeatures); byteCount += part.bytes.count }
        let joined = UnsafeMutableRawBufferPointer.allocate(byteCount: max(byteCount, 1), alignment: 64)
        defer { joined.deallocate() }
        var offset = 0
        for part in parts {
            let expected = format.rawByteCount(outFeatures: part.outFeatures, inFeatures: inFeatures)
            guard part.outFeatures >= 1, inFeatures >= 1 else {
                throw KernelError.emptyShape(outFeatures: part.outFeatures, inFeatures: inFeatures)
            }
            guard inFeatures % format.blockSize == 0 else {
                throw KernelError.inFeaturesNotMultipleOfBlock(format: format, inFeatures: inFeatures, blockSize: format.blockSize)
            }
            guard part.bytes.count == expected else {
                throw KernelError.byteCountMismatch(format: format, outFeatures: part.outFeatures, inFeatures: inFeatures,
                                                    expected: expected, found: part.bytes.count)
            }
            UnsafeMutableRawBufferPointer(rebasing: joined[offset..<(offset + expected)]).copyMemory(from: part.bytes)
            offset += expected
        }
        try self.init(format: format, outFeatures: total, inFeatures: inFeatures,
                      bytes: UnsafeRawBufferPointer(rebasing: joined[0..<byteCount]))
    }

    /// Quantizes `outFeatures` rows of `inFeatures` f32 values (row-major) to Q8_0 and packs them:
    /// for weights the loader computes in f32 (a drafter's matrices, a gathered head) and wants on the
    /// int8 kernels. Each 32-value block is quantized as ggml's `quantize_row_q8_0_ref` does: d =
    /// amax / 127 (stored as f16), q = round(x * (1 / d)) half away from zero, all 0 when amax = 0.
    /// Throws `KernelError` for an empty shape or rows that are not whole 32-value blocks.
    public convenience init(quantizingToQ8_0 values: UnsafePointer<Float>, outFeatures: Int, inFeatures: Int) throws {
        let format = WeightFormat.q8_0
        guard outFeatures >= 1, inFeatures >= 1 else {
            throw KernelError.emptyShape(outFeatures: outFeatures, inFeatures: inFeatures)
        }
        guard inFeatures % format.blockSize == 0 else {
            throw KernelError.inFeaturesNotMultipleOfBlock(format: format, inFeatures: inFeatures, blockSize: format.blockSize)
        }
        let blocks = outFeatures * inFeatures / 32
        let raw = UnsafeMutableRawBufferPointer.allocate(byteCount: blocks * format.bytesPerBlock, alignment: 16)
        defer { raw.deallocate() }
        for b in 0..<blocks {
            let x = values + b * 32
            var amax: Float = 0
            for j in 0..<32 { amax = max(amax, abs(x[j])) }
            let d = amax / 127
            let id: Float = d != 0 ? 1 / d : 0
            let block = raw.baseAddress! + b * format.bytesPerBlock
            block.storeBytes(of: ck_f32_to_f16(d), as: UInt16.self)
            for j in 0..<32 { block.storeBytes(of: Int8((x[j] * id).rounded(.toNearestOrAwayFromZero)), toByteOffset: 2 + j, as: Int8.self) }
        }
        try self.init(format: format, outFeatures: outFeatures, inFeatures: inFeatures, bytes: UnsafeRawBufferPointer(raw))
    }

    deinit { packed.deallocate() }

    /// Dequantizes output row `r` into `dst[0..<inFeatures]`, exactly as the scalar ggml dequantization
    /// (q4_0: (q - 8) * d, q4_1: q * d + m, q8_0: q * d, f16 and bf16: exact widening; the K-quants,
    /// q5_0 and q5_1 bit for bit as gguf's `dequantize`, see README.md). Also the token-embedding lookup.
    public func dequantizeRow(_ r: Int, into dst: UnsafeMutablePointer<Float>) {
        precondition(r >= 0 && r < outFeatures, "dequantizeRow: row \(r) out of 0..<\(outFeatures)")
        ck_dequant_row(format.ck, packed, Int64(outFeatures), Int64(inFeatures), Int64(r), dst)
    }

    /// y[row * ldy + o] = x[row] · W[o] for all rows of `x` and all outputs o, split over the pool's
    /// threads by output features. `x` must have been quantized with inFeatures == self.inFeatures.
    /// Every kernel set gives the same bits (see `KernelSet`).
    public func apply(_ x: QuantizedActivations, into y: UnsafeMutablePointer<Float>, ldy: Int, pool: ThreadPool,
                      kernels: KernelSet = .current) {
        apply(x, outputs: 0..<outFeatures, into: y, ldy: ldy, pool: pool, kernels: kernels)
    }

    /// Only outputs in `outputs`: y[row * ldy + (o - outputs.lowerBound)] = x[row] · W[o]
    /// (e.g. logits of a vocabulary slice). ldy >= outputs.count.
    public func apply(_ x: QuantizedActivations, outputs: Range<Int>, into y: UnsafeMutablePointer<Float>, ldy: Int,
                      pool: ThreadPool, kernels: KernelSet = .current) {
        precondition(x.inFeatures == inFeatures, "apply: activations have \(x.inFeatures) features, weights \(inFeatures)")
        precondition(format.blockSize == 1 || x.hasBlocks, "apply: activations were not block-quantized")
        precondition(outputs.lowerBound >= 0 && outputs.upperBound <= outFeatures && ldy >= outputs.count)
        if x.rows == 0 || outputs.isEmpty { return }
        ck_matmul_parallel(pool.handle, Int64(pool.threadCount * LinearWeights.chunksPerThread), kernels.table, format.ck, packed,
                           Int64(outFeatures), Int64(inFeatures), x.acts, Int64(outputs.lowerBound),
                           Int64(outputs.upperBound), y, Int64(ldy))
    }

    /// Work items per pool thread in `apply`.
    static let chunksPerThread = 4

    /// Scalar reference for one (row, output) pair with exactly the kernel's arithmetic (for tests):
    /// the SIMD kernel must match it bit for bit.
    public func referenceDot(_ x: QuantizedActivations, row: Int, output o: Int) -> Float {
        precondition(row < x.rows && o < outFeatures && x.inFeatures == inFeatures)
        switch format {
        case .f32, .f16, .bf16:
            let w = UnsafeMutablePointer<Float>.allocate(capacity: inFeatures)
            defer { w.deallocate() }
            dequantizeRow(o, into: w)
            let xr = x.acts.pointee.x! + row * Int(x.acts.pointee.ldx)
            return Ops.dotReference(xr, w, count: inFeatures)
        default:
            return ck_matmul_ref1(format.ck, packed, Int64(outFeatures), Int64(inFeatures), x.acts, Int64(row), Int64(o))
        }
    }
}
