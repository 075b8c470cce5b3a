import Foundation

/// The measured step-cost model cached on disk, so a restart on the same machine skips the
/// start-up measurement. One JSON file per key; the key names everything the figures depend on:
/// the model file (a hash of its bytes), the CPU model, the compute threads, engine settings and the
/// build of the executable (its size and modification time).
///
/// Files are written atomically (temporary file, then rename); a missing, unreadable or
/// mismatched file is simply a cache miss.
public struct CostModelCache: Sendable {
    public let directory: String

    public init(directory: String) {
        self.directory = directory
    }

    /// The default directory: `$XDG_CACHE_HOME/castserve`, else `~/.cache/castserve`.
    public static var defaultDirectory: String {
        let env = ProcessInfo.processInfo.environment
        if let xdg = env["XDG_CACHE_HOME"], !xdg.isEmpty { return xdg + "/castserve" }
        return NSHomeDirectory() + "/.cache/castserve"
    }

    /// What a cached table was measured for.
    public struct Key: Sendable, Codable, Equatable {
        public var modelHash: String
        public var cpu: String
        public var threads: Int
        public var build: String
        public var variant: String

        /// `variant` separates tables measured under different engine settings (e.g. slots).
        public init(modelPath: String, threads: Int, variant: String) throws {
            modelHash = try Self.hash(file: modelPath)
            cpu = Self.cpuModel()
            self.threads = threads
            build = Self.buildIdentity()
            self.variant = variant
        }

        /// The file name for this key.
        public var fileName: String {
            var h = FNV1a()
            for part in [modelHash, cpu, String(threads), build, variant] { h.add(Array(part.utf8)); h.add([0]) }
            return String(format: "cost-%016llx.json", h.value)
        }

        /// FNV-1a over the file's bytes, 64 bits at a time (about 0.1 s for 100 MB).
        static func hash(file path: String) throws -> String {
            guard let handle = FileHandle(forReadingAtPath: path) else { throw CocoaError(.fileReadNoSuchFile) }
            defer { try? handle.close() }
            var h = FNV1a()
            var total = 0
            while let chunk = try handle.read(upToCount: 1 << 22), !chunk.isEmpty {
                chunk.withUnsafeBytes { raw in
                    let words = raw.count / 8
                    for i in 0..<words { h.mix(raw.loadUnaligned(fromByteOffset: i * 8, as: UInt64.self)) }
                    for i in (words * 8)..<raw.count { h.mix(UInt64(raw[i])) }
                }
                total += chunk.count
            }
            return String(format: "%016llx-%d", h.value, total)
        }

        static func cpuModel() -> String {
            guard let info = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8) else { return "unknown" }
            for line in info.split(separator: "\n") where line.hasPrefix("model name") {
                return line.split(separator: ":", maxSplits: 1).last.map { $0.trimmingCharacters(in: .whitespaces) } ?? "unknown"
            }
            return "unknown"
        }

        static func buildIdentity() -> String {
            let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
            guard let a = try? FileManager.default.attributesOfItem(atPath: exe) else { return exe }
            let size = (a[.size] as? NSNumber)?.intValue ?? 0
            let time = (a[.modificationDate] as? Date)?.timeIntervalSince1970 ?? 0
            return "\(exe)|\(size)|\(Int(time))"
        }
    }

    struct Entry: Codable {
        var key: Key
        var measuredAt: Date
        var model: CostModel
    }

    /// The cached model for `key`, or nil.
    public func load(_ key: Key) -> CostModel? {
        let path = directory + "/" + key.fileName
        guard let data = FileManager.default.contents(atPath: path),
              let entry = try? JSONDecoder().decode(Entry.self, from: data), entry.key == key else { return nil }
        return entry.model
    }

    /// Stores `model` under `key`; returns the file's path. Throws when the directory cannot be
    /// created or written.
    @discardableResult
    public func save(_ model: CostModel, for key: Key) throws -> String {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let path = directory + "/" + key.fileName
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        let data = try encoder.encode(Entry(key: key, measuredAt: Date(), model: model))
        let temporary = path + ".tmp-\(getpid())"
        try data.write(to: URL(fileURLWithPath: temporary))
        guard rename(temporary, path) == 0 else {
            try? FileManager.default.removeItem(atPath: temporary)
            throw CocoaError(.fileWriteUnknown)
        }
        return path
    }
}

/// 64-bit FNV-1a.
struct FNV1a {
    var value: UInt64 = 0xcbf2_9ce4_8422_2325
    mutating func mix(_ word: UInt64) {
        value = (value ^ word) &* 0x0000_0100_0000_01b3
    }
    mutating func add(_ bytes: [UInt8]) {
        for b in bytes { mix(UInt64(b)) }
    }
}
