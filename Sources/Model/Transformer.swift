import Foundation
import GGUF
import Kernels

/// A decoder-only transformer loaded from a GGUF file (llama, qwen2, qwen3, gemma3: the
/// differences are options of one block, `ModelConfig.options`), with its forward pass over packed
/// rows.
///
/// One forward pass serves prefill (chains), plain decoding (one row per sequence), draft-tree
/// verification (trees) and continuous batching (rows of many slots): every weight matrix is
/// applied once per step to all rows. Each row's result is bit-identical whatever else is in the
/// batch (the kernels split work over output features only, and attention reduces over positions
/// in position order), so batching and speculation never change greedy output.
///
/// Not thread-safe: one step at a time (the engine thread). Scratch buffers are allocated once,
/// for `maxStepRows` rows, so a step allocates nothing.
public final class Transformer {
    public let config: ModelConfig
    public let maxStepRows: Int
    public let maxLogitRows: Int
    /// Weight bytes the kernels read per step (for bandwidth reports).
    public let weightBytes: Int
    /// The kernel pool: this model's own, or one shared with other models (then `gate` is set).
    public let pool: ThreadPool
    /// The turn the engines of models sharing `pool` take for each step and each calibration
    /// measurement, so their work on the shared cores interleaves fairly and never overlaps.
    public let gate: StepGate?
    /// The kernel set every computation of this model runs on (chosen at init).
    public let kernels: KernelSet

    // MARK: - Weights

    struct Layer {
        var attentionNorm: [Float]
        var qkv: [LinearWeights]         // fused [q; k; v] when the formats agree, else three
        var qkvBias: [Float]?            // [q | k | v] biases (qwen2)
        var queryNorm: [Float]?          // [headDim], applied to every query head (QK-norm)
        var keyNorm: [Float]?
        var output: LinearWeights
        var postAttentionNorm: [Float]?  // gemma3
        var ffnNorm: [Float]
        var gateUp: [LinearWeights]      // fused [gate; up] when the formats agree, else two
        var down: LinearWeights
        var postFeedForwardNorm: [Float]?
    }

    let embedding: LinearWeights         // [vocab x embedding]; also the output head when tied
    let outputHead: LinearWeights
    let outputNorm: [Float]
    let layers: [Layer]
    /// Llama 3's `rope_freqs.weight` (headDim/2 divisors of the global layers' angles), or nil.
    let ropeFactors: UnsafeMutablePointer<Float>?
    /// √embeddingLength for architectures that scale embeddings, else nil.
    let embeddingScale: Float?
    /// `0..<layerCount`, for layer-prefix slices without allocating.
    let allLayers: [Int]

    // MARK: - Scratch (sized for maxStepRows)

    let hidden: UnsafeMutablePointer<Float>       // [rows x E] residual stream
    let normed: UnsafeMutablePointer<Float>       // [rows x E]
    let qkvOut: UnsafeMutablePointer<Float>       // [rows x (Q + 2 KV)], Q = heads x headDim
    let attention: UnsafeMutablePointer<Float>    // [rows x Q]
    let gateUpOut: UnsafeMutablePointer<Float>    // [rows x 2F]
    let projected: UnsafeMutablePointer<Float>    // [rows x E]
    let scores: UnsafeMutablePointer<Float>       // [attentionItems x group x scoreStride]
    let chainKeys: UnsafeMutablePointer<UnsafePointer<UInt8>?>    // [attentionItems x maxStepRows]
    let chainValues: UnsafeMutablePointer<UnsafePointer<UInt8>?>  // [attentionItems x maxStepRows]
    let ropeCos: UnsafeMutablePointer<Float>      // [ropes x maxStepRows x headDim/2], the step's rows' angles
    let ropeSin: UnsafeMutablePointer<Float>      // [ropes x maxStepRows x headDim/2]
    /// Attention work items per layer: a few per thread, for balance when rows differ in length.
    let attentionItems: Int
    /// A layer's attention units (see `attend`): [maxStepRows x kvHeads x ranges per row].
    let attentionUnits: UnsafeMutablePointer<AttentionUnit>
    /// Unnormalised results of the ranges of long rows: [unit][group][headDim] and [unit][group][2].
    let partialAcc: UnsafeMutablePointer<Float>
    let partialMaxSum: UnsafeMutablePointer<Float>
    let logitHidden: UnsafeMutablePointer<Float>  // [maxLogitRows x E]
    /// Logits of the rows that asked for them, in row order: `[logitRowCount x vocabularySize]`.
    /// Valid until the next forward call.
    public let logits: UnsafeMutablePointer<Float>
    let activations: QuantizedActivations
    let scoreStride: Int
    /// The longest sequence (cached positions plus step rows) attention is sized for.
    public let maxContext: Int

    /// Loads weights from `file` (copied and repacked for the kernels; the file may be closed after).
    /// - Parameters:
    ///   - maxStepRows: most rows one forward call takes (prefill chunk plus draft rows).
    ///   - maxContext: the longest sequence (cached positions plus step rows) attention will see.
    ///   - kernels: the kernel set to run on (default: the process-wide one).
    ///   - pool: a kernel pool shared with other models' transformers (`threads` is then ignored);
    ///     nil starts one of `threads` threads for this model alone.
    ///   - gate: the turn the engines sharing `pool` take per step (`StepGate`); nil when the pool
    ///     is this model's alone.
    public init(file: GGUFFile, threads: Int, maxStepRows: Int = 512, maxLogitRows: Int = 256, maxContext: Int = 8192,
                kernels: KernelSet = .current, pool: ThreadPool? = nil, gate: StepGate? = nil) throws {
        let config = try ModelConfig(file: file)
        self.config = config
        self.maxStepRows = maxStepRows
        self.maxLogitRows = min(maxLogitRows, maxStepRows)
        self.maxContext = maxContext
        self.kernels = kernels
        self.pool = pool ?? ThreadPool(threads: max(1, threads))
        self.gate = gate
        let e = config.embeddingLength, f = config.feedForwardLength, kv = config.kvDimension, qd = config.queryDimension
        let options = config.options
        var bytes = 0

        func tensor(_ name: String, _ shape: [Int]) throws -> TensorInfo {
            let t = try file.requireTensor(name)
            guard t.dimensions == shape else { throw ModelError.tensorShapeMismatch(tensor: name, expected: shape, found: t.dimensions) }
            return t
        }
        func format(_ t: TensorInfo) throws -> WeightFormat {
            guard let format = WeightFormat(ggmlName: t.type.name) else {
                throw ModelError.unsupportedTensorType(tensor: t.name, type: t.type.name)
            }
            return format
        }
        func vector(_ name: String, _ count: Int) throws -> [Float] {
            let t = try tensor(name, [count])
            guard t.type == .f32 else { throw ModelError.unsupportedTensorType(tensor: name, type: t.type.name + " (norm weights must be F32)") }
            return Array(file.bytes(of: t).bindMemory(to: Float.self))
        }
        /// One matrix, or several with the same input fused into one (rows concatenated) when
        /// their formats agree, so one kernel call (one thread sync) serves all of them.
        func matrices(_ names: [String], _ outs: [Int], inFeatures: Int) throws -> [LinearWeights] {
            let infos = try zip(names, outs).map { try tensor($0, [inFeatures, $1]) }
            let formats = try infos.map(format)
            bytes += infos.reduce(0) { $0 + $1.byteCount }
            if Set(formats).count == 1 {
                var joined = [UInt8]()
                joined.reserveCapacity(infos.reduce(0) { $0 + $1.byteCount })
                for t in infos { joined += file.bytes(of: t) }
                return [try joined.withUnsafeBytes {
                    try LinearWeights(format: formats[0], outFeatures: outs.reduce(0, +), inFeatures: inFeatures, bytes: $0)
                }]
            }
            return try zip(infos, formats).map { t, fmt in
                try LinearWeights(format: fmt, outFeatures: t.dimensions[1], inFeatures: inFeatures, bytes: file.bytes(of: t))
            }
        }

        let embd = try tensor("token_embd.weight", [e, config.vocabularySize])
        embedding = try LinearWeights(format: format(embd), outFeatures: config.vocabularySize, inFeatures: e, bytes: file.bytes(of: embd))
        if file.tensor(named: "output.weight") != nil {
            outputHead = try matrices(["output.weight"], [config.vocabularySize], inFeatures: e)[0]
        } else {
            outputHead = embedding
            bytes += embd.byteCount
        }
        outputNorm = try vector("output_norm.weight", e)
        var layers: [Layer] = []
        let hd = config.headDimension
        for i in 0..<config.layerCount {
            let p = "blk.\(i)."
            layers.append(Layer(
                attentionNorm: try vector(p + "attn_norm.weight", e),
                qkv: try matrices([p + "attn_q.weight", p + "attn_k.weight", p + "attn_v.weight"], [qd, kv, kv], inFeatures: e),
                qkvBias: options.queryKeyValueBiases
                    ? try vector(p + "attn_q.bias", qd) + vector(p + "attn_k.bias", kv) + vector(p + "attn_v.bias", kv) : nil,
                queryNorm: options.queryKeyNorms ? try vector(p + "attn_q_norm.weight", hd) : nil,
                keyNorm: options.queryKeyNorms ? try vector(p + "attn_k_norm.weight", hd) : nil,
                output: try matrices([p + "attn_output.weight"], [e], inFeatures: qd)[0],
                postAttentionNorm: options.postNorms ? try vector(p + "post_attention_norm.weight", e) : nil,
                ffnNorm: try vector(p + "ffn_norm.weight", e),
                gateUp: try matrices([p + "ffn_gate.weight", p + "ffn_up.weight"], [f, f], inFeatures: e),
                down: try matrices([p + "ffn_down.weight"], [e], inFeatures: f)[0],
                postFeedForwardNorm: options.postNorms ? try vector(p + "post_ffw_norm.weight", e) : nil))
        }
        self.layers = layers
        if options.readsRopeScaling, file.tensor(named: "rope_freqs.weight") != nil {
            let factors = try vector("rope_freqs.weight", hd / 2)
            let p = UnsafeMutablePointer<Float>.allocate(capacity: factors.count)
            p.initialize(from: factors, count: factors.count)
            ropeFactors = p
        } else {
            ropeFactors = nil
        }
        embeddingScale = options.scalesEmbedding ? Float(e).squareRoot() : nil
        allLayers = Array(0..<config.layerCount)
        weightBytes = bytes

        let r = maxStepRows
        func buffer(_ n: Int) -> UnsafeMutablePointer<Float> {
            let p = UnsafeMutablePointer<Float>.allocate(capacity: n)
            p.initialize(repeating: 0, count: n)
            return p
        }
        hidden = buffer(r * e)
        normed = buffer(r * e)
        qkvOut = buffer(r * (qd + 2 * kv))
        attention = buffer(r * qd)
        gateUpOut = buffer(r * 2 * f)
        projected = buffer(r * e)
        scoreStride = maxContext + maxStepRows
        attentionItems = 4 * self.pool.threadCount
        scores = buffer(attentionItems * config.groupSize * scoreStride)
        chainKeys = .allocate(capacity: attentionItems * maxStepRows)
        chainValues = .allocate(capacity: attentionItems * maxStepRows)
        let maxUnits = maxStepRows * config.kvHeadCount * ((maxContext + maxStepRows) / Self.attentionChunk + 1)
        attentionUnits = .allocate(capacity: maxUnits)
        partialAcc = buffer(maxUnits * config.groupSize * config.headDimension)
        partialMaxSum = buffer(maxUnits * config.groupSize * 2)
        ropeCos = buffer(config.ropes.count * r * config.headDimension / 2 + 1)
        ropeSin = buffer(config.ropes.count * r * config.headDimension / 2 + 1)
        logitHidden = buffer(self.maxLogitRows * e)
        logits = buffer(self.maxLogitRows * config.vocabularySize)
        activations = QuantizedActivations(maxRows: r, maxInFeatures: max(e, f, qd))
    }

    deinit {
        for p in [hidden, normed, qkvOut, attention, gateUpOut, projected, scores, logitHidden, logits, ropeCos, ropeSin] {
            p.deallocate()
        }
        chainKeys.deallocate()
        chainValues.deallocate()
        attentionUnits.deallocate()
        partialAcc.deallocate()
        partialMaxSum.deallocate()
        ropeFactors?.deallocate()
    }

    /// A KV cache shaped for this model, storing keys and values as `type` (check the type against
    /// the model first with `KVCacheType.validate(headDimension:)`: a q8_0 cache needs head dimensions
    /// that are multiples of 32).
    public func makeCache(slots: Int, capacity: Int, blockSize: Int = 16, blockCount: Int? = nil,
                          type: KVCacheType = .f16) -> KVCache {
        precondition((try? type.validate(headDimension: config.headDimension)) != nil,
                     "KV cache type \(type) does not fit head dimension \(config.headDimension)")
        return KVCache(slotCount: slots, capacity: min(capacity, maxContext), layerCount: config.layerCount,
                       kvDimension: config.kvDimension, headDimension: config.headDimension, maxStepRows: maxStepRows,
                       blockSize: blockSize, blockCount: blockCount, type: type)
    }

    // MARK: - Forward

    /// Runs one step over `rows` and writes the logits of the rows with `wantsLogits` to `logits`,
    /// in row order. Returns how many logit rows were written. The rows' keys and values stay in
    /// the cache's step area until committed with `KVCache.commit`.
    @discardableResult
    public func forward(_ rows: [BatchRow], cache: KVCache) throws -> Int {
        try forward(rows, cache: cache, layers: config.layerCount)
    }

    /// Runs `rows` through only the first `layers` layers, then the output norm and head (early
    /// exit, for self-speculative drafting); `layers == config.layerCount` is the full forward,
    /// bit for bit. Rows may form chains and trees exactly as in `forward(_:cache:)`.
    ///
    /// Only the step area's keys and values of layers `0..<layers` are written (for the rows
    /// computed); deeper layers' step rows keep stale values, so rows of an early-exit call must
    /// not be committed to the cache. Layers below `layers` compute exactly what the full forward
    /// computes, so the target's cached positions serve as the early-exit model's cache.
    ///
    /// - Parameters:
    ///   - layers: how many leading layers to run, in `1...config.layerCount`.
    ///   - computedRows: rows `0..<computedRows` were computed by the previous forward call on
    ///     this cache (with at least `layers` layers, over the same leading rows) and their
    ///     keys and values still sit in the step area: they are not recomputed, only serve as
    ///     ancestors. Rows from `computedRows` on are computed, and logits are written for those
    ///     of them with `wantsLogits`. Lets a drafter grow a tree level by level at the cost of
    ///     the new rows only. Step row i always holds row i's keys and values.
    /// - Returns: logit rows written to `logits` (in row order, among the computed rows).
    @discardableResult
    public func forward(_ rows: [BatchRow], cache: KVCache, layers layerLimit: Int, computedRows: Int = 0) throws -> Int {
        guard layerLimit >= 1 && layerLimit <= config.layerCount else {
            throw ModelError.invalidLayerCount(requested: layerLimit, available: config.layerCount)
        }
        return try run(rows, cache: cache, layers: allLayers[..<layerLimit], computedRows: computedRows)
    }

    /// Runs `rows` through only the layers listed in `layers` (increasing indices), then the
    /// output norm and head: layer skipping, for self-speculative drafting. The listed layers
    /// attend to the cache's committed keys and values of the same layers (computed by the full
    /// target), so from the first skipped layer on the result approximates the target rather
    /// than reproducing a shallower model. Step rows of a skipping call must not be committed.
    /// `computedRows` as in `forward(_:cache:layers:computedRows:)` (the earlier rows must have
    /// been computed with the same layers).
    /// - Returns: logit rows written to `logits` (in row order, among the computed rows).
    ///
    /// `headTokens` (default: the whole vocabulary) computes logits only for token ids
    /// `0..<headTokens` (a shortlist: byte-level BPE vocabularies number frequent tokens first),
    /// cutting the output head's cost in proportion; the rest of each logit row (row stride stays
    /// `vocabularySize`) is left stale.
    @discardableResult
    public func forward(_ rows: [BatchRow], cache: KVCache, only layers: [Int], headTokens: Int? = nil,
                        computedRows: Int = 0) throws -> Int {
        guard !layers.isEmpty else { throw ModelError.invalidLayerCount(requested: 0, available: config.layerCount) }
        for (i, l) in layers.enumerated() where l < 0 || l >= config.layerCount || (i > 0 && l <= layers[i - 1]) {
            throw ModelError.invalidLayerList(layers, available: config.layerCount)
        }
        let head = headTokens ?? config.vocabularySize
        guard head >= 1 && head <= config.vocabularySize else {
            throw ModelError.invalidToken(Int32(clamping: head - 1), vocabularySize: config.vocabularySize)
        }
        return try run(rows, cache: cache, layers: layers[...], headTokens: head, computedRows: computedRows)
    }

    /// The forward pass over the listed layers (see the public entry points).
    private func run(_ rows: [BatchRow], cache: KVCache, layers layerList: ArraySlice<Int>, headTokens: Int? = nil,
                     computedRows: Int) throws -> Int {
        guard computedRows >= 0 && computedRows <= rows.count else {
            throw ModelError.tooManyRows(requested: computedRows, maximum: rows.count)
        }
        try validate(rows, cache: cache, computedRows: computedRows)
        let first = computedRows
        let n = rows.count - first
        guard n > 0 else { return 0 }
        let e = config.embeddingLength, f = config.feedForwardLength, kv = config.kvDimension, qd = config.queryDimension
        let qkvWidth = qd + 2 * kv

        let halfHead = config.headDimension / 2
        for i in 0..<n {
            embedding.dequantizeRow(Int(rows[first + i].token), into: hidden + i * e)
            if let s = embeddingScale {
                for j in 0..<e { hidden[i * e + j] *= s }
            }
            for (k, rope) in config.ropes.enumerated() {
                let at = (k * maxStepRows + i) * halfHead
                Ops.ropeAngles(position: rows[first + i].position, theta: rope.base, headDim: config.headDimension,
                               frequencyScale: rope.frequencyScale, factors: rope.usesFrequencyFactors ? UnsafePointer(ropeFactors) : nil,
                               cos: ropeCos + at, sin: ropeSin + at)
            }
        }
        for layerIndex in layerList {
            let layer = layers[layerIndex]
            let ropeAt = config.layers[layerIndex].rope * maxStepRows * halfHead
            // Attention block.
            layer.attentionNorm.withUnsafeBufferPointer { w in
                forEachRow(n, NormRows(x: hidden, weight: w.baseAddress!, y: normed, width: e, epsilon: config.rmsEpsilon, kernels: kernels))
            }
            activations.quantize(normed, rows: n, inFeatures: e, pool: pool, kernels: kernels)
            apply(layer.qkv, into: qkvOut, ldy: qkvWidth)
            withOptionalPointers(layer.qkvBias, layer.queryNorm, layer.keyNorm) { bias, qNorm, kNorm in
                forEachRow(n, RopeAndStoreRows(qkv: qkvOut, width: qkvWidth, bias: bias, queryNorm: qNorm, keyNorm: kNorm,
                                               epsilon: config.rmsEpsilon, cos: ropeCos + ropeAt, sin: ropeSin + ropeAt,
                                               neox: config.options.ropeStyle == .neox, queryHeads: config.headCount,
                                               kvHeads: config.kvHeadCount, headDim: config.headDimension,
                                               stepKeys: cache.stepKey(layer: layerIndex, row: 0), stepValues: cache.stepValue(layer: layerIndex, row: 0),
                                               stepRowBytes: cache.rowBytes, firstStepRow: first, type: cache.type, kernels: kernels))
            }
            attend(rows, from: first, layer: layerIndex, cache: cache)
            activations.quantize(attention, rows: n, inFeatures: qd, pool: pool, kernels: kernels)
            layer.output.apply(activations, into: projected, ldy: e, pool: pool, kernels: kernels)
            if let post = layer.postAttentionNorm {
                post.withUnsafeBufferPointer { w in
                    forEachRow(n, NormRows(x: projected, weight: w.baseAddress!, y: projected, width: e, epsilon: config.rmsEpsilon, kernels: kernels))
                }
            }
            for i in 0..<(n * e) { hidden[i] += projected[i] }

            // Feed-forward block.
            layer.ffnNorm.withUnsafeBufferPointer { w in
                forEachRow(n, NormRows(x: hidden, weight: w.baseAddress!, y: normed, width: e, epsilon: config.rmsEpsilon, kernels: kernels))
            }
            activations.quantize(normed, rows: n, inFeatures: e, pool: pool, kernels: kernels)
            apply(layer.gateUp, into: gateUpOut, ldy: 2 * f)
            forEachRow(n, GatedActivationRows(gateUp: gateUpOut, width: f, activation: config.options.activation, kernels: kernels))
            // The gated halves, read in place (row stride 2F).
            activations.quantize(gateUpOut, rows: n, inFeatures: f, ldx: 2 * f, pool: pool, kernels: kernels)
            layer.down.apply(activations, into: projected, ldy: e, pool: pool, kernels: kernels)
            if let post = layer.postFeedForwardNorm {
                post.withUnsafeBufferPointer { w in
                    forEachRow(n, NormRows(x: projected, weight: w.baseAddress!, y: projected, width: e, epsilon: config.rmsEpsilon, kernels: kernels))
                }
            }
            for i in 0..<(n * e) { hidden[i] += projected[i] }
        }

        // Output head, only for the rows that asked.
        var m = 0
        outputNorm.withUnsafeBufferPointer { w in
            for i in 0..<n where rows[first + i].wantsLogits {
                Ops.rmsNorm(hidden + i * e, weight: w.baseAddress!, count: e, epsilon: config.rmsEpsilon, into: logitHidden + m * e,
                            kernels: kernels)
                m += 1
            }
        }
        if m > 0 {
            activations.quantize(logitHidden, rows: m, inFeatures: e, pool: pool, kernels: kernels)
            let head = headTokens ?? config.vocabularySize
            outputHead.apply(activations, outputs: 0..<head, into: logits, ldy: config.vocabularySize, pool: pool, kernels: kernels)
            if let cap = config.finalLogitSoftcap {
                for r in 0..<m {
                    let row = logits + r * config.vocabularySize
                    for t in 0..<head { row[t] = cap * tanhf(row[t] / cap) }
                }
            }
        }
        return m
    }

    /// Applies one fused matrix, or several side by side into the same output rows.
    @inline(__always) private func apply(_ matrices: [LinearWeights], into y: UnsafeMutablePointer<Float>, ldy: Int) {
        var column = 0
        for w in matrices {
            w.apply(activations, into: y + column, ldy: ldy, pool: pool, kernels: kernels)
            column += w.outFeatures
        }
    }

    private func validate(_ rows: [BatchRow], cache: KVCache, computedRows: Int) throws {
        guard !rows.isEmpty else { return }
        guard rows.count <= maxStepRows && rows.count <= cache.maxStepRows else {
            throw ModelError.tooManyRows(requested: rows.count, maximum: min(maxStepRows, cache.maxStepRows))
        }
        let logitRows = rows[computedRows...].reduce(0) { $0 + ($1.wantsLogits ? 1 : 0) }
        guard logitRows <= maxLogitRows else { throw ModelError.tooManyRows(requested: logitRows, maximum: maxLogitRows) }
        for (i, row) in rows.enumerated() {
            guard row.slot >= 0 && row.slot < cache.slotCount else { throw ModelError.invalidSlot(row.slot, slotCount: cache.slotCount) }
            guard row.token >= 0 && Int(row.token) < config.vocabularySize else {
                throw ModelError.invalidToken(row.token, vocabularySize: config.vocabularySize)
            }
            if row.parent >= 0 {
                guard row.parent < i, rows[row.parent].slot == row.slot, rows[row.parent].position == row.position - 1 else {
                    throw ModelError.invalidParent(row: i, parent: row.parent)
                }
            } else {
                guard row.position == cache.lengths[row.slot] else { throw ModelError.invalidParent(row: i, parent: row.parent) }
            }
            guard row.position < cache.capacity else {
                throw ModelError.contextOverflow(slot: row.slot, needed: row.position + 1, capacity: cache.capacity)
            }
        }
    }

    // MARK: - Attention

    /// Positions one attention work unit covers: a row attending to more is split into ranges of
    /// this many (by absolute position, so the split depends on the row alone), computed apart and
    /// merged in order: long rows spread over the threads, and a row's result never depends on
    /// its batch or the thread count.
    static let attentionChunk = 512

    /// Causal attention of every row from `first` on over its slot's cached positions and its
    /// ancestors (on a sliding-window layer, only the last `window` of them: positions
    /// position - window + 1 ... position). Work units are (row, key/value head, position range)
    /// with all the head's query heads; a pair with one range from position 0 writes its output
    /// directly, others are merged after.
    private func attend(_ rows: [BatchRow], from first: Int, layer: Int, cache: KVCache) {
        let n = rows.count - first
        let window = config.layers[layer].window
        // The units, row-major; a unit of a long or windowed row records where its partial result goes.
        var count = 0, partials = 0
        for i in 0..<n {
            let position = rows[first + i].position
            let low = window.map { max(0, position - $0 + 1) } ?? 0
            let firstChunk = low / Self.attentionChunk
            let chunks = position / Self.attentionChunk - firstChunk + 1
            let split = chunks > 1 || low > 0
            for h in 0..<config.kvHeadCount {
                for c in 0..<chunks {
                    let chunk = firstChunk + c
                    attentionUnits[count] = AttentionUnit(row: Int32(i), head: Int32(h), chunk: Int32(chunk), chunks: Int32(chunks),
                                                          partial: split ? Int32(partials + c) : -1,
                                                          begin: Int32(max(low, chunk * Self.attentionChunk)))
                    count += 1
                }
                if split { partials += chunks }
            }
        }
        rows.withUnsafeBufferPointer { rowsBuffer in
            let task = AttentionTask(model: self, rows: rowsBuffer.baseAddress!, first: first, units: count, layer: layer, cache: cache)
            pool.run(items: min(attentionItems, count), task: task)
        }
        guard partials > 0 else { return }
        // Merge the ranges of long (row, head) pairs, in position order.
        let group = config.groupSize, headDim = config.headDimension, e = config.queryDimension
        var u = 0
        while u < count {
            let unit = attentionUnits[u]
            if unit.partial >= 0 {
                let p = Int(unit.partial)
                Ops.attendMerge(group: group, headDim: headDim, parts: Int(unit.chunks), acc: partialAcc + p * group * headDim,
                                maxSum: partialMaxSum + p * group * 2,
                                out: attention + Int(unit.row) * e + Int(unit.head) * group * headDim)
            }
            u += Int(unit.chunks)
        }
    }
}

/// One unit of a layer's attention: positions `begin ..< min(n, (chunk + 1) * attentionChunk)` of
/// step row `first + row` for key/value head `head` (`begin` is `chunk * attentionChunk`, or the
/// window's first position in the window's first chunk); `partial` >= 0 is the slot of its
/// unnormalised result when the pair's result is merged from ranges (-1: one range from position
/// 0, written directly); `chunks` is the pair's number of ranges.
struct AttentionUnit {
    var row: Int32
    var head: Int32
    var chunk: Int32
    var chunks: Int32
    var partial: Int32
    var begin: Int32
}

/// One layer's attention as pool work: item i takes units i, i + items, i + 2 items, ... and uses
/// scratch slice i (items never exceed `attentionItems`).
private struct AttentionTask: ThreadPoolTask {
    // unowned(unsafe): the task lives only inside `attend`, while both are alive (plain unowned
    // references cost an atomic retain and release per access).
    unowned(unsafe) let model: Transformer
    let rows: UnsafePointer<BatchRow>
    let first: Int
    let units: Int
    let layer: Int
    unowned(unsafe) let cache: KVCache

    func run(item: Int, items: Int) {
        let config = model.config
        let headDim = config.headDimension, e = config.queryDimension
        let qkvWidth = e + 2 * config.kvDimension
        let group = config.groupSize
        let scale = config.attentionScale
        let scores = model.scores + item * model.scoreStride * group
        let chainKeys = model.chainKeys + item * model.maxStepRows
        let chainValues = model.chainValues + item * model.maxStepRows
        var lastRow = -1
        var chainLength = 0
        var w = item
        while w < units {
            let unit = model.attentionUnits[w]
            let local = Int(unit.row), h = Int(unit.head)
            let r = first + local
            let row = rows[r]
            if r != lastRow {
                // Ancestors root first, then the row itself.
                chainLength = 0
                var a = r
                while a >= 0 { chainLength += 1; a = rows[a].parent }
                a = r
                var c = chainLength - 1
                while a >= 0 {
                    chainKeys[c] = UnsafePointer(cache.stepKey(layer: layer, row: a).assumingMemoryBound(to: UInt8.self))
                    chainValues[c] = UnsafePointer(cache.stepValue(layer: layer, row: a).assumingMemoryBound(to: UInt8.self))
                    c -= 1
                    a = rows[a].parent
                }
                lastRow = r
            }
            let view = KVView(format: cache.type.rowFormat, headDimension: headDim, keys: cache.keys, values: cache.values,
                              table: cache.table(slot: row.slot), blockSize: cache.blockSize, blockStride: cache.blockStride,
                              layerOffset: cache.headOffset(layer: layer, head: h), cachedCount: cache.lengths[row.slot],
                              chainKeys: chainKeys, chainValues: chainValues, chainOffset: h * cache.headRowBytes,
                              chainCount: chainLength)
            let q = model.qkvOut + local * qkvWidth + h * group * headDim
            if unit.partial < 0 {
                Ops.attend(q: q, group: group, headDim: headDim, scale: scale, view: view, scores: scores,
                           out: model.attention + local * e + h * group * headDim, kernels: model.kernels)
            } else {
                let n = row.position + 1
                let begin = Int(unit.begin)
                let p = Int(unit.partial)
                Ops.attendRange(q: q, group: group, headDim: headDim, scale: scale, view: view, begin: begin,
                                end: min(n, (Int(unit.chunk) + 1) * Transformer.attentionChunk), scores: scores,
                                acc: model.partialAcc + p * group * headDim, maxSum: model.partialMaxSum + p * group * 2,
                                kernels: model.kernels)
            }
            w += items
        }
    }
}
