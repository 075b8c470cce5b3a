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

/// For each row: RoPE on its query and key heads (angles precomputed per row), then its keys and
/// values stored into the cache's step area as `type`.
struct RopeAndStoreRows: RowWork {
    let qkv: UnsafeMutablePointer<Float>   // [rows x (E + 2 KV)]
    let width: Int
    let cos: UnsafePointer<Float>          // [rows x headDim/2]
    let sin: UnsafePointer<Float>
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
            let cs = cos + i * half, sn = sin + i * half
            Ops.rope(q, heads: queryHeads, headDim: headDim, cos: cs, sin: sn, kernels: kernels)
            Ops.rope(q + e, heads: kvHeads, headDim: headDim, cos: cs, sin: sn, kernels: kernels)
            let row = (firstStepRow + i) * stepRowBytes
            Ops.storeKV(q + e, count: kv, headDimension: headDim, as: type, into: stepKeys + row, kernels: kernels)
            Ops.storeKV(q + e + kv, count: kv, headDimension: headDim, as: type, into: stepValues + row, kernels: kernels)
        }
    }
}

/// gate[i] = silu(gate[i]) * up[i] for each row of [gate | up] (rows 2F floats apart).
struct SiluRows: RowWork {
    let gateUp: UnsafeMutablePointer<Float>
    let width: Int
    let kernels: KernelSet

    func run(rows: Range<Int>) {
        for i in rows {
            let g = gateUp + i * 2 * width
            Ops.siluMul(g, g + width, count: width, kernels: kernels)
        }
    }
}
