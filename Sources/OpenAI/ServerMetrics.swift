import Engine
import Foundation
import Prometheus

/// One model's Prometheus metrics (GET /metrics), through swift-prometheus: every series carries
/// a `model` label with the model's id, so the metrics of several models live in one shared
/// registry and render as one exposition (the gateway gauges keep vLLM's `model_name` label).
///
/// Thread-safe: the registry's metrics are atomic; label sets are created under a lock.
public final class ServerMetrics: @unchecked Sendable {
    let registry: PrometheusCollectorRegistry
    /// The model these metrics describe ("" for requests no model answered, such as GET /v1/models).
    public let model: String
    private let lock = NSLock()
    private var requestCounters: [String: Counter] = [:]
    let promptTokens: Counter
    /// Prompt tokens reported as `cached_tokens` in usage (keys and values reused from the prefix cache).
    let promptCachedTokens: Counter
    let completionTokens: Counter
    let timeToFirstToken: DurationHistogram
    let requestDuration: DurationHistogram
    let running: Gauge
    let waiting: Gauge
    let tokensPerSecond: Gauge
    let steps: Gauge
    let rows: Gauge
    let stepSeconds: Gauge
    /// Step wall times; the executable wires `Engine.onStep` to it.
    public let stepDuration: DurationHistogram
    let kvBlocksUsed: Gauge
    let kvBlocksFree: Gauge
    let kvBlocksCached: Gauge
    let prefixLookupTokens: Gauge
    let prefixHitTokens: Gauge
    let prefixHitRate: Gauge
    let preemptions: Gauge
    let draftedTokens: Gauge
    let acceptedTokens: Gauge
    let speculativeSteps: Gauge
    let acceptedPerStep: ValueHistogram
    let treeRows: ValueHistogram
    let costError: ValueHistogram
    let plannedGoodput: Gauge
    let plainGoodput: Gauge
    /// The gauges the Kubernetes Gateway API Inference Extension's endpoint picker scrapes, under the
    /// names its model-server protocol gives for vLLM-compatible servers (README, "Behind the inference
    /// gateway"); set once the model is known (`recordModel`).
    private var gateway: GatewayGauges?

    /// `vllm:num_requests_waiting`, `vllm:num_requests_running` and `vllm:kv_cache_usage_perc` (a
    /// fraction, 1 = full, as vLLM reports it), labelled with the served model's id.
    struct GatewayGauges {
        let waiting: Gauge
        let running: Gauge
        let kvCacheUsage: Gauge
        /// `vllm:cache_config_info`, always 1.
        let cacheConfig: Gauge
    }

    /// Metrics of the requests no model answered (model ""), in a registry of their own; the
    /// models' metrics join it through `sibling(model:)`.
    public convenience init() { self.init(model: "", registry: PrometheusCollectorRegistry()) }

    /// The metrics of `model` in this registry (shared by every model the server knows); a model
    /// loaded again continues the series it had.
    public func sibling(model id: String) -> ServerMetrics { ServerMetrics(model: id, registry: registry) }

    init(model: String, registry: PrometheusCollectorRegistry) {
        self.model = model
        self.registry = registry
        let label = [("model", model)]
        let latencyBuckets: [Duration] = [.milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250),
                                          .milliseconds(500), .seconds(1), .seconds(2), .seconds(5), .seconds(10), .seconds(30), .seconds(60)]
        promptTokens = registry.makeCounter(name: "castserve_prompt_tokens_total", labels: label, help: "Prompt tokens processed.")
        promptCachedTokens = registry.makeCounter(name: "castserve_prompt_cached_tokens_total", labels: label,
                                                  help: "Prompt tokens of completed requests whose keys and values came from the prefix cache (usage cached_tokens).")
        completionTokens = registry.makeCounter(name: "castserve_completion_tokens_total", labels: label, help: "Completion tokens generated.")
        timeToFirstToken = registry.makeDurationHistogram(name: "castserve_time_to_first_token_seconds", labels: label, buckets: latencyBuckets,
                                                          help: "Time from request arrival to the first generated token.")
        requestDuration = registry.makeDurationHistogram(name: "castserve_request_duration_seconds", labels: label, buckets: latencyBuckets,
                                                         help: "Time from request arrival to the last byte of the response.")
        running = registry.makeGauge(name: "castserve_requests_running", labels: label, help: "Sequences being generated.")
        waiting = registry.makeGauge(name: "castserve_requests_waiting", labels: label, help: "Requests queued for a sequence slot.")
        tokensPerSecond = registry.makeGauge(name: "castserve_tokens_per_second", labels: label, help: "Completion tokens per second over the last 5 seconds.")
        steps = registry.makeGauge(name: "castserve_engine_steps_total", labels: label, help: "Forward steps run by the engine.")
        rows = registry.makeGauge(name: "castserve_engine_rows_total", labels: label, help: "Rows processed by forward steps.")
        stepSeconds = registry.makeGauge(name: "castserve_engine_step_seconds_total", labels: label, help: "Wall time spent in forward steps.")
        stepDuration = registry.makeDurationHistogram(name: "castserve_engine_step_duration_seconds", labels: label,
            buckets: [.milliseconds(2), .milliseconds(5), .milliseconds(10), .milliseconds(20), .milliseconds(50), .milliseconds(100),
                      .milliseconds(200), .milliseconds(500), .seconds(1), .seconds(2)],
            help: "Wall time of one engine step (one forward call over all its rows).")
        kvBlocksUsed = registry.makeGauge(name: "castserve_kv_blocks_used", labels: label, help: "KV-cache blocks held by running sequences.")
        kvBlocksFree = registry.makeGauge(name: "castserve_kv_blocks_free", labels: label, help: "KV-cache blocks free or reclaimable.")
        kvBlocksCached = registry.makeGauge(name: "castserve_kv_blocks_cached", labels: label, help: "Idle KV-cache blocks kept for prefix reuse.")
        prefixLookupTokens = registry.makeGauge(name: "castserve_prefix_cache_lookup_tokens_total", labels: label, help: "Prompt tokens looked up in the prefix cache.")
        prefixHitTokens = registry.makeGauge(name: "castserve_prefix_cache_hit_tokens_total", labels: label, help: "Prompt tokens served from the prefix cache.")
        prefixHitRate = registry.makeGauge(name: "castserve_prefix_cache_hit_ratio", labels: label, help: "Prompt tokens served from the prefix cache / tokens looked up.")
        preemptions = registry.makeGauge(name: "castserve_engine_preemptions_total", labels: label, help: "Sequences preempted (recomputed later) because the KV cache was full.")
        draftedTokens = registry.makeGauge(name: "castserve_speculation_drafted_tokens_total", labels: label, help: "Draft tokens verified by the target.")
        acceptedTokens = registry.makeGauge(name: "castserve_speculation_accepted_tokens_total", labels: label, help: "Draft tokens accepted by verification.")
        speculativeSteps = registry.makeGauge(name: "castserve_speculation_steps_total", labels: label, help: "Engine steps that verified draft trees.")
        acceptedPerStep = registry.makeValueHistogram(name: "castserve_speculation_accepted_tokens_per_step", labels: label, buckets: [0, 1, 2, 3, 4, 5, 6, 8, 12, 16],
            help: "Draft tokens accepted per sequence and speculative step (the target's own token not counted).")
        treeRows = registry.makeValueHistogram(name: "castserve_speculation_tree_rows_per_step", labels: label, buckets: [0, 1, 2, 4, 8, 16, 32, 64, 128],
            help: "Draft-tree rows added to one engine step (all sequences).")
        costError = registry.makeValueHistogram(name: "castserve_cost_model_relative_error", labels: label, buckets: [-0.5, -0.25, -0.1, -0.05, 0, 0.05, 0.1, 0.25, 0.5, 1],
            help: "Per step, (observed - predicted) / predicted step time of the CAST cost model (forward and host).")
        plannedGoodput = registry.makeGauge(name: "castserve_planner_goodput_tokens_per_second", labels: label,
                                            help: "The CAST planner's predicted committed tokens per second for the last planned step.")
        plainGoodput = registry.makeGauge(name: "castserve_planner_plain_goodput_tokens_per_second", labels: label,
                                          help: "The planner's predicted tokens per second of plain decoding for the same step.")
    }

    /// Records one engine step (wired to `Engine.onStep` by the executable; engine thread).
    public func record(step: StepReport) {
        stepDuration.record(step.duration)
        if step.treeRows > 0 || !step.acceptedPerSequence.isEmpty { treeRows.record(Double(step.treeRows)) }
        for a in step.acceptedPerSequence { acceptedPerStep.record(Double(a)) }
        if let predicted = step.predictedMilliseconds, let observed = step.observedMilliseconds, predicted > 0 {
            costError.record((observed - predicted) / predicted)
        }
        if let g = step.plannedGoodput, let p = step.plainGoodput {
            plannedGoodput.set(g)
            plainGoodput.set(p)
        }
    }

    /// The build the engine runs: `castserve_build_info{kernels="avx2",kv_cache_type="f16"} 1`.
    public func recordBuild(kernels: String, kvCacheType: String) {
        registry.makeGauge(name: "castserve_build_info", labels: [("model", model), ("kernels", kernels), ("kv_cache_type", kvCacheType)],
                           help: "The kernel set (instruction set) and key/value cache type in use; always 1.").set(Double(1))
    }

    /// The served model: labels the gateway gauges with its id and publishes the KV cache's block
    /// geometry as `vllm:cache_config_info{block_size,num_gpu_blocks} 1` (the protocol's optional
    /// BlockSize and NumGPUBlocks, read by the endpoint picker's prefix-cache scorer).
    public func recordModel(id: String, kvBlockSize: Int, kvBlocks: Int) {
        let label = [("model_name", id)]
        let gauges = GatewayGauges(
            waiting: registry.makeGauge(name: "vllm:num_requests_waiting", labels: label,
                                        help: "Requests queued for a sequence slot (Gateway API Inference Extension: TotalQueuedRequests)."),
            running: registry.makeGauge(name: "vllm:num_requests_running", labels: label,
                                        help: "Sequences being generated (Gateway API Inference Extension: TotalRunningRequests)."),
            kvCacheUsage: registry.makeGauge(name: "vllm:kv_cache_usage_perc", labels: label,
                                             help: "KV-cache blocks held by running sequences / all blocks, 1 = full (Gateway API Inference Extension: KVCacheUtilization)."),
            cacheConfig: registry.makeGauge(name: "vllm:cache_config_info",
                                            labels: label + [("block_size", String(kvBlockSize)), ("num_gpu_blocks", String(kvBlocks))],
                                            help: "KV-cache geometry: positions per block and blocks in all (the memory is host RAM; the name is vLLM's); always 1."))
        gauges.cacheConfig.set(Double(1))
        lock.lock()
        gateway = gauges
        lock.unlock()
    }

    /// Counts one answered request by route and status.
    func countRequest(route: String, status: Int) {
        let key = "\(route)|\(status)"
        lock.lock()
        let counter = requestCounters[key] ?? registry.makeCounter(
            name: "castserve_requests_total", labels: [("model", model), ("route", route), ("status", String(status))],
            help: "HTTP requests answered.")
        requestCounters[key] = counter
        lock.unlock()
        counter.increment()
    }

    /// The model was unloaded: its live gauges read 0 and its gateway gauges leave the exposition
    /// (the endpoint picker must not see a model this process no longer holds); counters stay.
    public func retire() {
        for gauge in [running, waiting, tokensPerSecond, kvBlocksUsed, kvBlocksFree, kvBlocksCached] { gauge.set(Double(0)) }
        lock.lock()
        let g = gateway
        gateway = nil
        lock.unlock()
        if let g {
            for gauge in [g.waiting, g.running, g.kvCacheUsage, g.cacheConfig] { registry.unregisterGauge(gauge) }
        }
    }

    /// The Prometheus text exposition of the whole registry (every model's metrics as last updated).
    func render() -> String { registry.emitToString() }

    /// Sets the gauges from the engine's live figures.
    func update(engine e: EngineSnapshot) {
        running.set(Double(e.running))
        waiting.set(Double(e.waiting))
        tokensPerSecond.set(e.recentTokensPerSecond)
        steps.set(Double(e.stepsTotal))
        rows.set(Double(e.rowsTotal))
        stepSeconds.set(e.stepSecondsTotal)
        kvBlocksUsed.set(Double(e.kvBlocksUsed))
        kvBlocksFree.set(Double(e.kvBlocksTotal - e.kvBlocksUsed))
        kvBlocksCached.set(Double(e.kvBlocksCached))
        prefixLookupTokens.set(Double(e.prefixLookupTokens))
        prefixHitTokens.set(Double(e.prefixHitTokens))
        prefixHitRate.set(e.prefixLookupTokens > 0 ? Double(e.prefixHitTokens) / Double(e.prefixLookupTokens) : 0)
        preemptions.set(Double(e.preemptions))
        draftedTokens.set(Double(e.draftedTokens))
        acceptedTokens.set(Double(e.acceptedTokens))
        speculativeSteps.set(Double(e.speculativeSteps))
        lock.lock()
        let g = gateway
        lock.unlock()
        if let g {
            g.waiting.set(Double(e.waiting))
            g.running.set(Double(e.running))
            g.kvCacheUsage.set(e.kvBlocksTotal > 0 ? Double(e.kvBlocksUsed) / Double(e.kvBlocksTotal) : 0)
        }
    }
}
