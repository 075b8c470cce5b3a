import Foundation
import GGUF
import Kernels
import Model

/// Paths and shared objects for the model tests.
enum TestSupport {
    static let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()
    static let modelPath = repositoryRoot.appendingPathComponent("models/SmolLM2-135M-Instruct.Q4_1.gguf").path
    static let fixtures = repositoryRoot.appendingPathComponent("Tests/Fixtures")

    struct MissingModel: Error, CustomStringConvertible {
        var description: String { "default model missing at \(TestSupport.modelPath): run `make model` (make test does it first)" }
    }

    /// The default model file, opened once.
    static let file: Result<GGUFFile, Error> = Result {
        guard FileManager.default.fileExists(atPath: modelPath) else { throw MissingModel() }
        return try GGUFFile(path: modelPath)
    }

    /// The default model on each kernel set, loaded once per set for all tests (2 threads, room
    /// for trees and chunks). Guarded by `lock`.
    nonisolated(unsafe) private static var models: [KernelSet: Transformer] = [:]

    /// Serialises tests that run a shared model (it is not thread-safe).
    static let lock = NSLock()

    /// Runs `body` with the default model on `kernels` (loaded on first use), one test at a time.
    static func withModel<T>(kernels: KernelSet = .current, _ body: (Transformer) throws -> T) throws -> T {
        lock.lock()
        defer { lock.unlock() }
        if models[kernels] == nil {
            models[kernels] = try Transformer(file: file.get(), threads: 2, maxStepRows: 160, maxLogitRows: 160, maxContext: 1024,
                                              kernels: kernels)
        }
        return try body(models[kernels]!)
    }

    /// Every kernel set this CPU runs, and the SIMD ones among them.
    static let runnableSets = KernelSet.runnable
    static let simdSets = KernelSet.runnable.filter { $0.name != .scalar }

    static func fixture(_ name: String) throws -> Data {
        try Data(contentsOf: fixtures.appendingPathComponent(name))
    }
}

extension Transformer {
    /// Copies logit row `i` of the last forward call.
    func logitRow(_ i: Int) -> [Float] {
        Array(UnsafeBufferPointer(start: logits + i * config.vocabularySize, count: config.vocabularySize))
    }
}
