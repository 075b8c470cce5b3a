import Foundation
import Testing
import Kernels

/// The SIMD attention kernel against its scalar reference, and against a direct softmax(qK)V.
@Suite struct AttentionTests {
    /// Relative tolerance of the SIMD body against the scalar one (different summation trees).
    static let tolerance: Float = 1e-5

    @Test(arguments: [(1, 0, 1), (3, 1, 0), (3, 17, 4), (3, 129, 31), (1, 0, 33), (2, 64, 1)])
    func simdMatchesReference(group: Int, cached: Int, chain: Int) {
        var rng = SeededRandom(seed: UInt64(group * 1000 + cached * 10 + chain))
        let hd = 64, kvHeads = 2, stride = kvHeads * hd
        let q = rng.floats(group * hd)
        let keys = rng.floats(max(cached, 1) * stride), values = rng.floats(max(cached, 1) * stride)
        let stepKeys = (0..<chain).map { _ in rng.floats(stride) }, stepValues = (0..<chain).map { _ in rng.floats(stride) }
        let head = 1, offset = head * hd
        func run(_ reference: Bool) -> [Float] {
            var out = [Float](repeating: .nan, count: group * hd)
            var scores = [Float](repeating: 0, count: group * (cached + chain))
            let flatKeys: [Float] = stepKeys.flatMap { $0 } + [0], flatValues: [Float] = stepValues.flatMap { $0 } + [0]
            keys.withUnsafeBufferPointer { k in values.withUnsafeBufferPointer { v in
            flatKeys.withUnsafeBufferPointer { sk in flatValues.withUnsafeBufferPointer { sv in
                var kOpt: [UnsafePointer<Float>?] = (0..<max(chain, 1)).map { sk.baseAddress! + $0 * stride }
                var vOpt: [UnsafePointer<Float>?] = (0..<max(chain, 1)).map { sv.baseAddress! + $0 * stride }
                // Cached rows in blocks of 4 rows, stored in reverse block order.
                let blockSize = 4
                let blocks = (cached + blockSize - 1) / blockSize
                let table = (0..<max(blocks, 1)).map { Int32(max(blocks, 1) - 1 - $0) }
                var permutedK = [Float](repeating: 0, count: max(blocks, 1) * blockSize * stride), permutedV = permutedK
                for j in 0..<cached {
                    let dst = (Int(table[j / blockSize]) * blockSize + j % blockSize) * stride
                    for i in 0..<stride { permutedK[dst + i] = k[j * stride + i]; permutedV[dst + i] = v[j * stride + i] }
                }
                permutedK.withUnsafeBufferPointer { pk in permutedV.withUnsafeBufferPointer { pv in table.withUnsafeBufferPointer { t in
                    let rows = CachedRows(keys: pk.baseAddress!, values: pv.baseAddress!, table: t.baseAddress!, blockSize: blockSize,
                                          blockStride: blockSize * stride, rowStride: stride, offset: offset, count: cached)
                    let f = reference ? Ops.attendReference : Ops.attend
                    f(q, group, hd, 0.125, rows, &kOpt, &vOpt, offset, chain, &scores, &out)
                } } }
            } }
            } }
            return out
        }
        let simd = run(false), reference = run(true)
        // Direct computation in Double.
        for g in 0..<group {
            var s: [Double] = []
            for j in 0..<(cached + chain) {
                let k = j < cached ? Array(keys[(j * stride + offset)..<(j * stride + offset + hd)]) : Array(stepKeys[j - cached][offset..<(offset + hd)])
                s.append(zip(q[(g * hd)..<((g + 1) * hd)], k).reduce(0.0) { $0 + Double($1.0) * Double($1.1) } * 0.125)
            }
            let m = s.max()!
            let p = s.map { exp($0 - m) }
            let z = p.reduce(0, +)
            for i in 0..<hd {
                var o = 0.0
                for j in 0..<(cached + chain) {
                    let v = j < cached ? values[j * stride + offset + i] : stepValues[j - cached][offset + i]
                    o += p[j] / z * Double(v)
                }
                #expect(abs(Float(o) - reference[g * hd + i]) <= 1e-4, "reference g \(g) i \(i)")
                #expect(abs(simd[g * hd + i] - reference[g * hd + i]) <= Self.tolerance * max(1, abs(reference[g * hd + i])),
                        "simd g \(g) i \(i): \(simd[g * hd + i]) vs \(reference[g * hd + i])")
            }
        }
    }
}
