import CKernels
import Foundation

/// Elementwise and reduction ops on f32 buffers, run by a kernel set (default: `KernelSet.current`).
/// Each op also has a plain Swift `...Reference` twin (mostly in Double) that tests use as an
/// independent oracle for the scalar set. Reductions use a fixed order independent of pointer
/// alignment (16 lanes by index, then a fixed tree), so results depend only on the values.
public enum Ops {
    /// y[i] = x[i] * (1 / sqrt(mean(x^2) + epsilon)) * weight[i]. `y` may alias `x`.
    public static func rmsNorm(_ x: UnsafePointer<Float>, weight: UnsafePointer<Float>, count: Int, epsilon: Float,
                               into y: UnsafeMutablePointer<Float>, kernels: KernelSet = .current) {
        ck_rmsnorm(kernels.table, x, weight, Int64(count), epsilon, y)
    }

    /// Scalar twin of `rmsNorm` (sequential sum in Double).
    public static func rmsNormReference(_ x: UnsafePointer<Float>, weight: UnsafePointer<Float>, count: Int,
                                        epsilon: Float, into y: UnsafeMutablePointer<Float>) {
        var ss = 0.0
        for i in 0..<count { ss += Double(x[i]) * Double(x[i]) }
        let scale = Float(1.0 / (ss / Double(count) + Double(epsilon)).squareRoot())
        for i in 0..<count { y[i] = x[i] * scale * weight[i] }
    }

    /// RoPE angles of one position, as ggml's rope cache computes them (ck_rope_angles, their one
    /// implementation): `cos` and `sin` of angle_i = frequencyScale * (t_i / factors[i]) with
    /// t_i = position * theta^(-2i/headDim) by repeated multiplication in f32, for i in
    /// 0..<headDim/2 (headDim/2 values each). `frequencyScale` is linear scaling (1: none);
    /// `factors` Llama 3's `rope_freqs` (headDim/2 divisors) or nil. With 1 and nil, angle_i = t_i.
    public static func ropeAngles(position: Int, theta: Float, headDim: Int, frequencyScale: Float = 1,
                                  factors: UnsafePointer<Float>? = nil, cos: UnsafeMutablePointer<Float>,
                                  sin: UnsafeMutablePointer<Float>) {
        precondition(headDim % 2 == 0 && headDim <= 1024, "rope: headDim must be even and <= 1024")
        ck_rope_angles(Int64(position), theta, Int64(headDim), frequencyScale, factors, cos, sin)
    }

    /// Rotates each of `heads` heads of `headDim` values in place by angles from `ropeAngles`: the
    /// pair (x[2i], x[2i+1]) (llama, ggml "normal" mode) or, with `neox`, (x[i], x[i + headDim/2]).
    /// Bit-identical in every kernel set.
    public static func rope(_ x: UnsafeMutablePointer<Float>, heads: Int, headDim: Int, cos: UnsafePointer<Float>,
                            sin: UnsafePointer<Float>, neox: Bool = false, kernels: KernelSet = .current) {
        ck_rope(kernels.table, x, Int64(heads), Int64(headDim), cos, sin, neox ? 1 : 0)
    }

    /// RoPE of one position in one call (angles, then the rotation; llama pairing).
    public static func rope(_ x: UnsafeMutablePointer<Float>, heads: Int, headDim: Int, position: Int, theta: Float,
                            neox: Bool = false, kernels: KernelSet = .current) {
        var cs = [Float](repeating: 0, count: headDim / 2 + 1), sn = cs
        ropeAngles(position: position, theta: theta, headDim: headDim, cos: &cs, sin: &sn)
        rope(x, heads: heads, headDim: headDim, cos: cs, sin: sn, neox: neox, kernels: kernels)
    }

    /// Scalar twin of `rope` (angles from pow in Double).
    public static func ropeReference(_ x: UnsafeMutablePointer<Float>, heads: Int, headDim: Int, position: Int, theta: Float,
                                     neox: Bool = false) {
        let half = headDim / 2
        for h in 0..<heads {
            let v = x + h * headDim
            for i in 0..<half {
                let angle = Double(position) * pow(Double(theta), -2.0 * Double(i) / Double(headDim))
                let c = Float(cos(angle)), s = Float(sin(angle))
                let (i0, i1) = neox ? (i, i + half) : (2 * i, 2 * i + 1)
                let x0 = v[i0], x1 = v[i1]
                v[i0] = x0 * c - x1 * s
                v[i1] = x0 * s + x1 * c
            }
        }
    }

    // MARK: - Logits: top-k, log-sum-exp, argmax (the one implementation of each)

    /// The `k` largest logits (descending; ties: the lower id first) into `ids`/`values` (`[k]`
    /// each, k <= count), and the log-sum-exp of all `count` logits. Two passes, SIMD.
    @discardableResult
    public static func topK(_ x: UnsafePointer<Float>, count: Int, k: Int, ids: UnsafeMutablePointer<Int32>,
                            values: UnsafeMutablePointer<Float>, kernels: KernelSet = .current) -> Float {
        precondition(k >= 1 && k <= count)
        return ck_logits_summary(kernels.table, x, Int64(count), Int32(k), ids, values)
    }

    /// log(sum(exp(x[i]))) over `count` >= 1 values, computed as max + log(sum(exp(x - max))) so
    /// it neither overflows nor underflows (`topK`'s pass with k = 1).
    public static func logSumExp(_ x: UnsafePointer<Float>, count: Int, kernels: KernelSet = .current) -> Float {
        var id: Int32 = 0
        var value: Float = 0
        return topK(x, count: count, k: 1, ids: &id, values: &value, kernels: kernels)
    }

    /// Index of the largest of `count` >= 1 values, the lowest index among ties: greedy decoding.
    /// One compare per value, no exp (cheaper than `topK` with k = 1, and the same index).
    public static func argmax(_ x: UnsafePointer<Float>, count: Int) -> Int32 {
        precondition(count >= 1, "argmax of an empty row")
        var best = 0
        var bestValue = x[0]
        for i in 1..<count where x[i] > bestValue {
            best = i
            bestValue = x[i]
        }
        return Int32(best)
    }

    /// In place: x[i] = exp(x[i] - max) / sum; -infinity gives exactly 0. count 0 is a no-op.
    public static func softmax(_ x: UnsafeMutablePointer<Float>, count: Int, kernels: KernelSet = .current) {
        ck_softmax(kernels.table, x, Int64(count))
    }

    /// Scalar twin of `softmax` (Double accumulation).
    public static func softmaxReference(_ x: UnsafeMutablePointer<Float>, count: Int) {
        if count == 0 { return }
        var mx = -Float.infinity
        for i in 0..<count { mx = max(mx, x[i]) }
        var sum = 0.0
        for i in 0..<count { let e = exp(Double(x[i] - mx)); x[i] = Float(e); sum += e }
        for i in 0..<count { x[i] = Float(Double(x[i]) / sum) }
    }

    /// gate[i] = silu(gate[i]) * up[i], silu(g) = g / (1 + exp(-g)).
    public static func siluMul(_ gate: UnsafeMutablePointer<Float>, _ up: UnsafePointer<Float>, count: Int,
                               kernels: KernelSet = .current) {
        ck_silu_mul(kernels.table, gate, up, Int64(count))
    }

    /// Scalar twin of `siluMul` (Double).
    public static func siluMulReference(_ gate: UnsafeMutablePointer<Float>, _ up: UnsafePointer<Float>, count: Int) {
        for i in 0..<count {
            let g = Double(gate[i])
            gate[i] = Float(g / (1 + exp(-g)) * Double(up[i]))
        }
    }

    /// gate[i] = gelu(gate[i]) * up[i] with gelu's tanh approximation (PyTorch `gelu_pytorch_tanh`):
    /// 0.5 g (1 + tanh(√(2/π) (g + 0.044715 g³))), computed as the equal logistic
    /// g / (1 + exp(-2√(2/π) (g + 0.044715 g³))) with the set's vector exp (as `siluMul`: within a
    /// few ulps across sets, and a row's result never depends on its batch).
    public static func geluTanhMul(_ gate: UnsafeMutablePointer<Float>, _ up: UnsafePointer<Float>, count: Int,
                                   kernels: KernelSet = .current) {
        ck_gelu_tanh_mul(kernels.table, gate, up, Int64(count))
    }

    /// Double twin of `geluTanhMul`.
    public static func geluTanhMulReference(_ gate: UnsafeMutablePointer<Float>, _ up: UnsafePointer<Float>, count: Int) {
        for i in 0..<count {
            let g = Double(gate[i])
            gate[i] = Float(0.5 * g * (1 + tanh((2 / Double.pi).squareRoot() * (g + 0.044715 * g * g * g))) * Double(up[i]))
        }
    }

    /// Sum of a[i] * b[i]: lane i % 16 accumulates with fused multiply-adds in index order, then the
    /// 16 lanes are added in a fixed tree. Bit-identical to `dotReference`, in every kernel set.
    public static func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, count: Int, kernels: KernelSet = .current) -> Float {
        ck_dot(kernels.table, a, b, Int64(count))
    }

    /// Scalar twin of `dot`, with the same lane order and tree (so equal bit for bit).
    public static func dotReference(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, count: Int) -> Float {
        var lanes = [Float](repeating: 0, count: 16)
        var i = 0
        while i < count {
            for l in 0..<16 {
                let (x, y): (Float, Float) = i + l < count ? (a[i + l], b[i + l]) : (0, 0)
                lanes[l] = lanes[l].addingProduct(x, y)
            }
            i += 16
        }
        var s8 = [Float](repeating: 0, count: 8), s4 = [Float](repeating: 0, count: 4)
        for j in 0..<8 { s8[j] = lanes[j] + lanes[j + 8] }
        for j in 0..<4 { s4[j] = s8[j] + s8[j + 4] }
        return (s4[0] + s4[2]) + (s4[1] + s4[3])
    }

    /// y[i] += alpha * x[i] (fused multiply-add per element).
    public static func axpy(_ alpha: Float, _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, count: Int,
                            kernels: KernelSet = .current) {
        ck_axpy(kernels.table, alpha, x, y, Int64(count))
    }

    /// Scalar twin of `axpy` (bit-identical).
    public static func axpyReference(_ alpha: Float, _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, count: Int) {
        for i in 0..<count { y[i] = y[i].addingProduct(alpha, x[i]) }
    }

    /// f16 -> f32 of `count` values (exact; bit-identical in every kernel set).
    public static func halfToFloat(_ x: UnsafePointer<UInt16>, _ y: UnsafeMutablePointer<Float>, count: Int,
                                   kernels: KernelSet = .current) {
        ck_f16_to_f32_row(kernels.table, x, y, Int64(count))
    }

    /// f32 -> f16 of `count` values, round to nearest even (bit-identical in every kernel set).
    public static func floatToHalf(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<UInt16>, count: Int,
                                   kernels: KernelSet = .current) {
        ck_f32_to_f16_row(kernels.table, x, y, Int64(count))
    }

    /// Reads `count` floats as fast as memory allows (for bandwidth measurements); the result only
    /// serves to keep the reads from being optimized away.
    public static func readSum(_ x: UnsafePointer<Float>, count: Int) -> Float {
        Float(ck_read_sum(x, Int64(count / 8 * 8 * MemoryLayout<Float>.size)) & 0xFF)
    }
}
