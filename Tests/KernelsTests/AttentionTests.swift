import Foundation
import Testing
import Kernels

/// Attention on every kernel set and key/value storage type, against a direct softmax(qK)V in
/// Double over the values as stored, and against the scalar set.
@Suite struct AttentionTests {
    /// Against the scalar set: relative to max(1, |value|) (different summation trees, vector exp).
    static let toleranceAgainstScalar: Float = 2e-5
    /// Against the Double computation over the stored (f16- or q8_0-rounded) values.
    static let toleranceAgainstDouble: Float = 1e-4

    static let shapes: [(group: Int, cached: Int, chain: Int, headDim: Int)] =
        [(1, 0, 1, 64), (3, 1, 0, 64), (3, 17, 4, 64), (3, 129, 31, 64), (1, 0, 33, 64), (2, 64, 1, 64), (5, 9, 2, 128),
         (4, 40, 3, 256)]

    @Test(arguments: runnableSets, KVRowFormat.allCases)
    func matchesDirectComputationAndScalar(kernels: KernelSet, type: KVRowFormat) throws {
        let scalar = try KernelSet.named(.scalar)
        for (group, cached, chain, hd) in Self.shapes {
            var rng = SeededRandom(seed: UInt64(group * 1000 + cached * 10 + chain + hd))
            let kvHeads = 2, head = 1, rowBytes = type.rowBytes(values: hd), fullRowBytes = kvHeads * rowBytes
            // Cached rows as the cache lays them out: blocks of 4 positions, in reverse order, each
            // [layer][head][4 head rows] with 2 layers (ours is the second) and 2 heads (ours is head 1).
            let blockSize = 4, blocks = max(1, (cached + blockSize - 1) / blockSize)
            let layerStride = kvHeads * blockSize * rowBytes, blockStride = 2 * layerStride
            let layerOffset = layerStride + head * blockSize * rowBytes
            let table = (0..<blocks).map { Int32(blocks - 1 - $0) }
            var keyStore = [UInt8](repeating: 0, count: blocks * blockStride), valueStore = keyStore
            var keys: [[Float]] = [], values: [[Float]] = []  // our head's values as stored, read back
            func stored(_ x: [Float]) -> ([UInt8], [Float]) {
                var row = [UInt8](repeating: 0, count: fullRowBytes)
                var back = [Float](repeating: 0, count: hd)
                x.withUnsafeBufferPointer { xp in row.withUnsafeMutableBytes {
                    Ops.storeKV(xp.baseAddress!, count: kvHeads * hd, headDimension: hd, as: type, into: $0.baseAddress!, kernels: scalar)
                } }
                row.withUnsafeBytes { Ops.loadKV($0.baseAddress! + head * rowBytes, headDimension: hd, as: type, into: &back) }
                return (row, back)
            }
            for j in 0..<cached {
                let at = Int(table[j / blockSize]) * blockStride + layerOffset + (j % blockSize) * rowBytes
                let (k, kBack) = stored(rng.floats(kvHeads * hd)), (v, vBack) = stored(rng.floats(kvHeads * hd))
                keyStore.replaceSubrange(at..<(at + rowBytes), with: k[(head * rowBytes)..<((head + 1) * rowBytes)])
                valueStore.replaceSubrange(at..<(at + rowBytes), with: v[(head * rowBytes)..<((head + 1) * rowBytes)])
                keys.append(kBack)
                values.append(vBack)
            }
            var chainKeyRows: [[UInt8]] = [], chainValueRows: [[UInt8]] = []
            for _ in 0..<chain {
                let (k, kBack) = stored(rng.floats(kvHeads * hd)), (v, vBack) = stored(rng.floats(kvHeads * hd))
                chainKeyRows.append(k)
                chainValueRows.append(v)
                keys.append(kBack)
                values.append(vBack)
            }
            let q = rng.floats(group * hd, scale: 1.5)
            let n = cached + chain

            func run(_ set: KernelSet) -> [Float] {
                var out = [Float](repeating: .nan, count: group * hd)
                var scores = [Float](repeating: 0, count: group * n)
                let chainKeys = chainKeyRows.map { row -> UnsafeMutablePointer<UInt8> in
                    let p = UnsafeMutablePointer<UInt8>.allocate(capacity: fullRowBytes)
                    p.initialize(from: row, count: fullRowBytes)
                    return p
                }
                let chainValues = chainValueRows.map { row -> UnsafeMutablePointer<UInt8> in
                    let p = UnsafeMutablePointer<UInt8>.allocate(capacity: fullRowBytes)
                    p.initialize(from: row, count: fullRowBytes)
                    return p
                }
                defer { (chainKeys + chainValues).forEach { $0.deallocate() } }
                let kp: [UnsafePointer<UInt8>?] = chainKeys.map { UnsafePointer($0) } + [nil]
                let vp: [UnsafePointer<UInt8>?] = chainValues.map { UnsafePointer($0) } + [nil]
                keyStore.withUnsafeBytes { ks in valueStore.withUnsafeBytes { vs in table.withUnsafeBufferPointer { t in
                kp.withUnsafeBufferPointer { kc in vp.withUnsafeBufferPointer { vc in
                    let view = KVView(format: type, headDimension: hd, keys: ks.baseAddress!, values: vs.baseAddress!,
                                      table: t.baseAddress!, blockSize: blockSize, blockStride: blockStride, layerOffset: layerOffset,
                                      cachedCount: cached, chainKeys: kc.baseAddress!, chainValues: vc.baseAddress!,
                                      chainOffset: head * rowBytes, chainCount: chain)
                    Ops.attend(q: q, group: group, headDim: hd, scale: 0.125, view: view, scores: &scores, out: &out, kernels: set)
                } }
                } } }
                return out
            }
            let got = run(kernels), reference = run(scalar)
            let label = "\(kernels) \(type) group \(group) cached \(cached) chain \(chain) hd \(hd)"
            for g in 0..<group {
                let s: [Double] = (0..<n).map { j in
                    (0..<hd).reduce(0.0) { $0 + Double(q[g * hd + $1]) * Double(keys[j][$1]) } * 0.125
                }
                let m = s.max()!
                let p = s.map { exp($0 - m) }
                let z = p.reduce(0, +)
                for i in 0..<hd {
                    let o = (0..<n).reduce(0.0) { $0 + p[$1] / z * Double(values[$1][i]) }
                    #expect(abs(Float(o) - got[g * hd + i]) <= Self.toleranceAgainstDouble, "\(label): g \(g) i \(i) vs Double")
                    #expect(abs(got[g * hd + i] - reference[g * hd + i]) <= Self.toleranceAgainstScalar * max(1, abs(reference[g * hd + i])),
                            "\(label): g \(g) i \(i): \(got[g * hd + i]) vs scalar \(reference[g * hd + i])")
                }
            }
        }
    }

    /// Stored rows read back: f32 exactly, f16 within half-precision rounding, q8_0 within half a
    /// quantization step of its block; and the bytes are the same on every kernel set.
    @Test(arguments: KVRowFormat.allCases)
    func storedRowsReadBack(type: KVRowFormat) throws {
        var rng = SeededRandom(seed: 31)
        let n = 192, hd = 64
        let x = rng.floats(n, scale: 3)
        var rows: [[UInt8]] = []
        for set in runnableSets {
            var row = [UInt8](repeating: 0, count: 3 * type.rowBytes(values: hd))
            row.withUnsafeMutableBytes { Ops.storeKV(x, count: n, headDimension: hd, as: type, into: $0.baseAddress!, kernels: set) }
            rows.append(row)
        }
        #expect(Set(rows).count == 1, "\(type): kernel sets store different bytes")
        var back = [Float](repeating: 0, count: n)
        rows[0].withUnsafeBytes { raw in
            back.withUnsafeMutableBufferPointer { out in
                for h in 0..<3 {
                    Ops.loadKV(raw.baseAddress! + h * type.rowBytes(values: hd), headDimension: hd, as: type, into: out.baseAddress! + h * hd)
                }
            }
        }
        for b in 0..<(n / 32) {
            let amax = x[(b * 32)..<(b * 32 + 32)].map(abs).max()!
            for i in (b * 32)..<(b * 32 + 32) {
                switch type {
                case .f32: #expect(back[i] == x[i])
                case .f16: #expect(back[i] == Float(Float16(x[i])))
                case .q8_0: #expect(abs(back[i] - x[i]) <= amax / 127 * 0.57 + 1e-6, "\(type) \(i)")  // half a step, plus the f16 scale
                }
            }
        }
        #expect(KVRowFormat.f16.rowBytes(values: 64) == 128 && KVRowFormat.q8_0.rowBytes(values: 64) == 68
                && KVRowFormat.f32.rowBytes(values: 64) == 256)
    }
}
