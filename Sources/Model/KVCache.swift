import Kernels

/// How cached keys and values are stored (as llama.cpp's `--cache-type-k/v`): `f16` (default:
/// half the bytes of f32, exact f16 rounding of each value), `q8_0` (int8 values with one f16 scale
/// per 32, about a quarter of f32; needs head dimensions that are multiples of 32) or `f32`.
public enum KVCacheType: String, CaseIterable, Sendable, Codable {
    case f32, f16, q8_0

    /// Parses a name (`f32`, `f16`, `q8_0`, any case); throws `ModelError.unknownKVCacheType`.
    public init(parsing text: String) throws {
        guard let t = KVCacheType(rawValue: text.lowercased()) else { throw ModelError.unknownKVCacheType(text) }
        self = t
    }

    /// Checks that rows made of heads of `headDimension` values can use this type; throws
    /// `ModelError.kvCacheTypeNeedsBlocks`.
    public func validate(headDimension: Int) throws {
        if self == .q8_0 && headDimension % 32 != 0 {
            throw ModelError.kvCacheTypeNeedsBlocks(type: rawValue, headDimension: headDimension)
        }
    }

    /// The kernels' layout of one head row of this type.
    public var rowFormat: KVRowFormat {
        switch self {
        case .f32: return .f32
        case .f16: return .f16
        case .q8_0: return .q8_0
        }
    }
}

/// Key/value storage in fixed-size blocks shared by `slotCount` sequences, with prefix reuse.
///
/// Layout: keys and values are stored per head row (the `headDimension` values of one key/value
/// head at one position, as `type`: f16 by default; `headRowBytes` bytes). A pool of `blockCount`
/// blocks, each `[layer][kvHead][blockSize]` head rows of keys (and the same of values), so the rows
/// one attention head reads are contiguous within a block. A slot owns a block table; position p of
/// a slot lives in block `table[p / blockSize]` at row `p % blockSize`. A step's new rows first write
/// their keys and values to the step area (`[layer][row]`, each row its heads' head rows in order:
/// the same bytes, so a row attends to an ancestor in the step exactly as it will once that ancestor
/// is cached); after the step the caller commits the rows it keeps (a prefill chain, or a verified
/// draft path), which copies their bytes to the slot.
///
/// Prefix reuse: full blocks are registered under a hash of all tokens up to their end, so a
/// later sequence whose prompt starts with the same tokens attaches those blocks instead of
/// recomputing them. Blocks are reference counted; a registered block nobody holds stays cached
/// until its space is needed (least recently released first). Reused keys and values are
/// bit-identical to recomputed ones (rows are computed independently of their batch).
///
/// Owned by one thread at a time (the engine thread): not thread-safe.
public final class KVCache {
    public let slotCount: Int
    /// Most positions one slot may hold.
    public let capacity: Int
    public let layerCount: Int
    public let kvDimension: Int
    /// Values per key/value head (kvDimension = heads x headDimension).
    public let headDimension: Int
    public let maxStepRows: Int
    public let blockSize: Int
    public let blockCount: Int
    /// How keys and values are stored.
    public let type: KVCacheType
    /// Bytes of one stored head row (one head's keys, or values, at one position).
    public let headRowBytes: Int
    /// Bytes of one step row (every head of one layer's keys, or values, at one position).
    public let rowBytes: Int
    /// Cached positions per slot.
    public private(set) var lengths: [Int]

    let keys: UnsafeMutableRawPointer
    let values: UnsafeMutableRawPointer
    let stepKeys: UnsafeMutableRawPointer
    let stepValues: UnsafeMutableRawPointer
    /// Bytes per block (all layers).
    let blockStride: Int
    /// Bytes per layer inside a block.
    let layerStride: Int
    /// Bytes per key/value head inside a layer of a block.
    let headStride: Int
    /// `[slot][maxBlocksPerSlot]` block ids.
    let tables: UnsafeMutablePointer<Int32>
    let maxBlocksPerSlot: Int

    private var references: [Int32]
    private var freeBlocks: [Int32]
    /// Registered full blocks: prefix hash -> block, and back.
    private var prefixIndex: [UInt64: Int32] = [:]
    private var blockHash: [UInt64?]
    /// Registered blocks with no holder, least recently released first (candidates for eviction).
    private var idleCached: [Int32] = []
    /// Token ids of each slot's positions (for prefix registration).
    private var slotTokens: [[Int32]]

    /// Prefix-cache counters since creation.
    public private(set) var prefixLookups = 0
    public private(set) var prefixHitTokens = 0
    public private(set) var prefixLookupTokens = 0

    /// - Parameter blockCount: blocks in the pool; default: enough for every slot to be full.
    /// - Parameter blockSize: positions per block, a power of two.
    public init(slotCount: Int, capacity: Int, layerCount: Int, kvDimension: Int, headDimension: Int, maxStepRows: Int,
                blockSize: Int = 16, blockCount: Int? = nil, type: KVCacheType = .f16) {
        precondition(slotCount > 0 && capacity > 0 && maxStepRows > 0 && blockSize > 0 && blockSize & (blockSize - 1) == 0)
        precondition(headDimension > 0 && kvDimension % headDimension == 0)
        self.slotCount = slotCount
        self.capacity = capacity
        self.layerCount = layerCount
        self.kvDimension = kvDimension
        self.headDimension = headDimension
        self.maxStepRows = maxStepRows
        self.blockSize = blockSize
        self.type = type
        headRowBytes = type.rowFormat.rowBytes(values: headDimension)
        rowBytes = kvDimension / headDimension * headRowBytes
        maxBlocksPerSlot = (capacity + blockSize - 1) / blockSize
        let blocks = blockCount ?? slotCount * maxBlocksPerSlot
        self.blockCount = blocks
        lengths = Array(repeating: 0, count: slotCount)
        headStride = blockSize * headRowBytes
        layerStride = blockSize * rowBytes
        blockStride = layerCount * layerStride
        // Left uninitialized on purpose: attention reads only positions below a slot's length,
        // all written by commit, and untouched pages of a large allocation cost no memory.
        keys = .allocate(byteCount: max(1, blocks * blockStride), alignment: 64)
        values = .allocate(byteCount: max(1, blocks * blockStride), alignment: 64)
        let stepTotal = layerCount * maxStepRows * rowBytes
        stepKeys = .allocate(byteCount: stepTotal, alignment: 64)
        stepValues = .allocate(byteCount: stepTotal, alignment: 64)
        stepKeys.initializeMemory(as: UInt8.self, repeating: 0, count: stepTotal)
        stepValues.initializeMemory(as: UInt8.self, repeating: 0, count: stepTotal)
        tables = .allocate(capacity: slotCount * maxBlocksPerSlot)
        tables.initialize(repeating: -1, count: slotCount * maxBlocksPerSlot)
        references = Array(repeating: 0, count: blocks)
        freeBlocks = (0..<Int32(blocks)).reversed()
        blockHash = Array(repeating: nil, count: blocks)
        // Room for every position up front: committing a token never reallocates.
        slotTokens = (0..<slotCount).map { _ in
            var tokens: [Int32] = []
            tokens.reserveCapacity(capacity)
            return tokens
        }
    }

    deinit {
        keys.deallocate()
        values.deallocate()
        stepKeys.deallocate()
        stepValues.deallocate()
        tables.deallocate()
    }

    /// Bytes reserved by the cache (virtual; pages are touched as positions are written).
    public var byteCount: Int { 2 * blockCount * blockStride + 2 * layerCount * maxStepRows * rowBytes }

    /// Bytes one cached position takes (keys and values of every layer).
    public var bytesPerPosition: Int { 2 * layerCount * rowBytes }

    /// Blocks holding live positions of some slot.
    public var usedBlocks: Int { blockCount - freeBlocks.count - idleCached.count }
    /// Blocks that can be handed out now (free, or cached and evictable).
    public var availableBlocks: Int { freeBlocks.count + idleCached.count }
    /// Registered prefix blocks nobody holds (kept for reuse until their space is needed).
    public var cachedIdleBlocks: Int { idleCached.count }

    /// Blocks a slot needs to hold `positions` positions.
    public func blocksNeeded(positions: Int) -> Int { (positions + blockSize - 1) / blockSize }

    // MARK: - Addressing (used by the forward pass)

    @inline(__always) func block(slot: Int, position: Int) -> Int {
        Int(tables[slot * maxBlocksPerSlot + position / blockSize])
    }

    /// The head row of `head` at `position` of `slot` in `layer`, keys (values: `values`).
    @inline(__always) func cachedRow(slot: Int, layer: Int, head: Int, position: Int, values: Bool) -> UnsafeMutableRawPointer {
        (values ? self.values : keys) + block(slot: slot, position: position) * blockStride + layer * layerStride
            + head * headStride + (position % blockSize) * headRowBytes
    }

    /// Byte offset of `layer`'s rows of `head` inside a block (for attention views).
    @inline(__always) func headOffset(layer: Int, head: Int) -> Int { layer * layerStride + head * headStride }

    @inline(__always) func stepKey(layer: Int, row: Int) -> UnsafeMutableRawPointer {
        stepKeys + (layer * maxStepRows + row) * rowBytes
    }

    @inline(__always) func stepValue(layer: Int, row: Int) -> UnsafeMutableRawPointer {
        stepValues + (layer * maxStepRows + row) * rowBytes
    }

    /// Position `position` of `slot`, layer `layer`, as f32 (keys, or values with `values`), for tests.
    public func cachedRow(slot: Int, layer: Int, position: Int, values: Bool = false) -> [Float] {
        precondition(position < lengths[slot])
        var out = [Float](repeating: 0, count: kvDimension)
        for h in 0..<(kvDimension / headDimension) {
            out.withUnsafeMutableBufferPointer {
                Ops.loadKV(cachedRow(slot: slot, layer: layer, head: h, position: position, values: values),
                           headDimension: headDimension, as: type.rowFormat, into: $0.baseAddress! + h * headDimension)
            }
        }
        return out
    }

    /// The slot's block table (valid until the next change of the slot).
    @inline(__always) func table(slot: Int) -> UnsafeMutablePointer<Int32> { tables + slot * maxBlocksPerSlot }

    // MARK: - Blocks

    /// Takes a block: a free one, else the least recently released cached one (evicting it).
    private func takeBlock() -> Int32? {
        if let b = freeBlocks.popLast() { return b }
        guard !idleCached.isEmpty else { return nil }
        let b = idleCached.removeFirst()
        if let h = blockHash[Int(b)] { prefixIndex[h] = nil }
        blockHash[Int(b)] = nil
        return b
    }

    private func retain(_ b: Int32) {
        if references[Int(b)] == 0, blockHash[Int(b)] != nil, let i = idleCached.firstIndex(of: b) { idleCached.remove(at: i) }
        references[Int(b)] += 1
    }

    private func release(_ b: Int32) {
        references[Int(b)] -= 1
        precondition(references[Int(b)] >= 0, "block \(b) released more often than retained")
        if references[Int(b)] == 0 {
            if blockHash[Int(b)] != nil { idleCached.append(b) } else { freeBlocks.append(b) }
        }
    }

    /// Makes sure `slot` has blocks for `positions` positions. Returns false (allocating nothing)
    /// when the pool cannot supply them; the caller may free space (preempt) and retry.
    @discardableResult
    public func reserve(slot: Int, positions: Int) -> Bool {
        guard positions <= capacity else { return false }
        let have = blocksNeeded(positions: lengths[slot])
        let extra = blocksNeeded(positions: positions) - have
        guard extra > 0 else { return true }
        // Blocks past the length may already be reserved from an earlier call.
        let t = table(slot: slot)
        var missing = 0
        for i in have..<(have + extra) where t[i] < 0 { missing += 1 }
        guard missing <= availableBlocks else { return false }
        for i in have..<(have + extra) where t[i] < 0 {
            let b = takeBlock()!
            retain(b)
            t[i] = b
        }
        return true
    }

    /// Appends the keys and values of step rows `rows` (in order) to `slot`'s positions, with
    /// their token ids (for prefix registration). `rows` must be a root-first path (or chain).
    /// Allocates nothing.
    public func commit(slot: Int, rows: some Collection<Int>, tokens: some Collection<Int32>) throws {
        try append(slot: slot, rows: rows)
        // Contiguous collections (arrays) through their buffer: iterating an unspecialized generic
        // Array allocates a coroutine frame per element.
        let appended: Bool? = tokens.withContiguousStorageIfAvailable { buffer in
            for t in buffer { slotTokens[slot].append(t) }
            return true
        }
        if appended == nil {
            for t in tokens { slotTokens[slot].append(t) }
        }
    }

    /// Commit without token ids (no prefix registration possible for these positions' blocks).
    public func commit(slot: Int, rows: some Collection<Int>) throws {
        try append(slot: slot, rows: rows)
        for _ in 0..<rows.count { slotTokens[slot].append(-1) }
    }

    /// Copies step rows `rows` to `slot`'s next positions (the keys and values of `commit`).
    private func append(slot: Int, rows: some Collection<Int>) throws {
        if let done = try rows.withContiguousStorageIfAvailable({ try copy(slot: slot, rows: $0) }) { return done }
        try copy(slot: slot, rows: rows)
    }

    private func copy(slot: Int, rows: some Collection<Int>) throws {
        guard slot >= 0 && slot < slotCount else { throw ModelError.invalidSlot(slot, slotCount: slotCount) }
        guard lengths[slot] + rows.count <= capacity else {
            throw ModelError.contextOverflow(slot: slot, needed: lengths[slot] + rows.count, capacity: capacity)
        }
        guard reserve(slot: slot, positions: lengths[slot] + rows.count) else {
            throw ModelError.outOfCacheBlocks(slot: slot, needed: blocksNeeded(positions: lengths[slot] + rows.count), available: availableBlocks)
        }
        var position = lengths[slot]
        for row in rows {
            precondition(row >= 0 && row < maxStepRows, "step row \(row) out of range")
            for layer in 0..<layerCount {
                let k = stepKey(layer: layer, row: row), v = stepValue(layer: layer, row: row)
                for h in 0..<(kvDimension / headDimension) {
                    cachedRow(slot: slot, layer: layer, head: h, position: position, values: false)
                        .copyMemory(from: k + h * headRowBytes, byteCount: headRowBytes)
                    cachedRow(slot: slot, layer: layer, head: h, position: position, values: true)
                        .copyMemory(from: v + h * headRowBytes, byteCount: headRowBytes)
                }
            }
            position += 1
        }
        lengths[slot] = position
    }

    /// Drops positions of `slot` from `length` on (e.g. to rewind), releasing whole blocks.
    public func truncate(slot: Int, to length: Int) {
        precondition(length >= 0 && length <= lengths[slot])
        let t = table(slot: slot)
        let keep = blocksNeeded(positions: length)
        for i in keep..<maxBlocksPerSlot where t[i] >= 0 {
            release(t[i])
            t[i] = -1
        }
        lengths[slot] = length
        slotTokens[slot].removeLast(slotTokens[slot].count - length)
    }

    /// Frees the slot for a new sequence.
    public func reset(slot: Int) { truncate(slot: slot, to: 0) }

    // MARK: - Prefix reuse

    /// Hash of a prefix ending at a block boundary, chained block by block (FNV-1a over token ids).
    static func chainHash(_ previous: UInt64, _ tokens: ArraySlice<Int32>) -> UInt64 {
        var h = previous ^ 0xCBF2_9CE4_8422_2325
        for t in tokens {
            var v = UInt32(bitPattern: t)
            for _ in 0..<4 {
                h ^= UInt64(v & 0xFF)
                h = h &* 0x0000_0100_0000_01B3
                v >>= 8
            }
        }
        return h
    }

    /// Registers `slot`'s full blocks (whose token ids are all known) for reuse by later prompts.
    public func registerPrefix(slot: Int) {
        let tokens = slotTokens[slot]
        let t = table(slot: slot)
        var h: UInt64 = 0
        for i in 0..<(lengths[slot] / blockSize) {
            let slice = tokens[(i * blockSize)..<((i + 1) * blockSize)]
            if slice.contains(-1) { return }
            h = Self.chainHash(h, slice)
            let b = t[i]
            if prefixIndex[h] == nil && blockHash[Int(b)] == nil {
                prefixIndex[h] = b
                blockHash[Int(b)] = h
            }
        }
    }

    /// Attaches the longest registered prefix of `tokens` to the empty `slot`, leaving at least
    /// one token to compute (its logits start the generation). Returns the positions attached.
    public func attachPrefix(slot: Int, tokens: [Int32]) -> Int {
        precondition(lengths[slot] == 0, "attachPrefix needs an empty slot")
        prefixLookups += 1
        prefixLookupTokens += tokens.count
        let t = table(slot: slot)
        var h: UInt64 = 0
        var blocks = 0
        while (blocks + 1) * blockSize < tokens.count {
            h = Self.chainHash(h, tokens[(blocks * blockSize)..<((blocks + 1) * blockSize)])
            guard let b = prefixIndex[h] else { break }
            retain(b)
            t[blocks] = b
            blocks += 1
        }
        lengths[slot] = blocks * blockSize
        slotTokens[slot].removeAll(keepingCapacity: true)
        slotTokens[slot].append(contentsOf: tokens.prefix(lengths[slot]))
        prefixHitTokens += lengths[slot]
        return lengths[slot]
    }
}
