import ArgumentParser
import Foundation
import GGUF
import Kernels
import Model

/// Why `cast-bench features` or `cast-bench replies` refused its input.
enum FeaturesError: Error, CustomStringConvertible {
    case inputUnreadable(path: String)
    case badSequence(path: String, line: Int, reason: String)
    case noSequences(path: String)
    case outputUnwritable(path: String)

    var description: String {
        switch self {
        case .inputUnreadable(let path):
            return "cannot read \(path); pass --input PATH, a JSON-lines file of {\"tokens\": [int...], \"prompt_tokens\": n}"
        case .badSequence(let path, let line, let reason):
            return "\(path):\(line): \(reason)"
        case .noSequences(let path):
            return "\(path) holds no sequences; write one {\"tokens\": [...], \"prompt_tokens\": n} object per line"
        case .outputUnwritable(let path):
            return "cannot create \(path); pass --out with a path in a writable directory"
        }
    }
}

/// One token sequence to compute features for (a line of the input of `cast-bench features`).
struct FeatureSequence: Codable {
    var tokens: [Int32]
    /// How many leading tokens are the prompt (the rest is the reply).
    var promptTokens: Int

    enum CodingKeys: String, CodingKey {
        case tokens
        case promptTokens = "prompt_tokens"
    }

    /// Reads a JSON-lines file of sequences and checks each against the model's vocabulary and
    /// context; errors name the file, the line and what to fix.
    static func load(path: String, vocabularySize: Int, maxLength: Int) throws -> [FeatureSequence] {
        guard let data = FileManager.default.contents(atPath: path) else { throw FeaturesError.inputUnreadable(path: path) }
        var sequences: [FeatureSequence] = []
        for (i, line) in String(decoding: data, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false).enumerated()
        where !line.trimmingCharacters(in: .whitespaces).isEmpty {
            let s: FeatureSequence
            do {
                s = try JSONDecoder().decode(FeatureSequence.self, from: Data(line.utf8))
            } catch {
                throw FeaturesError.badSequence(path: path, line: i + 1,
                                                reason: "not a {\"tokens\": [int...], \"prompt_tokens\": n} object (\(error))")
            }
            guard !s.tokens.isEmpty else { throw FeaturesError.badSequence(path: path, line: i + 1, reason: "'tokens' is empty") }
            guard s.tokens.count <= maxLength else {
                throw FeaturesError.badSequence(path: path, line: i + 1,
                                                reason: "\(s.tokens.count) tokens, more than the context of \(maxLength); shorten it or raise --max-context")
            }
            guard s.promptTokens >= 0 && s.promptTokens <= s.tokens.count else {
                throw FeaturesError.badSequence(path: path, line: i + 1,
                                                reason: "'prompt_tokens' is \(s.promptTokens), outside 0...\(s.tokens.count) (the token count)")
            }
            if let bad = s.tokens.first(where: { $0 < 0 || Int($0) >= vocabularySize }) {
                throw FeaturesError.badSequence(path: path, line: i + 1,
                                                reason: "token \(bad) is outside the model's vocabulary 0..<\(vocabularySize)")
            }
            sequences.append(s)
        }
        guard !sequences.isEmpty else { throw FeaturesError.noSequences(path: path) }
        return sequences
    }
}

extension CastBench {
    /// The target's features for a learned drafter's training: prefill over each sequence and
    /// write every row's residual stream after the last layer, before the output norm.
    ///
    /// Output (little-endian): magic "CSFT", version u32 = 1, embedding length d u32, vocabulary
    /// size u32; then per sequence: token count u32, prompt tokens u32, tokens i32 x count,
    /// features f16 x count x d (row t = the feature at position t).
    struct Features: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write the target's last-layer features (before the output norm) of token sequences.")

        @Option(help: "Path to the GGUF model.")
        var model = "models/SmolLM2-135M-Instruct.Q4_1.gguf"

        @Option(help: "Sequences: JSON lines of {\"tokens\": [int...], \"prompt_tokens\": n}.")
        var input: String

        @Option(help: "Where to write the features file.")
        var out: String

        @Option(help: "Kernel set: auto, avx512, avx2, neon or scalar (auto: the fastest this CPU runs).")
        var kernels = "auto"

        @Option(help: "Worker threads (default: all cores).")
        var threads = ProcessInfo.processInfo.activeProcessorCount

        @Option(help: "Longest sequence accepted (positions).")
        var maxContext = 4096

        func run() throws {
            let log: (String) -> Void = { FileHandle.standardError.write(Data(("cast-bench: " + $0 + "\n").utf8)) }
            guard maxContext >= 1 else { throw ValidationError("--max-context must be at least 1") }
            let kernelSet = try KernelSet.select(KernelChoice(parsing: kernels))
            let file = try GGUFFile(path: model)
            let transformer = try Transformer(file: file, threads: threads, maxStepRows: 512, maxLogitRows: 1, maxContext: maxContext,
                                              kernels: kernelSet)
            let d = transformer.config.embeddingLength
            let sequences = try FeatureSequence.load(path: input, vocabularySize: transformer.config.vocabularySize, maxLength: maxContext)
            let total = sequences.reduce(0) { $0 + $1.tokens.count }
            log("\(sequences.count) sequences, \(total) tokens, d = \(d), \(kernelSet) kernels")
            guard FileManager.default.createFile(atPath: out, contents: nil), let handle = FileHandle(forWritingAtPath: out) else {
                throw FeaturesError.outputUnwritable(path: out)
            }
            defer { try? handle.close() }
            var buffer = Data()
            func put(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { buffer.append(contentsOf: $0) } }
            buffer.append(contentsOf: Array("CSFT".utf8))
            put(1)
            put(UInt32(d))
            put(UInt32(transformer.config.vocabularySize))

            let cache = transformer.makeCache(slots: 1, capacity: maxContext, type: .f16)
            // The previous sequence's tokens and features (f16): a sequence that starts with the
            // same tokens (the greedy and the sampled reply to one prompt) reuses its cached rows.
            var previous: [Int32] = []
            var previousFeatures = [UInt16]()
            var features = [UInt16]()
            let clock = ContinuousClock()
            let started = clock.now
            var done = 0, lastReport = started
            for (index, s) in sequences.enumerated() {
                put(UInt32(s.tokens.count))
                put(UInt32(s.promptTokens))
                for t in s.tokens { withUnsafeBytes(of: t.littleEndian) { buffer.append(contentsOf: $0) } }
                // Rows before `shared` are the previous sequence's (their keys, values and features
                // depend on those tokens only); at least the last row is computed.
                var shared = 0
                while shared < min(previous.count, s.tokens.count - 1) && previous[shared] == s.tokens[shared] { shared += 1 }
                cache.truncate(slot: 0, to: shared)
                features.removeAll(keepingCapacity: true)
                features.append(contentsOf: previousFeatures.prefix(shared * d))
                try appendPrefillFeatures(transformer, cache: cache, tokens: s.tokens, from: shared, kernels: kernelSet, to: &features)
                features.withUnsafeBytes { buffer.append(contentsOf: $0) }
                previous = s.tokens
                swap(&previousFeatures, &features)
                done += s.tokens.count
                if buffer.count > 1 << 24 {
                    handle.write(buffer)
                    buffer.removeAll(keepingCapacity: true)
                }
                if (clock.now - lastReport).seconds > 5 || index == sequences.count - 1 {
                    lastReport = clock.now
                    log(String(format: "[%d/%d] %d/%d tokens, %.0f tok/s", index + 1, sequences.count, done, total,
                               Double(done) / max((clock.now - started).seconds, 1e-9)))
                }
            }
            handle.write(buffer)
        }
    }
}

/// Prefills `tokens[from...]` into slot 0 of `cache`, which holds the rows before `from`, in steps
/// of at most `maxStepRows` rows without logits, and appends each computed row's last-layer
/// feature (the residual stream before the output norm) to `features` as f16: what
/// `cast-bench features` writes and `cast-bench drafter-check` replays.
func appendPrefillFeatures(_ transformer: Transformer, cache: KVCache, tokens: [Int32], from: Int, kernels: KernelSet,
                           to features: inout [UInt16]) throws {
    let d = transformer.config.embeddingLength
    var half = [UInt16](repeating: 0, count: d)
    var start = from
    while start < tokens.count {
        let end = min(start + transformer.maxStepRows, tokens.count)
        let rows = (start..<end).map {
            BatchRow(slot: 0, token: tokens[$0], position: $0, parent: $0 == start ? -1 : $0 - start - 1, wantsLogits: false)
        }
        try transformer.forward(rows, cache: cache)
        try cache.commit(slot: 0, rows: 0..<rows.count)
        for r in 0..<rows.count {
            half.withUnsafeMutableBufferPointer {
                Ops.floatToHalf(transformer.lastLayerFeature(row: r), $0.baseAddress!, count: d, kernels: kernels)
            }
            features.append(contentsOf: half)
        }
        start = end
    }
}
