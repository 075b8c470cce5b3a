import Foundation
import Kernels
import Model
import OpenAI

/// The server's configuration: config.json, then `CASTSERVE_*` environment variables, then flags.
/// Documented key by key in docs/CONFIG.md.
struct ServerConfig: Equatable {
    var model = "models/SmolLM2-135M-Instruct.Q4_1.gguf"
    var modelAliases = ["default", "smollm2"]
    var threads = 0
    var contextLength = 4096
    var maxStepRows = 512
    var chatTemplate: String?
    var host = "127.0.0.1"
    var port = 8080
    var apiKeys: [String] = []
    var maxConnections = 2048
    var maxHeaderBytes = 65536
    var maxBodyBytes = 8 * 1024 * 1024
    var headerTimeoutSeconds = 10.0
    var idleTimeoutSeconds = 30.0
    var drainTimeoutSeconds = 30.0
    var corsAllowedOrigin: String?
    var maxWaitingRequests = 64
    var defaultMaxTokens = 256
    /// Responses kept for `previous_response_id` and `GET /v1/responses/{id}` (0 keeps none).
    var responsesStoreSize = 256
    var slots = 8
    var kvCacheTokens = 0
    var speculation = true
    var drafter = "recycle"
    /// The learned drafter's file: nil looks for `drafters/<model file stem>.drafter.gguf`, ""
    /// turns the learned drafter off.
    var drafterModel: String?
    var maxDraftNodes = 16
    var maxDraftDepth = 8
    /// Where measured step-cost tables are cached; "" disables the cache.
    var costCacheDir: String?
    /// A fixed step-cost model to serve with instead of a measured one (`CostModelFile`).
    var costModelFile: String?
    var tlsCert: String?
    var tlsKey: String?
    var tlsHandshakeTimeoutSeconds = 10.0
    var gzipMinBytes: Int? = 1024
    /// Sampling for the fields a request leaves out (llama.cpp's server defaults unless set).
    var samplingDefaults = SamplingDefaults.llamaCpp
    var kernels = KernelChoice.auto
    var kvCacheType = KVCacheType.f16
    /// More models beside `model` (config `models`), each with its own settings; see `ModelEntry.list`.
    var models: [ModelEntry] = []
    /// Every `*.gguf` in this directory is a model too (id = file stem).
    var modelsDir: String?
    /// Most models loaded at once (0: no limit); the least recently used idle one is unloaded first.
    var maxLoadedModels = 0
    /// Most bytes of weights plus KV cache all loaded models may hold (0: no limit).
    var memoryBudgetBytes = 0
    /// A model idle this long is unloaded (nil: never).
    var keepAliveSeconds: Double?
    /// How long a request waits for its model to load before it gets an error.
    var modelLoadTimeoutSeconds = 300.0
    /// Whether thinking models' think blocks are split off as reasoning (`auto`) or left in the content.
    var reasoningFormat = ReasoningFormat.auto

    /// The learned drafter's file to load: `drafter_model` when set (nil when it is ""), else
    /// `drafters/<model file stem>.drafter.gguf` when that file exists.
    var learnedDrafterPath: String? {
        if let drafterModel { return drafterModel.isEmpty ? nil : drafterModel }
        let stem = ((model as NSString).lastPathComponent as NSString).deletingPathExtension
        let path = "drafters/\(stem).drafter.gguf"
        return FileManager.default.fileExists(atPath: path) ? path : nil
    }

    /// Threads to use: the configured count, or every core when 0.
    var effectiveThreads: Int { threads > 0 ? threads : ProcessInfo.processInfo.activeProcessorCount }

    /// Loads `path` (missing file allowed only when `required` is false), then applies the
    /// environment. Throws `ConfigError` naming the key and the fix.
    static func load(path: String, required: Bool, environment: [String: String] = ProcessInfo.processInfo.environment) throws -> ServerConfig {
        var config = ServerConfig()
        if let data = FileManager.default.contents(atPath: path) {
            let object: Any
            do {
                object = try JSONSerialization.jsonObject(with: data)
            } catch {
                throw ConfigError.invalidJSON(path: path, reason: (error as NSError).localizedDescription)
            }
            guard let dict = object as? [String: Any] else { throw ConfigError.invalidJSON(path: path, reason: "the top level must be an object") }
            for (key, value) in dict.sorted(by: { $0.key < $1.key }) {
                try config.set(key, value, source: path)
            }
        } else if required {
            throw ConfigError.fileNotFound(path: path)
        }
        for (name, value) in environment where name.hasPrefix("CASTSERVE_") {
            let key = name.dropFirst("CASTSERVE_".count).lowercased()
            let parsed: Any
            if let data = value.data(using: .utf8), let json = try? JSONSerialization.jsonObject(with: data, options: .fragmentsAllowed),
               !(json is String) || key == "chat_template" {
                parsed = json
            } else {
                parsed = value
            }
            try config.set(String(key), parsed, source: "environment variable \(name)")
        }
        return config
    }

    /// The TLS files when both are set, nil when neither is; one without the other is a mistake.
    func tlsFiles() throws -> (certificate: String, key: String)? {
        switch (tlsCert, tlsKey) {
        case (nil, nil): return nil
        case (let cert?, let key?): return (cert, key)
        case (nil, _): throw ConfigError.tlsIncomplete(given: "tls_key", missing: "tls_cert")
        case (_, nil): throw ConfigError.tlsIncomplete(given: "tls_cert", missing: "tls_key")
        }
    }

    /// Every key config.json accepts.
    static let knownKeys = ["model", "model_aliases", "threads", "context_length", "max_step_rows", "chat_template", "host", "port",
                            "api_keys", "max_connections", "max_header_bytes", "max_body_bytes", "header_timeout_seconds",
                            "idle_timeout_seconds", "drain_timeout_seconds", "cors_allowed_origin", "max_waiting_requests",
                            "default_max_tokens", "slots", "kv_cache_tokens", "speculation", "drafter", "drafter_model", "max_draft_nodes",
                            "max_draft_depth", "cost_cache_dir", "cost_model_file", "tls_cert", "tls_key", "tls_handshake_timeout_seconds",
                            "gzip_min_bytes", "kernels", "kv_cache_type", "sampling_defaults", "models", "models_dir", "max_loaded_models",
                            "memory_budget_bytes", "keep_alive_seconds", "model_load_timeout_seconds", "responses_store_size", "reasoning_format"]

    /// Sets `key` from a parsed JSON `value`; errors name `reportedKey` when given (a key inside an
    /// entry of `models`, such as `models[1].slots`).
    mutating func set(_ key: String, _ value: Any, source: String, as reportedKey: String? = nil) throws {
        let reported = reportedKey ?? key
        func string() throws -> String {
            guard let s = value as? String else { throw ConfigError.wrongType(key: reported, expected: "a string", source: source) }
            return s
        }
        func optionalString() throws -> String? { value is NSNull ? nil : try string() }
        func strings() throws -> [String] {
            if let s = value as? String { return s.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) } }
            guard let a = value as? [Any], let s = a as? [String] else {
                throw ConfigError.wrongType(key: reported, expected: "a list of strings", source: source)
            }
            return s
        }
        func int(_ range: ClosedRange<Int>) throws -> Int {
            var parsed: Int?
            if let n = value as? NSNumber, !isJSONBool(value), n.doubleValue == n.doubleValue.rounded() { parsed = n.intValue }
            if let s = value as? String { parsed = Int(s) }
            guard let i = parsed else { throw ConfigError.wrongType(key: reported, expected: "an integer", source: source) }
            guard range.contains(i) else { throw ConfigError.outOfRange(key: reported, value: String(i), allowed: "\(range.lowerBound)...\(range.upperBound)", source: source) }
            return i
        }
        func seconds() throws -> Double {
            var parsed: Double?
            if let n = value as? NSNumber, !isJSONBool(value) { parsed = n.doubleValue }
            if let s = value as? String { parsed = Double(s) }
            guard let d = parsed else { throw ConfigError.wrongType(key: reported, expected: "a number of seconds", source: source) }
            guard d > 0 && d <= 86400 else { throw ConfigError.outOfRange(key: reported, value: String(d), allowed: "more than 0, at most 86400", source: source) }
            return d
        }
        switch key {
        case "model": model = try string()
        case "model_aliases": modelAliases = try strings()
        case "threads": threads = try int(0...256)
        case "context_length": contextLength = try int(16...1_048_576)
        case "max_step_rows": maxStepRows = try int(1...8192)
        case "chat_template": chatTemplate = try optionalString()
        case "host": host = try string()
        case "port": port = try int(0...65535)
        case "api_keys": apiKeys = try strings().filter { !$0.isEmpty }
        case "max_connections": maxConnections = try int(1...100_000)
        case "max_header_bytes": maxHeaderBytes = try int(1024...16 * 1024 * 1024)
        case "max_body_bytes": maxBodyBytes = try int(1024...1024 * 1024 * 1024)
        case "header_timeout_seconds": headerTimeoutSeconds = try seconds()
        case "idle_timeout_seconds": idleTimeoutSeconds = try seconds()
        case "drain_timeout_seconds": drainTimeoutSeconds = try seconds()
        case "cors_allowed_origin": corsAllowedOrigin = try optionalString()
        case "max_waiting_requests": maxWaitingRequests = try int(0...100_000)
        case "default_max_tokens": defaultMaxTokens = try int(1...1_048_576)
        case "responses_store_size": responsesStoreSize = try int(0...1_000_000)
        case "slots": slots = try int(1...256)
        case "kv_cache_tokens": kvCacheTokens = try int(0...100_000_000)
        case "tls_cert": tlsCert = try optionalString()
        case "tls_key": tlsKey = try optionalString()
        case "tls_handshake_timeout_seconds": tlsHandshakeTimeoutSeconds = try seconds()
        case "gzip_min_bytes": gzipMinBytes = value is NSNull ? nil : try int(0...1024 * 1024 * 1024)
        case "speculation":
            if let b = value as? String, ["on", "off", "true", "false"].contains(b) {
                speculation = b == "on" || b == "true"
            } else if isJSONBool(value), let b = value as? Bool {
                speculation = b
            } else {
                throw ConfigError.wrongType(key: reported, expected: "true or false (\"on\" or \"off\")", source: source)
            }
        case "drafter":
            let name = try string()
            guard ["ngram", "suffix", "recycle", "skip", "learned"].contains(name) else {
                throw ConfigError.outOfRange(key: reported, value: name, allowed: "recycle, suffix, ngram, skip or learned", source: source)
            }
            drafter = name
        case "drafter_model": drafterModel = value is NSNull ? nil : try string()
        case "max_draft_nodes": maxDraftNodes = try int(1...256)
        case "max_draft_depth": maxDraftDepth = try int(1...64)
        case "cost_cache_dir": costCacheDir = try optionalString()
        case "cost_model_file": costModelFile = try optionalString()
        case "sampling_defaults": samplingDefaults = try Self.samplingDefaults(value, source: source)
        case "models":
            guard let list = value as? [Any] else {
                throw ConfigError.wrongType(key: reported, expected: "a list of objects such as [{\"id\": \"gemma3\", \"path\": \"models/gemma-3-270m-q4_k_m.gguf\"}]",
                                            source: source)
            }
            models = try list.enumerated().map { try ModelEntry.parse($1, index: $0, source: source) }
        case "models_dir": modelsDir = try optionalString()
        case "max_loaded_models": maxLoadedModels = try int(0...1024)
        case "memory_budget_bytes": memoryBudgetBytes = try int(0...(1 << 50))
        case "keep_alive_seconds":
            // 0 or null: models stay loaded until evicted.
            if value is NSNull || (value as? NSNumber).map({ !isJSONBool(value) && $0.doubleValue == 0 }) == true || value as? String == "0" {
                keepAliveSeconds = nil
            } else {
                keepAliveSeconds = try seconds()
            }
        case "model_load_timeout_seconds": modelLoadTimeoutSeconds = try seconds()
        case "kernels":
            let name = try string()
            guard let choice = try? KernelChoice(parsing: name) else {
                throw ConfigError.outOfRange(key: reported, value: name, allowed: "auto, avx512, avx2, neon or scalar", source: source)
            }
            kernels = choice
        case "kv_cache_type":
            let name = try string()
            guard let type = try? KVCacheType(parsing: name) else {
                throw ConfigError.outOfRange(key: reported, value: name, allowed: "f16, q8_0 or f32", source: source)
            }
            kvCacheType = type
        case "reasoning_format":
            let name = try string()
            guard let format = ReasoningFormat(rawValue: name) else {
                throw ConfigError.outOfRange(key: key, value: name, allowed: ReasoningFormat.allCases.map(\.rawValue).joined(separator: " or "), source: source)
            }
            reasoningFormat = format
        default:
            let suggestion = ServerConfig.knownKeys.min { editDistance($0, key) < editDistance($1, key) }
            throw ConfigError.unknownKey(key: key, suggestion: suggestion, source: source)
        }
    }
}

extension ServerConfig {
    /// `sampling_defaults`: an object of request sampling fields; the keys it leaves out keep
    /// llama.cpp's defaults.
    static func samplingDefaults(_ value: Any, source: String) throws -> SamplingDefaults {
        guard let d = value as? [String: Any] else {
            throw ConfigError.wrongType(key: "sampling_defaults", expected: "an object such as {\"temperature\": 0.8, \"top_p\": 0.95}", source: source)
        }
        var out = SamplingDefaults.llamaCpp
        for (k, v) in d.sorted(by: { $0.key < $1.key }) {
            let key = "sampling_defaults.\(k)"
            guard let n = v as? NSNumber, !isJSONBool(v), n.doubleValue.isFinite else {
                throw ConfigError.wrongType(key: key, expected: "a number", source: source)
            }
            let x = n.doubleValue
            func check(_ range: ClosedRange<Double>) throws {
                guard range.contains(x) else {
                    throw ConfigError.outOfRange(key: key, value: String(x), allowed: "\(range.lowerBound)...\(range.upperBound)", source: source)
                }
            }
            switch k {
            case "temperature": try check(0...2); out.temperature = Float(x)
            case "top_p": try check(0.000001...1); out.topP = Float(x)
            case "top_k":
                try check(0...1_000_000)
                guard x == x.rounded() else { throw ConfigError.wrongType(key: key, expected: "an integer", source: source) }
                out.topK = Int(x)
            case "min_p": try check(0...1); out.minP = Float(x)
            case "presence_penalty": try check(-2...2); out.presencePenalty = Float(x)
            case "frequency_penalty": try check(-2...2); out.frequencyPenalty = Float(x)
            default:
                throw ConfigError.unknownKey(key: key, suggestion: "sampling_defaults.temperature, top_p, top_k, min_p, presence_penalty or frequency_penalty", source: source)
            }
        }
        return out
    }
}

/// A configuration mistake, named precisely.
enum ConfigError: Error, CustomStringConvertible, Equatable {
    case fileNotFound(path: String)
    case invalidJSON(path: String, reason: String)
    case unknownKey(key: String, suggestion: String?, source: String)
    case wrongType(key: String, expected: String, source: String)
    case outOfRange(key: String, value: String, allowed: String, source: String)
    case tlsIncomplete(given: String, missing: String)
    case modelsDirectory(path: String, reason: String)
    case duplicateModel(id: String, first: String, second: String)
    case ambiguousModelName(name: String, first: String, second: String)

    var description: String {
        switch self {
        case .fileNotFound(let path):
            return "config file \(path) not found; pass an existing file to --config, or omit it to use ./config.json"
        case .invalidJSON(let path, let reason):
            return "config file \(path) is not valid JSON: \(reason)"
        case .unknownKey(let key, let suggestion, let source):
            return "unknown configuration key '\(key)' in \(source)" + (suggestion.map { "; did you mean '\($0)'?" } ?? "")
                + " (all keys: docs/CONFIG.md)"
        case .wrongType(let key, let expected, let source):
            return "configuration key '\(key)' in \(source) must be \(expected)"
        case .outOfRange(let key, let value, let allowed, let source):
            return "configuration key '\(key)' in \(source) is \(value); allowed: \(allowed)"
        case .tlsIncomplete(let given, let missing):
            return "\(given) is set but \(missing) is not; HTTPS needs both a certificate (tls_cert, --tls-cert) and its private key "
                + "(tls_key, --tls-key); set both, or neither for plain HTTP"
        case .modelsDirectory(let path, let reason):
            return "models_dir (--models-dir) \(path) cannot be read: \(reason); pass a directory of .gguf files"
        case .duplicateModel(let id, let first, let second):
            return "two models have the id '\(id)': \(first) and \(second); give one an \"id\" of its own in \"models\", or rename its file"
        case .ambiguousModelName(let name, let first, let second):
            return "the name '\(name)' is an id or alias of two models, '\(first)' and '\(second)'; a request could not tell them apart: "
                + "remove it from one model's \"aliases\" (\"model_aliases\" for the default model)"
        }
    }
}

/// Levenshtein distance, for "did you mean" suggestions.
func editDistance(_ a: String, _ b: String) -> Int {
    let a = Array(a), b = Array(b)
    var previous = Array(0...b.count)
    for i in 1...max(a.count, 1) where !a.isEmpty {
        var current = [i] + Array(repeating: 0, count: b.count)
        for j in 1...max(b.count, 1) where !b.isEmpty {
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
        }
        previous = current
    }
    return a.isEmpty ? b.count : previous[b.count]
}

/// Whether a JSONSerialization value is a JSON boolean. (On Linux, `0 is Bool` and `1 is Bool` are
/// true for numbers too, so the check looks at the boxed type.)
func isJSONBool(_ value: Any) -> Bool {
    if type(of: value) == Bool.self { return true }
    guard let n = value as? NSNumber else { return false }
    return String(cString: n.objCType) == "c"
}
