import Foundation
import GGUF
import Kernels
import Model
import Testing

/// The architectures without a small real model offline (qwen2, qwen3, llama with Llama 3 RoPE
/// factors and linear RoPE scaling, gemma3 with a short sliding window) on tiny synthetic GGUFs
/// (Tests/Fixtures/synthetic/, random Q8_0 weights, written by tools/reference/gen_synthetic.py)
/// against the float64 reference on the same files (Tests/Fixtures/synthetic_logits.json).
///
/// Every position of a 24-token sequence is compared: a whole prefill, then the same tokens fed
/// one per step (the cached path), which must give the same logits bit for bit (the row's result
/// never depends on its batch; on gemma3_swa the window of 5 cuts through cached positions).
@Suite struct SyntheticArchitectureTests {
    struct Fixture: Decodable {
        struct Model: Decodable {
            var file: String
            var architecture: String
            var tokens: [Int32]
            var logits: [[Float]]
        }
        var models: [String: Model]
    }

    /// Largest |Δlogit| allowed against float64: the kernels quantize activations to 8 bits per
    /// block before each Q8_0 matrix product, which on these random models (logits within about
    /// ±4, standard deviation 1) moves logits by up to 0.20 (qwen3; measured on avx2, avx512 and
    /// scalar). The same models with F32 weights (gen_synthetic.py with SYNTHETIC_F32=1, exact
    /// matrix products) agree with float64 to within 1e-3, so the forward pass itself is exact.
    static let maxLogitError: Float = 0.3
    /// The reference's argmax must be ours wherever its top-2 margin exceeds this.
    static let argmaxMargin: Float = 0.1

    static let fixture: Fixture? = try? JSONDecoder().decode(Fixture.self, from: TestSupport.fixture("synthetic_logits.json"))
    static let names = ["qwen2", "qwen3", "llama3_rope", "gemma3_swa"]

    @Test(arguments: names, TestSupport.runnableSets)
    func logitsMatchTheFloat64Reference(name: String, kernels: KernelSet) throws {
        let entry = try #require(Self.fixture?.models[name], "Tests/Fixtures/synthetic_logits.json lacks \(name)")
        let path = TestSupport.fixtures.appendingPathComponent("synthetic/\(entry.file)").path
        let model = try Transformer(file: GGUFFile(path: path), threads: 2, maxStepRows: 32, maxLogitRows: 32, maxContext: 64,
                                    kernels: kernels)
        #expect(model.config.architecture == entry.architecture)
        let n = entry.tokens.count, vocab = model.config.vocabularySize

        let whole = model.makeCache(slots: 1, capacity: 64, type: .f32)
        try model.forward(BatchRow.chain(slot: 0, tokens: entry.tokens[...], startPosition: 0, allLogits: true), cache: whole)
        var worst: Float = 0, argmaxAgree = 0, argmaxChecked = 0
        var prefill: [[Float]] = []
        for i in 0..<n {
            let ours = model.logitRow(i)
            prefill.append(ours)
            let ref = entry.logits[i]
            for t in 0..<vocab { worst = max(worst, abs(ours[t] - ref[t])) }
            let sorted = ref.sorted(by: >)
            if sorted[0] - sorted[1] > Self.argmaxMargin {
                argmaxChecked += 1
                if ours.indices.max(by: { ours[$0] < ours[$1] }) == ref.indices.max(by: { ref[$0] < ref[$1] }) { argmaxAgree += 1 }
            }
        }
        print("synthetic \(name) on \(kernels.name): max |Δlogit| \(worst), argmax \(argmaxAgree)/\(argmaxChecked) (margin > \(Self.argmaxMargin))")
        #expect(worst <= Self.maxLogitError, "\(name) on \(kernels.name): max |Δlogit| \(worst)")
        #expect(argmaxAgree == argmaxChecked, "\(name): argmax agrees at \(argmaxAgree)/\(argmaxChecked) positions with margin")

        let stepwise = model.makeCache(slots: 1, capacity: 64, type: .f32)
        for i in 0..<n {
            try model.forward([BatchRow(slot: 0, token: entry.tokens[i], position: i)], cache: stepwise)
            #expect(model.logitRow(0) == prefill[i], "\(name): position \(i) decoded alone differs from the prefill")
            try stepwise.commit(slot: 0, rows: 0..<1)
        }
    }

    @Test func unknownArchitectureNamesTheSupportedOnes() {
        let error = ModelError.unsupportedArchitecture("mamba")
        #expect(error.description.contains("'mamba'"))
        for a in ["llama", "qwen2", "qwen3", "gemma3"] { #expect(error.description.contains(a)) }
    }
}
