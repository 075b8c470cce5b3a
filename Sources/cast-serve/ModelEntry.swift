import Foundation
import Kernels
import Model

/// One model of the server's list: where its file is, the names a request may use for it, and
/// the settings it overrides (nil: the server-wide value).
struct ModelEntry: Equatable {
    var id: String
    var path: String
    var aliases: [String] = []
    var kernels: KernelChoice?
    var kvCacheType: KVCacheType?
    var contextLength: Int?
    var slots: Int?
    var speculation: Bool?
    var drafter: String?

    /// The id a file gets when the list does not name one: its name without `.gguf`.
    static func id(forPath path: String) -> String {
        ((path as NSString).lastPathComponent as NSString).deletingPathExtension
    }

    /// The keys an entry of `models` accepts.
    static let knownKeys = ["id", "path", "aliases", "kernels", "kv_cache_type", "context_length", "slots", "speculation", "drafter"]

    /// Parses `models[index]` of config.json (or of `CASTSERVE_MODELS`); the per-model keys take
    /// the values and ranges of the server-wide keys of the same name.
    static func parse(_ value: Any, index: Int, source: String) throws -> ModelEntry {
        let name = "models[\(index)]"
        guard let object = value as? [String: Any] else {
            throw ConfigError.wrongType(key: name, expected: "an object such as {\"id\": \"gemma3\", \"path\": \"models/gemma-3-270m-q4_k_m.gguf\"}",
                                        source: source)
        }
        guard let path = object["path"] as? String, !path.isEmpty else {
            throw ConfigError.wrongType(key: name + ".path", expected: "the GGUF file's path (a non-empty string)", source: source)
        }
        var entry = ModelEntry(id: id(forPath: path), path: path)
        // The server-wide parser checks each override's type and range, under the entry's key name.
        var scratch = ServerConfig()
        for (key, v) in object.sorted(by: { $0.key < $1.key }) {
            let qualified = "\(name).\(key)"
            switch key {
            case "path": break
            case "id":
                guard let s = v as? String, !s.isEmpty, !s.contains("/") else {
                    throw ConfigError.wrongType(key: qualified, expected: "a non-empty string without '/' (it is part of /v1/models/{id})", source: source)
                }
                entry.id = s
            case "aliases":
                try scratch.set("model_aliases", v, source: source, as: qualified)
                entry.aliases = scratch.modelAliases
            case "kernels":
                try scratch.set(key, v, source: source, as: qualified)
                entry.kernels = scratch.kernels
            case "kv_cache_type":
                try scratch.set(key, v, source: source, as: qualified)
                entry.kvCacheType = scratch.kvCacheType
            case "context_length":
                try scratch.set(key, v, source: source, as: qualified)
                entry.contextLength = scratch.contextLength
            case "slots":
                try scratch.set(key, v, source: source, as: qualified)
                entry.slots = scratch.slots
            case "speculation":
                try scratch.set(key, v, source: source, as: qualified)
                entry.speculation = scratch.speculation
            case "drafter":
                try scratch.set(key, v, source: source, as: qualified)
                entry.drafter = scratch.drafter
            default:
                let suggestion = knownKeys.min { editDistance($0, key) < editDistance($1, key) }
                throw ConfigError.unknownKey(key: qualified, suggestion: suggestion.map { "\(name).\($0)" }, source: source)
            }
        }
        return entry
    }

    /// Every `*.gguf` file in `directory` (sorted by name), id = file stem; drafter files
    /// (`*.drafter.gguf`) are not models and are skipped.
    static func scan(directory: String) throws -> [ModelEntry] {
        let names: [String]
        do {
            names = try FileManager.default.contentsOfDirectory(atPath: directory)
        } catch {
            throw ConfigError.modelsDirectory(path: directory, reason: (error as NSError).localizedDescription)
        }
        return names.filter { $0.hasSuffix(".gguf") && !$0.hasSuffix(".drafter.gguf") }.sorted().map {
            ModelEntry(id: id(forPath: $0), path: (directory as NSString).appendingPathComponent($0))
        }
    }

    /// The server's list: the `model` (`--model`) entry first (the default, with `model_aliases`),
    /// then config `models`, then the files of `models_dir`. An entry whose id is taken by an
    /// earlier one with the same file is dropped (a models directory that holds the default model);
    /// the same id for two files, or an alias that names two models, is an error naming both.
    static func list(settings: ServerConfig) throws -> [ModelEntry] {
        var entries = [ModelEntry(id: id(forPath: settings.model), path: settings.model, aliases: settings.modelAliases)]
        entries += settings.models
        if let directory = settings.modelsDir { entries += try scan(directory: directory) }
        var out: [ModelEntry] = []
        for entry in entries {
            if let earlier = out.firstIndex(where: { $0.id == entry.id }) {
                guard sameFile(out[earlier].path, entry.path) else {
                    throw ConfigError.duplicateModel(id: entry.id, first: out[earlier].path, second: entry.path)
                }
                // The same file twice (the default model listed again): the later entry's settings win.
                if earlier == 0 && entry != out[0] && !settings.models.isEmpty && settings.models.contains(entry) {
                    var merged = entry
                    merged.aliases = Array(Set(out[0].aliases + entry.aliases)).sorted()
                    out[0] = merged
                }
                continue
            }
            out.append(entry)
        }
        var owner: [String: String] = [:]
        for entry in out {
            for name in [entry.id] + entry.aliases {
                if let other = owner[name], other != entry.id { throw ConfigError.ambiguousModelName(name: name, first: other, second: entry.id) }
                owner[name] = entry.id
            }
        }
        return out
    }

    /// Whether two paths name the same file (after resolving links).
    static func sameFile(_ a: String, _ b: String) -> Bool {
        URL(fileURLWithPath: a).resolvingSymlinksInPath().path == URL(fileURLWithPath: b).resolvingSymlinksInPath().path
    }
}
