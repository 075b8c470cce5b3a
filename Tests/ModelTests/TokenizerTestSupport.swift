import Foundation
import GGUF
import Model
import Testing
import Tokenizer

/// Paths and shared objects for the tokenizer, chat-template and sampler tests.
enum TokenizerTestSupport {
    /// Repository root, derived from this file's path (Tests/ModelTests/ → ../..).
    static let repositoryRoot: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// The default model, which `make test` fetches before running the tests.
    static let modelPath = repositoryRoot.appendingPathComponent("models/SmolLM2-135M-Instruct.Q4_1.gguf").path

    /// llama.cpp's tokenizations of the default model (written by tools/reference).
    static let tokenizerFixturePath = repositoryRoot.appendingPathComponent("Tests/Fixtures/tokenizer.json").path

    /// Opens the default model, failing the test with instructions if it has not been fetched.
    static func modelFile(sourceLocation: SourceLocation = #_sourceLocation) throws -> GGUFFile {
        guard FileManager.default.fileExists(atPath: modelPath) else {
            Issue.record("model file \(modelPath) is missing; run `make model` first", sourceLocation: sourceLocation)
            throw MissingModel()
        }
        return try GGUFFile(path: modelPath)
    }

    /// The default model's tokenizer, loaded once per test process.
    static func defaultTokenizer(sourceLocation: SourceLocation = #_sourceLocation) throws -> Tokenizer {
        try cache.withLock { cached in
            if let cached { return cached }
            let tokenizer = try Tokenizer(gguf: modelFile(sourceLocation: sourceLocation))
            cached = tokenizer
            return tokenizer
        }
    }

    struct MissingModel: Error {}

    private static let cache = LockedBox<Tokenizer?>(nil)
}

/// A value guarded by a lock, for sharing a loaded model between parallel tests.
final class LockedBox<Value>: @unchecked Sendable {
    private let lock = NSLock()
    private var value: Value
    init(_ value: Value) { self.value = value }
    func withLock<R>(_ body: (inout Value) throws -> R) rethrows -> R {
        lock.lock()
        defer { lock.unlock() }
        return try body(&value)
    }
}
