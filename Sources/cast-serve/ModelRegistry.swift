import Dispatch
import Engine
import Foundation
import GGUF
import Kernels
import Model
import OpenAI

/// The server's models: which are loaded, loading or not, and the rules that move them between
/// those states. A request for a model that is not loaded loads it (its caller waits, bounded by
/// `model_load_timeout_seconds`; requests for other models keep being served meanwhile);
/// `max_loaded_models` and `memory_budget_bytes` (weights plus KV cache) make room by unloading
/// the least recently used idle model, never one with requests in flight; `keep_alive_seconds`
/// unloads models idle that long. A model that fails to load stays listed with the reason, and is
/// tried again at its next request.
///
/// Thread-safety: all state is under one condition lock; loads and unloads run outside it.
final class ModelRegistry: ModelCatalog, @unchecked Sendable {
    /// A loaded model: its service (with its engine) and what it holds in memory.
    struct Loaded {
        var service: OpenAIService
        var engine: Engine
        /// Weights plus KV cache.
        var memoryBytes: Int
    }

    /// One model of the list and its state.
    final class Slot {
        let entry: ModelEntry
        /// The server's settings with the entry's overrides.
        let settings: ServerConfig
        /// The kernel set it runs on.
        let kernels: KernelSet
        /// From the file's metadata at start (nil when unreadable).
        let config: ModelConfig?
        var memoryBytes: Int
        var loaded: Loaded?
        var loading = false
        /// Counts finished load attempts, so requests waiting on one see how it ended.
        var attempts = 0
        var active = 0
        var lastUsed = ContinuousClock.now
        var lastError: String?
        var loadSeconds: Double?

        init(entry: ModelEntry, settings: ServerConfig, kernels: KernelSet) {
            self.entry = entry
            self.settings = settings
            self.kernels = kernels
            config = (try? GGUFFile(path: entry.path)).flatMap { try? ModelConfig(file: $0) }
            memoryBytes = Self.estimate(path: entry.path, config: config, settings: settings)
        }

        /// Weights plus KV cache before a load: the file's size (the weights, repacked at about
        /// their size) and the cache the settings reserve. Replaced by the measured figure after.
        static func estimate(path: String, config: ModelConfig?, settings: ServerConfig) -> Int {
            let file = URL(fileURLWithPath: path).resolvingSymlinksInPath().path  // a link's own size is not the file's
            let fileBytes = ((try? FileManager.default.attributesOfItem(atPath: file))?[.size] as? Int) ?? 0
            guard let config else { return fileBytes }
            let context = min(settings.contextLength, config.contextLength)
            let positions = settings.kvCacheTokens > 0 ? max(settings.kvCacheTokens, context) : settings.slots * context
            let bytesPerValue: Double = settings.kvCacheType == .f32 ? 4 : settings.kvCacheType == .f16 ? 2 : 34.0 / 32
            return fileBytes + Int(Double(2 * config.layerCount * config.kvDimension * positions) * bytesPerValue)
        }

        var state: ModelStatus.State { loaded != nil ? .loaded : loading ? .loading : .unloaded }
    }

    private let condition = NSCondition()
    private let slots: [Slot]
    private let byName: [String: Slot]
    private let maxLoaded: Int
    private let budgetBytes: Int
    private let keepAlive: Duration?
    private let loadTimeout: Duration
    private let loader: (Slot) throws -> Loaded
    private var draining = false
    private var keepAliveTimer: DispatchSourceTimer?

    /// `settings` of each entry are the server's with the entry's overrides; `loader` loads one.
    init(entries: [(entry: ModelEntry, settings: ServerConfig, kernels: KernelSet)], server: ServerConfig,
         loader: @escaping (Slot) throws -> Loaded) {
        slots = entries.map { Slot(entry: $0.entry, settings: $0.settings, kernels: $0.kernels) }
        var names: [String: Slot] = [:]
        for slot in slots { for name in [slot.entry.id] + slot.entry.aliases { names[name] = slot } }
        byName = names
        maxLoaded = server.maxLoadedModels
        budgetBytes = server.memoryBudgetBytes
        keepAlive = server.keepAliveSeconds.map { .milliseconds(Int($0 * 1000)) }
        loadTimeout = .milliseconds(Int(server.modelLoadTimeoutSeconds * 1000))
        self.loader = loader
    }

    var defaultModelID: String { slots[0].entry.id }

    /// Starts the keep-alive sweep (every second, or a quarter of the keep-alive when shorter).
    func startKeepAlive() {
        guard let keepAlive else { return }
        let timer = DispatchSource.makeTimerSource(queue: .global())
        let period = min(1.0, keepAlive.seconds / 4)
        timer.schedule(deadline: .now() + period, repeating: period)
        timer.setEventHandler { [weak self] in self?.unloadIdle(olderThan: keepAlive) }
        timer.resume()
        keepAliveTimer = timer
    }

    // MARK: - ModelCatalog

    func statuses() -> [ModelStatus] {
        condition.lock()
        defer { condition.unlock() }
        return slots.map { slot in
            let engine = slot.loaded?.engine
            return ModelStatus(
                id: slot.entry.id, aliases: slot.entry.aliases, state: slot.state, architecture: slot.config?.architecture,
                quantization: slot.config?.quantization,
                contextLength: engine?.configuration.contextLength ?? slot.config.map { min(slot.settings.contextLength, $0.contextLength) },
                kernels: slot.kernels.description,
                kvCacheType: slot.settings.kvCacheType.rawValue, memoryBytes: slot.memoryBytes, activeRequests: slot.active,
                lastError: slot.lastError, loadSeconds: slot.loadSeconds)
        }
    }

    func resolve(_ name: String) -> String? { byName[name]?.entry.id }

    func acquire(_ id: String) throws -> OpenAIService {
        guard let slot = byName[id] else { throw OpenAIError.modelNotFound(id, available: slots.map(\.entry.id)) }
        condition.lock()
        defer { condition.unlock() }
        try ensureLoaded(slot)
        slot.active += 1
        slot.lastUsed = .now
        return slot.loaded!.service
    }

    func release(_ id: String) {
        guard let slot = byName[id] else { return }
        condition.lock()
        slot.active -= 1
        slot.lastUsed = .now
        condition.broadcast()
        condition.unlock()
    }

    func loadedService(_ id: String) -> OpenAIService? {
        condition.lock()
        defer { condition.unlock() }
        return byName[id]?.loaded?.service
    }

    func load(_ id: String) throws {
        guard let slot = byName[id] else { throw OpenAIError.modelNotFound(id, available: slots.map(\.entry.id)) }
        condition.lock()
        defer { condition.unlock() }
        try ensureLoaded(slot)
        slot.lastUsed = .now
    }

    func unload(_ id: String) throws {
        guard let slot = byName[id] else { throw OpenAIError.modelNotFound(id, available: slots.map(\.entry.id)) }
        condition.lock()
        guard slot.active == 0 else {
            let active = slot.active
            condition.unlock()
            throw OpenAIError.modelBusy(id, activeRequests: active)
        }
        let victim = slot.loaded
        slot.loaded = nil
        condition.broadcast()
        condition.unlock()
        if let victim { retire(victim, id: id, reason: "unload requested") }
    }

    // MARK: - Loading and eviction

    /// Returns with `slot` loaded (lock held throughout, released while loading or waiting).
    private func ensureLoaded(_ slot: Slot) throws {
        let deadline = ContinuousClock.now + loadTimeout
        var announced = false
        while true {
            if draining { throw OpenAIError.draining }
            if slot.loaded != nil { return }
            if slot.loading {
                if !announced {
                    note("a request for \(slot.entry.id) waits for its load")
                    announced = true
                }
                let attempt = slot.attempts
                while slot.loading && ContinuousClock.now < deadline {
                    _ = condition.wait(until: Date(timeIntervalSinceNow: min(1, max(0.001, (deadline - .now).seconds))))
                }
                if slot.loading {
                    throw OpenAIError.modelLoadTimeout(slot.entry.id, seconds: Int(loadTimeout.seconds))
                }
                if slot.loaded == nil, slot.attempts != attempt, let error = slot.lastError {
                    throw OpenAIError.modelLoadFailed(slot.entry.id, reason: error)
                }
                continue
            }
            let victims = try makeRoom(for: slot)
            slot.loading = true
            condition.unlock()
            for (victim, id) in victims { retire(victim, id: id, reason: "evicted to make room for \(slot.entry.id)") }
            let clock = ContinuousClock()
            let t0 = clock.now
            let result = Result { try loader(slot) }
            condition.lock()
            slot.loading = false
            slot.attempts += 1
            condition.broadcast()
            switch result {
            case .success(let loaded):
                slot.loaded = loaded
                slot.memoryBytes = loaded.memoryBytes
                slot.lastError = nil
                slot.loadSeconds = (clock.now - t0).seconds
                slot.lastUsed = .now
                if budgetBytes > 0 && loaded.memoryBytes > budgetBytes {
                    slot.loaded = nil
                    slot.lastError = Self.overBudget(slot.entry.id, bytes: loaded.memoryBytes, budget: budgetBytes)
                    condition.unlock()
                    retire(loaded, id: slot.entry.id, reason: "over the memory budget")
                    condition.lock()
                    throw OpenAIError.modelLoadFailed(slot.entry.id, reason: slot.lastError!, tooLarge: true)
                }
                note(String(format: "%@ loaded in %.2f s (%.1f MB of weights and KV cache)", slot.entry.id, slot.loadSeconds!,
                            Double(loaded.memoryBytes) / 1e6))
            case .failure(let error):
                slot.lastError = "\(error)"
                note("error: \(slot.entry.id) could not be loaded: \(error)")
                throw OpenAIError.modelLoadFailed(slot.entry.id, reason: "\(error)")
            }
        }
    }

    /// Takes the least recently used idle models off the list of loaded ones until `slot` fits
    /// `max_loaded_models` and the memory budget; returns them for the caller to retire outside
    /// the lock. Throws when `slot` alone exceeds the budget, or when only busy models remain.
    private func makeRoom(for slot: Slot) throws -> [(Loaded, String)] {
        if budgetBytes > 0 && slot.memoryBytes > budgetBytes {
            let reason = Self.overBudget(slot.entry.id, bytes: slot.memoryBytes, budget: budgetBytes)
            slot.lastError = reason
            throw OpenAIError.modelLoadFailed(slot.entry.id, reason: reason, tooLarge: true)
        }
        var victims: [(Loaded, String)] = []
        while true {
            let held = slots.filter { $0.loaded != nil || ($0.loading && $0 !== slot) }
            let bytes = held.reduce(0) { $0 + $1.memoryBytes } + slot.memoryBytes
            let tooMany = maxLoaded > 0 && held.count + 1 > maxLoaded
            let tooBig = budgetBytes > 0 && bytes > budgetBytes
            guard tooMany || tooBig else { return victims }
            guard let victim = held.filter({ $0.loaded != nil && $0.active == 0 }).min(by: { $0.lastUsed < $1.lastUsed }) else {
                // Give back what was taken: those models were idle and stay loaded.
                for (loaded, id) in victims { byName[id]?.loaded = loaded }
                let why = tooMany ? "max_loaded_models (\(maxLoaded)) models are loaded"
                    : String(format: "the loaded models hold %.0f MB of the %.0f MB memory_budget_bytes", Double(bytes - slot.memoryBytes) / 1e6,
                             Double(budgetBytes) / 1e6)
                throw OpenAIError.modelsBusy(slot.entry.id, why: why)
            }
            victims.append((victim.loaded!, victim.entry.id))
            victim.loaded = nil
        }
    }

    /// Unloads the models idle for `age` or more (the keep-alive sweep).
    private func unloadIdle(olderThan age: Duration) {
        condition.lock()
        let now = ContinuousClock.now
        var victims: [(Loaded, String)] = []
        for slot in slots where slot.loaded != nil && slot.active == 0 && now - slot.lastUsed >= age {
            victims.append((slot.loaded!, slot.entry.id))
            slot.loaded = nil
        }
        condition.unlock()
        for (loaded, id) in victims { retire(loaded, id: id, reason: "idle for \(Int(age.seconds)) s (keep_alive_seconds)") }
    }

    /// Stops an unloaded model's engine and lets its memory go (the service's event streams end;
    /// freed heap pages go back to the system).
    private func retire(_ loaded: Loaded, id: String, reason: String) {
        loaded.service.setDraining()
        loaded.engine.shutdown()
        loaded.engine.waitUntilStopped(timeout: .seconds(10))
        loaded.service.metrics.retire()
        _ = trimHeap(0)
        note(String(format: "unloaded %@ (%@), %.1f MB freed", id, reason, Double(loaded.memoryBytes) / 1e6))
    }

    /// Shutting down: no more loads, and the loaded models' services refuse new requests (their
    /// event streams end at once); running requests go on.
    func beginDrain() {
        condition.lock()
        draining = true
        keepAliveTimer?.cancel()
        let services = slots.compactMap { $0.loaded?.service }
        condition.broadcast()
        condition.unlock()
        for service in services { service.setDraining() }
    }

    /// Stops every loaded engine (after `beginDrain` and the HTTP drain).
    func stopEngines() {
        condition.lock()
        let engines = slots.compactMap { $0.loaded?.engine }
        condition.unlock()
        for engine in engines { engine.shutdown() }
        for engine in engines { engine.waitUntilStopped(timeout: .seconds(10)) }
    }

    static func overBudget(_ id: String, bytes: Int, budget: Int) -> String {
        String(format: "the model '%@' needs %.0f MB of weights and KV cache, more than memory_budget_bytes (%.0f MB) allows; raise the budget, "
               + "or lower its slots or context_length", id, Double(bytes) / 1e6, Double(budget) / 1e6)
    }
}

/// glibc's `malloc_trim`: returns the freed heap's whole pages to the system (an unloaded model's
/// buffers below the mmap threshold stay in the heap otherwise). The Glibc module does not export it.
@_silgen_name("malloc_trim")
private func trimHeap(_ pad: Int) -> Int32
