import Kernels

/// Row-wise work of the forward pass (norms, RoPE, SiLU): each row depends only on itself, so rows
/// may be split between threads in any way without changing a bit of the result.
protocol RowWork {
    /// Does the work of rows `rows` (indices into the step's computed rows).
    func run(rows: Range<Int>)
}

/// Pool task: item i of `items` takes a contiguous run of rows.
struct RowTask<Work: RowWork>: ThreadPoolTask {
    let work: Work
    let count: Int

    func run(item: Int, items: Int) {
        let lo = item * count / items, hi = (item + 1) * count / items
        if lo < hi { work.run(rows: lo..<hi) }
    }
}

extension Transformer {
    /// Rows at or above this count are split over the pool (below it, waking the workers costs
    /// more than the work).
    static let parallelRowThreshold = 16

    /// Runs `work` over rows `0..<count`, on the pool when there are many. Allocates nothing.
    @inline(__always) func forEachRow<Work: RowWork>(_ count: Int, _ work: Work) {
        if count < Self.parallelRowThreshold || pool.threadCount == 1 {
            work.run(rows: 0..<count)
        } else {
            pool.run(items: pool.threadCount, task: RowTask(work: work, count: count))
        }
    }
}

/// y[i] = rmsNorm(x[i]) * weight for each row (rows `width` floats apart).
struct NormRows: RowWork {
    let x: UnsafeMutablePointer<Float>
    let weight: UnsafePointer<Float>
    let y: UnsafeMutablePointer<Float>
    let width: Int
    let epsilon: Float
    let kernels: KernelSet

    func run(rows: Range<Int>) {
        for i in rows {
            Ops.rmsNorm(x + i * width, weight: weight, count: width, epsilon: epsilon, into: y + i * width, kernels: kernels)
        }
    }
}

/// For each row: the Q/K/V biases added (if any), each query and key head RMS-normed (QK-norm, if
/// any), RoPE on its query and key heads (angles precomputed per row), then its keys and values
/// stored into the cache's step area as `type`.
struct RopeAndStoreRows: RowWork {
    let qkv: UnsafeMutablePointer<Float>   // [rows x (Q + 2 KV)]
    let width: Int
    let bias: UnsafePointer<Float>?        // [Q + 2 KV]
    let queryNorm: UnsafePointer<Float>?   // [headDim]
    let keyNorm: UnsafePointer<Float>?     // [headDim]
    let epsilon: Float
    let cos: UnsafePointer<Float>          // [rows x headDim/2]
    let sin: UnsafePointer<Float>
    let neox: Bool
    let queryHeads: Int
    let kvHeads: Int
    let headDim: Int
    let stepKeys: UnsafeMutableRawPointer  // step row 0 of this layer; rows `stepRowBytes` apart
    let stepValues: UnsafeMutableRawPointer
    let stepRowBytes: Int
    let firstStepRow: Int
    let type: KVCacheType
    let kernels: KernelSet

    func run(rows: Range<Int>) {
        let e = queryHeads * headDim, kv = kvHeads * headDim, half = headDim / 2
        for i in rows {
            let q = qkv + i * width
            if let bias {
                for j in 0..<width { q[j] += bias[j] }
            }
            if let queryNorm {
                for h in 0..<queryHeads {
                    Ops.rmsNorm(q + h * headDim, weight: queryNorm, count: headDim, epsilon: epsilon, into: q + h * headDim, kernels: kernels)
                }
            }
            if let keyNorm {
                for h in 0..<kvHeads {
                    let k = q + e + h * headDim
                    Ops.rmsNorm(k, weight: keyNorm, count: headDim, epsilon: epsilon, into: k, kernels: kernels)
                }
            }
            let cs = cos + i * half, sn = sin + i * half
            Ops.rope(q, heads: queryHeads, headDim: headDim, cos: cs, sin: sn, neox: neox, kernels: kernels)
            Ops.rope(q + e, heads: kvHeads, headDim: headDim, cos: cs, sin: sn, neox: neox, kernels: kernels)
            let row = (firstStepRow + i) * stepRowBytes
            Ops.storeKV(q + e, count: kv, headDimension: headDim, as: type.rowFormat, into: stepKeys + row, kernels: kernels)
            Ops.storeKV(q + e + kv, count: kv, headDimension: headDim, as: type.rowFormat, into: stepValues + row, kernels: kernels)
        }
    }
}

/// gate[i] = act(gate[i]) * up[i] for each row of [gate | up] (rows 2F floats apart), act the
/// architecture's activation (silu or gelu-tanh).
struct GatedActivationRows: RowWork {
    let gateUp: UnsafeMutablePointer<Float>
    let width: Int
    let activation: Architecture.Activation
    let kernels: KernelSet

    func run(rows: Range<Int>) {
        for i in rows {
            let g = gateUp + i * 2 * width
            switch activation {
            case .silu: Ops.siluMul(g, g + width, count: width, kernels: kernels)
            case .geluTanh: Ops.geluTanhMul(g, g + width, count: width, kernels: kernels)
            }
        }
    }
}

/// Calls `body` with base addresses of the arrays that are present (nil for absent ones); the
/// pointers are valid only inside `body`.
@inline(__always)
func withOptionalPointers<R>(_ a: [Float]?, _ b: [Float]?, _ c: [Float]?,
                             _ body: (UnsafePointer<Float>?, UnsafePointer<Float>?, UnsafePointer<Float>?) -> R) -> R {
    func one<T>(_ x: [Float]?, _ f: (UnsafePointer<Float>?) -> T) -> T {
        guard let x else { return f(nil) }
        return x.withUnsafeBufferPointer { f($0.baseAddress) }
    }
    return one(a) { pa in one(b) { pb in one(c) { pc in body(pa, pb, pc) } } }
}
