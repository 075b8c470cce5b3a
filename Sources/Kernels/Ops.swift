import CKernels
import Foundation

/// Which kernel bodies run (AVX-512 VNNI or plain C), chosen at run time from the CPU.
public enum KernelDispatch {
    /// True when the AVX-512 VNNI bodies are in use.
    public static var simdActive: Bool { ck_simd_active() != 0 }
    /// Test hook: `true` forces the plain C bodies process-wide, `false` restores the automatic
    /// choice. Quantized matmuls and `dot` give bit-identical results either way.
    public static func setForceScalar(_ force: Bool) { ck_set_force_scalar(force ? 1 : 0) }
}

/// Elementwise and reduction ops on f32 buffers. Each fast op (SIMD, in CKernels) has a plain
/// Swift `...Reference` twin used by tests. Reductions use a fixed order independent of pointer
/// alignment (16 lanes by index, then a fixed tree), so results depend only on the values.
public enum Ops {
    /// y[i] = x[i] * (1 / sqrt(mean(x^2) + epsilon)) * weight[i]. `y` may alias `x`.
    public static func rmsNorm(_ x: UnsafePointer<Float>, weight: UnsafePointer<Float>, count: Int, epsilon: Float,
                               into y: UnsafeMutablePointer<Float>) {
        ck_rmsnorm(x, weight, Int64(count), epsilon, y)
    }

    /// Scalar twin of `rmsNorm` (sequential sum in Double).
    public static func rmsNormReference(_ x: UnsafePointer<Float>, weight: UnsafePointer<Float>, count: Int,
                                        epsilon: Float, into y: UnsafeMutablePointer<Float>) {
        var ss = 0.0
        for i in 0..<count { ss += Double(x[i]) * Double(x[i]) }
        let scale = Float(1.0 / (ss / Double(count) + Double(epsilon)).squareRoot())
        for i in 0..<count { y[i] = x[i] * scale * weight[i] }
    }

    /// llama-style RoPE, ggml "normal" mode: in each of `heads` heads of `headDim` values, the pair
    /// (x[2i], x[2i+1]) is rotated by the angle position * theta^(-2i/headDim) (computed as ggml does,
    /// by repeated multiplication in f32). In place. headDim must be even and at most 1024.
    public static func rope(_ x: UnsafeMutablePointer<Float>, heads: Int, headDim: Int, position: Int, theta: Float) {
        precondition(headDim % 2 == 0 && headDim <= 1024, "rope: headDim must be even and <= 1024")
        ck_rope(x, Int64(heads), Int64(headDim), Int64(position), theta)
    }

    /// Scalar twin of `rope` (angles from pow in Double).
    public static func ropeReference(_ x: UnsafeMutablePointer<Float>, heads: Int, headDim: Int, position: Int, theta: Float) {
        for h in 0..<heads {
            let v = x + h * headDim
            for i in 0..<(headDim / 2) {
                let angle = Double(position) * pow(Double(theta), -2.0 * Double(i) / Double(headDim))
                let c = Float(cos(angle)), s = Float(sin(angle))
                let x0 = v[2 * i], x1 = v[2 * i + 1]
                v[2 * i] = x0 * c - x1 * s
                v[2 * i + 1] = x0 * s + x1 * c
            }
        }
    }

    /// In place: x[i] = exp(x[i] - max) / sum. count 0 is a no-op.
    /// The `k` largest logits (descending; ties: the lower id first) into `ids`/`values` (`[k]`
    /// each, k <= count), and the log-sum-exp of all `count` logits. Two passes, SIMD.
    @discardableResult
    public static func topK(_ x: UnsafePointer<Float>, count: Int, k: Int, ids: UnsafeMutablePointer<Int32>,
                            values: UnsafeMutablePointer<Float>) -> Float {
        precondition(k >= 1 && k <= count)
        return ck_logits_summary(x, Int64(count), Int32(k), ids, values)
    }

    public static func softmax(_ x: UnsafeMutablePointer<Float>, count: Int) {
        ck_softmax(x, Int64(count))
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
    public static func siluMul(_ gate: UnsafeMutablePointer<Float>, _ up: UnsafePointer<Float>, count: Int) {
        ck_silu_mul(gate, up, Int64(count))
    }

    /// Scalar twin of `siluMul` (Double).
    public static func siluMulReference(_ gate: UnsafeMutablePointer<Float>, _ up: UnsafePointer<Float>, count: Int) {
        for i in 0..<count {
            let g = Double(gate[i])
            gate[i] = Float(g / (1 + exp(-g)) * Double(up[i]))
        }
    }

    /// Sum of a[i] * b[i]: lane i % 16 accumulates with fused multiply-adds in index order, then the
    /// 16 lanes are added in a fixed tree. Bit-identical to `dotReference`.
    public static func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, count: Int) -> Float {
        ck_dot(a, b, Int64(count))
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
    public static func axpy(_ alpha: Float, _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, count: Int) {
        ck_axpy(alpha, x, y, Int64(count))
    }

    /// Scalar twin of `axpy` (bit-identical).
    public static func axpyReference(_ alpha: Float, _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, count: Int) {
        for i in 0..<count { y[i] = y[i].addingProduct(alpha, x[i]) }
    }
}
