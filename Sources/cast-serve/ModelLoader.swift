import ArgumentParser
import ChatTemplate
import Engine
import Foundation
import GGUF
import Kernels
import Logging
import Model
import OpenAI
import Speculation

/// Loads one model of the list into a serving `OpenAIService`: weights on the shared kernel pool,
/// chat template, KV cache, drafter and step-cost model, engine, metrics. Progress goes to stderr.
struct ModelLoader: Sendable {
    let threads: Int
    /// The kernel pool every model's transformer shares, and the turn their engines take per step.
    let pool: ThreadPool
    let gate: StepGate
    let recalibrate: Bool
    let fixedCost: CostModel?
    /// The registry every model's metrics join (`ServerMetrics.sibling(model:)`).
    let metrics: ServerMetrics
    /// The `/v1/responses` store every model's service shares (`responses_store_size`).
    let responseStore: ResponseStore
    let logger: Logger

    func load(_ slot: ModelRegistry.Slot) throws -> ModelRegistry.Loaded {
        let settings = slot.settings
        let id = slot.entry.id
        let clock = ContinuousClock()
        let t0 = clock.now
        note("loading \(id) from \(settings.model)")
        let file = try GGUFFile(path: settings.model)
        let transformer = try Transformer(file: file, threads: threads, maxStepRows: settings.maxStepRows, maxLogitRows: max(settings.slots, 128),
                                          maxContext: settings.contextLength, kernels: slot.kernels, pool: pool, gate: gate)
        try settings.kvCacheType.validate(headDimension: transformer.config.headDimension)
        note(String(format: "%@: weights loaded: %@ %@, %d layers, %.1f MB of weights, resident %.0f MB, %.2f s", id,
                    transformer.config.architecture, transformer.config.quantization, transformer.config.layerCount,
                    Double(transformer.weightBytes) / 1e6, Double(residentBytes()) / 1e6, (clock.now - t0).seconds))
        let contextLength = min(settings.contextLength, transformer.config.contextLength)
        let formatter = try PromptFormatter(file: file, templateOverride: settings.chatTemplate)
        let slots = settings.slots
        let blockSize = 16
        let kvBlocks = settings.kvCacheTokens > 0 ? max((settings.kvCacheTokens + blockSize - 1) / blockSize, (contextLength + blockSize - 1) / blockSize) : nil
        var engineConfig = EngineConfiguration(
            slots: slots, contextLength: contextLength, maxWaiting: settings.maxWaitingRequests,
            prefillChunk: max(1, settings.maxStepRows - slots), kvBlocks: kvBlocks, blockSize: blockSize,
            speculation: settings.speculation)
        engineConfig.kvCacheType = settings.kvCacheType
        engineConfig.drafter = DrafterKind(rawValue: settings.drafter) ?? .recycle
        engineConfig.maxDraftNodes = settings.maxDraftNodes
        engineConfig.maxDraftDepth = settings.maxDraftDepth
        if settings.speculation, let path = settings.learnedDrafterPath {
            let weights = try LearnedDrafterWeights(path: path, target: transformer)
            engineConfig.learnedDrafter = weights
            note(String(format: "%@: learned drafter: %@ (%d draft tokens, MLP width %d, %.1f MB as %@)", id, path, weights.vocabularyCount,
                        weights.feedForwardLength, Double(weights.weightBytes) / 1e6, weights.matrixFormat.description))
            // Another file of the same model (re-quantized) still works: a warning, not an error.
            if let sha = sha256(file: settings.model), sha != weights.targetSHA256 {
                note("warning: the learned drafter was trained on a model file with sha256 \(weights.targetSHA256), not this one (\(sha)); "
                     + "it drafts, but its acceptance may be lower: train one for this file (drafters/README.md)")
            }
        } else if settings.speculation && settings.drafter == "learned" {
            throw ValidationError("--drafter learned needs a drafter file: pass --drafter-model PATH (\"drafter_model\"), or put drafters/<model file stem>.drafter.gguf in place")
        }
        if settings.speculation {
            try CastServe.Serve.prepareCostModel(&engineConfig, settings: settings, kernels: slot.kernels, recalibrate: recalibrate, fixed: fixedCost)
        }
        let engine = Engine(model: transformer, configuration: engineConfig)
        let service = OpenAIService(
            settings: ServiceSettings(modelAliases: slot.entry.aliases, apiKeys: settings.apiKeys, defaultMaxTokens: settings.defaultMaxTokens,
                                      samplingDefaults: settings.samplingDefaults, responsesStoreSize: settings.responsesStoreSize,
                                      reasoningFormat: settings.reasoningFormat),
            metrics: metrics.sibling(model: id), logger: logger, responseStore: responseStore)
        let stepMetrics = service.metrics
        let stepHistory = service.stepHistory
        engine.onStep = { report in
            stepMetrics.record(step: report)
            stepHistory.record(report)
        }
        service.setReady(Backend(engine: engine, formatter: formatter, modelID: id, contextLength: contextLength))
        let memoryBytes = transformer.weightBytes + engine.cacheBytes + (engineConfig.learnedDrafter?.weightBytes ?? 0)
        note(String(format: "ready: %@ (%d layers, %.1f MB of weights, %d threads, %@ kernels, %d slots × %d positions, KV cache %@ with %d bytes per position, %d blocks of %d positions = %.0f MB reserved) in %.2f s",
                    id, transformer.config.layerCount, Double(transformer.weightBytes) / 1e6, pool.threadCount,
                    slot.kernels.description, slots, contextLength, settings.kvCacheType.rawValue, engine.cacheBytesPerPosition,
                    engine.snapshot.kvBlocksTotal, blockSize, Double(engine.cacheBytes) / 1e6, (clock.now - t0).seconds))
        return ModelRegistry.Loaded(service: service, engine: engine, memoryBytes: memoryBytes)
    }
}

extension ServerConfig {
    /// This configuration as model `entry` sees it: its file, aliases and overrides. The learned
    /// drafter file (`drafter_model`) is the default model's; another model gets
    /// `drafters/<its file stem>.drafter.gguf` when that exists.
    func applying(_ entry: ModelEntry, isDefault: Bool) -> ServerConfig {
        var c = self
        c.model = entry.path
        c.modelAliases = entry.aliases
        if !isDefault { c.drafterModel = nil }
        if let v = entry.kernels { c.kernels = v }
        if let v = entry.kvCacheType { c.kvCacheType = v }
        if let v = entry.contextLength { c.contextLength = v }
        if let v = entry.slots { c.slots = v }
        if let v = entry.speculation { c.speculation = v }
        if let v = entry.drafter { c.drafter = v }
        return c
    }
}
