import ArgumentParser
import ChatTemplate
import COpenSSL
import Dispatch
import Engine
import Foundation
import GGUF
import HTTP
import Kernels
import Logging
import Model
import OpenAI
import Speculation

extension CastServe {
    /// Serves the OpenAI-compatible API. Listens first (GET /health answers 503 while the default
    /// model loads), then loads the default model with progress on stderr, then answers 200; the
    /// other models of the list load when a request names them (`ModelRegistry`).
    struct Serve: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Serve the OpenAI-compatible API (the default subcommand).")

        @Option(help: "Path to a GGUF model, the default model (overrides config.json's \"model\").")
        var model: String?

        @Option(help: ArgumentHelp("Serve every *.gguf in this directory too, id = file name without .gguf, each loaded when a request names it (overrides \"models_dir\").",
                                   valueName: "dir"))
        var modelsDir: String?

        @Option(help: "Listen address, IPv4 or IPv6 (overrides \"host\").")
        var host: String?

        @Option(help: "Listen port; 0 picks a free one (overrides \"port\").")
        var port: Int?

        @Option(help: "Configuration file (default: ./config.json if present).")
        var config: String?

        @Option(help: "Require this bearer API key (adds to \"api_keys\").")
        var apiKey: String?

        @Option(help: "Compute threads (overrides \"threads\"; 0 = all cores).")
        var threads: Int?

        @Option(help: "Positions per sequence (overrides \"context_length\").")
        var contextLength: Int?

        @Option(help: "Speculative decoding with CAST-planned draft trees: on (the default) or off (overrides \"speculation\").")
        var speculation: String?

        @Option(help: "Draft source for speculation: recycle, suffix, ngram, skip or learned (overrides \"drafter\").")
        var drafter: String?

        @Option(help: "Learned drafter GGUF (overrides \"drafter_model\"; default: drafters/<model file stem>.drafter.gguf when present; \"\" turns it off).")
        var drafterModel: String?

        @Flag(help: "Measure the step-cost model again instead of reusing the cached one.")
        var recalibrate = false

        @Option(help: ArgumentHelp("Serve with the fixed step-cost model in this JSON file (GET /v1/cast/cost's format) instead of measuring one (overrides \"cost_model_file\").",
                                   valueName: "file"))
        var costModel: String?

        @Option(help: "Kernel set: auto, avx512, avx2, neon or scalar (overrides \"kernels\"; auto picks the fastest this CPU runs).")
        var kernels: String?

        @Option(help: "Key/value cache storage: f16, q8_0 or f32 (overrides \"kv_cache_type\").")
        var kvCacheType: String?

        @Option(help: "Thinking models' think blocks: auto splits them off as reasoning_content, none leaves them in the content (overrides \"reasoning_format\").")
        var reasoningFormat: String?

        @Option(help: "Sequences decoded together (overrides \"slots\").")
        var slots: Int?

        @Option(help: "PEM certificate (chain) file: serve HTTPS (overrides \"tls_cert\"; needs --tls-key).")
        var tlsCert: String?

        @Option(help: "PEM private key of --tls-cert (overrides \"tls_key\").")
        var tlsKey: String?

        func run() throws {
            var settings = try ServerConfig.load(path: config ?? "config.json", required: config != nil)
            if let model { settings.model = model }
            if let modelsDir { settings.modelsDir = modelsDir }
            if let host { settings.host = host }
            if let port {
                guard (0...65535).contains(port) else { throw ValidationError("--port must be between 0 and 65535") }
                settings.port = port
            }
            if let apiKey { settings.apiKeys.append(apiKey) }
            if let threads { settings.threads = threads }
            if let contextLength { settings.contextLength = contextLength }
            if let slots {
                guard slots >= 1 && slots <= 256 else { throw ValidationError("--slots must be between 1 and 256") }
                settings.slots = slots
            }
            if let tlsCert { settings.tlsCert = tlsCert }
            if let tlsKey { settings.tlsKey = tlsKey }
            let tls = try settings.tlsFiles().map {
                TLSConfiguration(certificatePath: $0.certificate, privateKeyPath: $0.key,
                                 handshakeTimeout: .milliseconds(Int(settings.tlsHandshakeTimeoutSeconds * 1000)))
            }
            if let speculation {
                guard ["on", "off"].contains(speculation) else { throw ValidationError("--speculation takes on or off") }
                settings.speculation = speculation == "on"
            }
            if let drafter { try settings.set("drafter", drafter, source: "--drafter") }
            if let drafterModel { settings.drafterModel = drafterModel }
            if let kernels { try settings.set("kernels", kernels, source: "--kernels") }
            if let kvCacheType { try settings.set("kv_cache_type", kvCacheType, source: "--kv-cache-type") }
            if let reasoningFormat { try settings.set("reasoning_format", reasoningFormat, source: "--reasoning-format") }
            // A cost-model file, before anything listens: a missing or malformed one stops the start.
            if let costModel { settings.costModelFile = costModel }
            if recalibrate && settings.costModelFile != nil {
                throw ValidationError("--recalibrate measures the step-cost model, --cost-model (\"cost_model_file\") fixes it; give one of them")
            }
            let fixedCost = try settings.costModelFile.map { try CostModelFile.load(path: $0) }
            // The model list and each model's kernel set, before anything listens: a set this CPU
            // cannot run, a list with two models of one name, stop the start.
            let entries = try ModelEntry.list(settings: settings)
            let models = try entries.enumerated().map { index, entry in
                let modelSettings = settings.applying(entry, isDefault: index == 0)
                return (entry: entry, settings: modelSettings, kernels: try KernelSet.select(modelSettings.kernels))
            }
            note("kernels: \(models[0].kernels) (\(kernelSetSummary(settings.kernels)))")
            if models.count > 1 {
                note("models: " + models.map { "\($0.entry.id) (\($0.entry.path))" }.joined(separator: ", ") + "; \(models[0].entry.id) is the default")
            }

            LoggingSystem.bootstrap { label in
                var h = StreamLogHandler.standardError(label: label)
                h.logLevel = .info
                return h
            }
            let logger = Logger(label: "castserve")
            // One kernel pool for every model, and the turn their engines take per step.
            let cores = (pool: ThreadPool(threads: settings.effectiveThreads), gate: StepGate())
            let rootMetrics = ServerMetrics()
            let loader = ModelLoader(threads: settings.effectiveThreads, pool: cores.pool, gate: cores.gate, recalibrate: recalibrate,
                                     fixedCost: fixedCost, metrics: rootMetrics,
                                     responseStore: ResponseStore(capacity: settings.responsesStoreSize), logger: logger)
            let registry = ModelRegistry(entries: models, server: settings, loader: loader.load)
            let router = ModelRouter(catalog: registry, metrics: rootMetrics, apiKeys: settings.apiKeys, logger: logger)
            let httpConfig = HTTPServerConfiguration(
                host: settings.host, port: settings.port, maxConnections: settings.maxConnections, maxHeaderBytes: settings.maxHeaderBytes,
                maxBodyBytes: settings.maxBodyBytes, headerReadTimeout: .milliseconds(Int(settings.headerTimeoutSeconds * 1000)),
                idleKeepAliveTimeout: .milliseconds(Int(settings.idleTimeoutSeconds * 1000)), corsAllowedOrigin: settings.corsAllowedOrigin,
                tls: tls, compressionThresholdBytes: settings.gzipMinBytes)
            let descriptors = FileDescriptorLimit.raiseToHardLimit()
            let needed = FileDescriptorLimit.needed(connections: settings.maxConnections)
            if let failure = descriptors.failure {
                note("open-file limit stays at \(descriptors.soft) (hard \(descriptors.hard)): raising it failed: \(failure)")
            } else if descriptors.soft != descriptors.previousSoft {
                note("open-file limit raised from \(descriptors.previousSoft) to \(descriptors.soft)")
            } else {
                note("open-file limit: \(descriptors.soft)")
            }
            if descriptors.soft < needed {
                note("warning: the open-file limit \(descriptors.soft) is below the \(needed) that max_connections = \(settings.maxConnections) "
                     + "can need (3 per busy connection); raise the hard limit (ulimit -Hn, systemd LimitNOFILE=) or lower max_connections")
            }
            let server = HTTPServer(configuration: httpConfig, handler: router)
            try server.start()
            // The bound address on stdout: scripts and tests read it (port 0 picks a free port).
            print("listening on \(tls == nil ? "http" : "https")://\(settings.host.contains(":") ? "[\(settings.host)]" : settings.host):\(server.port)")
            fflush(stdout)

            let drain = DispatchSemaphore(value: 0)
            var signalSources: [DispatchSourceSignal] = []
            for sig in [SIGTERM, SIGINT] {
                signal(sig, SIG_IGN)
                let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
                source.setEventHandler { drain.signal() }
                source.resume()
                signalSources.append(source)
            }

            // The default model loads now (a start that cannot load it fails, as a one-model server
            // does); the others when a request names them.
            do {
                try registry.load(registry.defaultModelID)
            } catch {
                note("error: \((error as? OpenAIError)?.message ?? "\(error)")")
                server.shutdown(drainDeadline: .seconds(1))
                throw ExitCode(1)
            }
            router.setStarted()
            registry.startKeepAlive()

            drain.wait()
            note("draining: no new connections; in-flight requests get \(Int(settings.drainTimeoutSeconds)) s")
            router.setDraining()
            registry.beginDrain()
            server.shutdown(drainDeadline: .milliseconds(Int(settings.drainTimeoutSeconds * 1000)))
            registry.stopEngines()
            note("stopped")
            _ = signalSources
        }
    }
}

extension CastServe.Serve {
    /// Takes the `fixed` step-cost model (from `--cost-model`), or loads the model from the on-disk
    /// cache (unless `recalibrate`), or arranges for the engine to measure it at start-up with
    /// progress on stderr and to cache the result.
    static func prepareCostModel(_ config: inout EngineConfiguration, settings: ServerConfig, kernels: KernelSet, recalibrate: Bool,
                          fixed: CostModel?) throws {
        let directory = settings.costCacheDir ?? CostModelCache.defaultDirectory
        let key: CostModelCache.Key?
        if directory.isEmpty {
            key = nil
        } else {
            key = try? CostModelCache.Key(
                modelPath: settings.model, threads: settings.effectiveThreads,
                variant: "slots=\(config.slots) rows=\(settings.maxStepRows) context=\(config.contextLength) kernels=\(kernels) kv=\(config.kvCacheType.rawValue)")
        }
        let cache = CostModelCache(directory: directory)
        // The recycle drafter's table lives beside the cost models, one per model file.
        if let key { config.drafterStatePath = directory + "/recycle-" + key.modelHash + ".bin" }
        if let fixed, let path = settings.costModelFile {
            config.costModel = fixed
            let body = fixed.body.map { String(format: "%d:%.2f", $0.rows, $0.ms) }.joined(separator: " ")
            note("step-cost model: fixed, from \(path) (not measured: no step time refreshes it and the measured guards are off, "
                 + "so drafting does not depend on this host's speed or load); body by rows \(body)")
            return
        }
        if let key, !recalibrate, let known = cache.load(key) {
            config.costModel = known
            note("step-cost model from \(directory)/\(key.fileName) (--recalibrate measures a new one)")
            return
        }
        note("measuring the step-cost model (a few seconds)")
        config.calibrationProgress = { done, total in note("  step-cost model: \(done)/\(total) row counts measured") }
        config.onCalibrated = { model in
            let body = model.corrected.map { String(format: "%d:%.2f", $0.rows, $0.ms) }.joined(separator: " ")
            let head = model.head.map { String(format: "%d:%.2f", $0.rows, $0.ms) }.joined(separator: " ")
            note(String(format: "step-cost model (ms): body by rows %@; head by logit rows %@; %.5f per attended position", body, head,
                        model.msPerPosition))
            guard let key else { return }
            do {
                let path = try cache.save(model, for: key)
                note("step-cost model cached at \(path)")
            } catch {
                note("warning: could not cache the step-cost model in \(directory) (\(error)); it will be measured again at the next start. Set \"cost_cache_dir\" to a writable directory")
            }
        }
    }
}

/// How a kernel set was chosen, and the sets this CPU cannot run, for the start-up log.
func kernelSetSummary(_ choice: KernelChoice) -> String {
    let unavailable = KernelSet.Name.allCases.compactMap { name in KernelSet.missingFeatures(name).map { "\(name): \($0)" } }
    let how = choice == .auto ? "auto: the fastest set this CPU runs" : "forced by configuration"
    return unavailable.isEmpty ? how : how + "; not available here: " + unavailable.joined(separator: "; ")
}

/// The sha256 of a file, lowercase hex (nil when it cannot be read).
func sha256(file path: String) -> String? {
    guard let data = try? Data(contentsOf: URL(fileURLWithPath: path), options: .alwaysMapped) else { return nil }
    var digest = [UInt8](repeating: 0, count: 32)
    var length: UInt32 = 0
    let ok = data.withUnsafeBytes { EVP_Digest($0.baseAddress, $0.count, &digest, &length, EVP_sha256(), nil) }
    guard ok == 1, length == 32 else { return nil }
    return digest.map { String(format: "%02x", $0) }.joined()
}

/// Resident memory of this process (`/proc/self/statm`), or 0 where it cannot be read.
func residentBytes() -> Int {
    guard let text = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return 0 }
    let fields = text.split(separator: " ")
    guard fields.count > 1, let pages = Int(fields[1]) else { return 0 }
    return pages * Int(sysconf(Int32(_SC_PAGESIZE)))
}
