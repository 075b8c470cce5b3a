import Foundation

/// The responses `POST /v1/responses` stored (`store`, true unless the request says false), so
/// `previous_response_id` can continue one, `GET` / `DELETE /v1/responses/{id}` can read or
/// remove it and `GET /v1/responses/{id}/input_items` can list its input. Bounded: it keeps the
/// latest `capacity` responses (config `responses_store_size`) and forgets the oldest first; a
/// capacity of 0 stores nothing.
///
/// Thread-safe (one lock): handlers on connection threads store and read concurrently.
public final class ResponseStore: @unchecked Sendable {
    /// One stored response: its body as sent, and the conversation up to and including its
    /// output (without the request's `instructions`, which a continuation does not inherit).
    struct Entry {
        var body: Data
        var conversation: [APIMessage]
        /// The request's own `input` items, for `GET /v1/responses/{id}/input_items`.
        var input: [ResponsesRequest.InputItem] = []
    }

    let capacity: Int
    private let lock = NSLock()
    private var entries: [String: Entry] = [:]
    /// Ids in the order they were stored (oldest first).
    private var order: [String] = []

    public init(capacity: Int) {
        self.capacity = max(0, capacity)
    }

    /// Stores `entry` under `id`, forgetting the oldest response beyond the capacity.
    func store(_ id: String, _ entry: Entry) {
        guard capacity > 0 else { return }
        lock.lock()
        defer { lock.unlock() }
        if entries.updateValue(entry, forKey: id) == nil { order.append(id) }
        while order.count > capacity {
            entries[order.removeFirst()] = nil
        }
    }

    /// The response stored under `id`, if it is still kept.
    func entry(_ id: String) -> Entry? {
        lock.lock()
        defer { lock.unlock() }
        return entries[id]
    }

    /// Removes `id`; false when it was not stored.
    func remove(_ id: String) -> Bool {
        lock.lock()
        defer { lock.unlock() }
        guard entries.removeValue(forKey: id) != nil else { return false }
        order.removeAll { $0 == id }
        return true
    }

    /// How many responses are kept now.
    var count: Int {
        lock.lock()
        defer { lock.unlock() }
        return entries.count
    }
}
