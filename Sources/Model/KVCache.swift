/// Key/value storage for `slotCount` sequences of up to `capacity` positions each.
///
/// Layout: keys and values are `[slot][layer][position][kvDimension]` floats. A step's new rows
/// first write their keys and values to the step area (`[layer][row][kvDimension]`); after the
/// step the caller commits the rows it keeps (a prefill chain, or a verified draft path), which
/// appends them to their slot's cached positions. Rows not committed are dropped.
///
/// Owned by one forward pass at a time: not thread-safe.
public final class KVCache {
    public let slotCount: Int
    public let capacity: Int
    public let layerCount: Int
    public let kvDimension: Int
    public let maxStepRows: Int
    /// Cached positions per slot.
    public private(set) var lengths: [Int]

    let keys: UnsafeMutablePointer<Float>
    let values: UnsafeMutablePointer<Float>
    let stepKeys: UnsafeMutablePointer<Float>
    let stepValues: UnsafeMutablePointer<Float>
    private let slotStride: Int
    private let layerStride: Int

    public init(slotCount: Int, capacity: Int, layerCount: Int, kvDimension: Int, maxStepRows: Int) {
        precondition(slotCount > 0 && capacity > 0 && maxStepRows > 0)
        self.slotCount = slotCount
        self.capacity = capacity
        self.layerCount = layerCount
        self.kvDimension = kvDimension
        self.maxStepRows = maxStepRows
        lengths = Array(repeating: 0, count: slotCount)
        layerStride = capacity * kvDimension
        slotStride = layerCount * layerStride
        let total = slotCount * slotStride
        // Left uninitialized on purpose: attention reads only positions below a slot's length,
        // all written by commit, and untouched pages of a large allocation cost no memory.
        keys = .allocate(capacity: total)
        values = .allocate(capacity: total)
        let stepTotal = layerCount * maxStepRows * kvDimension
        stepKeys = .allocate(capacity: stepTotal)
        stepValues = .allocate(capacity: stepTotal)
        stepKeys.initialize(repeating: 0, count: stepTotal)
        stepValues.initialize(repeating: 0, count: stepTotal)
    }

    deinit {
        keys.deallocate()
        values.deallocate()
        stepKeys.deallocate()
        stepValues.deallocate()
    }

    /// Bytes held by the cache, for start-up reports.
    public var byteCount: Int { (2 * slotCount * slotStride + 2 * layerCount * maxStepRows * kvDimension) * MemoryLayout<Float>.size }

    @inline(__always) func cachedKey(slot: Int, layer: Int, position: Int) -> UnsafeMutablePointer<Float> {
        keys + slot * slotStride + layer * layerStride + position * kvDimension
    }

    @inline(__always) func cachedValue(slot: Int, layer: Int, position: Int) -> UnsafeMutablePointer<Float> {
        values + slot * slotStride + layer * layerStride + position * kvDimension
    }

    @inline(__always) func stepKey(layer: Int, row: Int) -> UnsafeMutablePointer<Float> {
        stepKeys + (layer * maxStepRows + row) * kvDimension
    }

    @inline(__always) func stepValue(layer: Int, row: Int) -> UnsafeMutablePointer<Float> {
        stepValues + (layer * maxStepRows + row) * kvDimension
    }

    /// Appends the keys and values of step rows `rows` (in order) to `slot`'s cached positions.
    /// Call after a forward step; `rows` must be a root-first path (or chain) of that step.
    public func commit(slot: Int, rows: some Collection<Int>) throws {
        guard slot >= 0 && slot < slotCount else { throw ModelError.invalidSlot(slot, slotCount: slotCount) }
        guard lengths[slot] + rows.count <= capacity else {
            throw ModelError.contextOverflow(slot: slot, needed: lengths[slot] + rows.count, capacity: capacity)
        }
        var position = lengths[slot]
        for row in rows {
            precondition(row >= 0 && row < maxStepRows, "step row \(row) out of range")
            for layer in 0..<layerCount {
                cachedKey(slot: slot, layer: layer, position: position).update(from: stepKey(layer: layer, row: row), count: kvDimension)
                cachedValue(slot: slot, layer: layer, position: position).update(from: stepValue(layer: layer, row: row), count: kvDimension)
            }
            position += 1
        }
        lengths[slot] = position
    }

    /// Drops cached positions of `slot` from `length` on (e.g. to rewind or free a slot).
    public func truncate(slot: Int, to length: Int) {
        precondition(length >= 0 && length <= lengths[slot])
        lengths[slot] = length
    }

    /// Frees the slot for a new sequence.
    public func reset(slot: Int) { lengths[slot] = 0 }
}
