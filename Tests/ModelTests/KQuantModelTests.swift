import Foundation
import GGUF
import Kernels
import Model
import Testing

/// Real K-quant weights: SmolLM2's weights re-quantized to the Q4_K_M, Q5_K_M, Q6_K and Q2_K mixes
/// (`make kquant-models`: tools/reference/kquantize.py, a numpy quantizer writing ggml's block layouts
/// with llama.cpp's per-tensor types; the files' sha256s are in tools/reference/MANIFEST.json). Each
/// file mixes K-quants (the 1536-wide ffn_down rows: Q4_K or Q5_K with Q6_K in the layers llama.cpp
/// gives more bits, Q6_K, Q3_K) with 32-block fallbacks for the 576-wide rows (Q5_0, Q5_1, Q8_0,
/// Q4_0). Our logits on every kernel set this CPU runs are compared with the float64 reference pass
/// over the same file (models/kquant_logits_reference.json, written with the files by
/// tools/reference/gen_kquant_reference.py).
///
/// Tolerances: the weights enter exactly (packed dequantization is gguf's, bit for bit), so the
/// difference is the int8 activations', as for the default model (LogitsReferenceTests): chaotic at
/// the worst position (a one-ulp change can flip a rounding), steady at the median. Keys and values
/// are kept as f32 here (the least noise). Measured on this 2-core AVX-512 host, 15 positions per
/// file, worst / median over the scalar, avx2 and avx512 sets, on the kquantize.py files: Q4_K_M
/// 1.04 / 0.57, Q5_K_M 1.46 / 0.59, Q6_K 1.00 / 0.52, Q2_K 1.49 / 0.55; on llama.cpp's own files of
/// the same mixes (requantize.py): Q4_K_M 1.33 / 0.54, Q5_K_M 1.56 / 0.70, Q6_K 1.07 / 0.44, Q2_K
/// 1.63 / 0.53 (with an f16 cache the worst reached 2.27 on Q5_K_M, medians unchanged). A wrong
/// layout or scale moves every position by many times the median bound.
enum KQuantLogitTolerance {
    /// Largest |Δlogit| over every compared logit (the top 20 and 64 probe ids at 15 positions):
    /// `maxAbsoluteLogitErrorLossyKV`, the default model's bound for its worst position.
    static let maxAbsolute: [String: Float] = ["Q4_K_M": 2.0, "Q5_K_M": 2.0, "Q6_K": 2.0, "Q2_K": 2.0]
    /// Median over positions of the position's largest |Δlogit|.
    static let median: [String: Float] = ["Q4_K_M": 0.75, "Q5_K_M": 0.85, "Q6_K": 0.75, "Q2_K": 0.75]
    /// The argmax must agree where the reference's top-2 margin exceeds this (`greedyNearTieMargin`:
    /// below it 8-bit activations may legitimately pick the other token).
    static let argmaxMargin: Float = greedyNearTieMargin
}

struct KQuantFixture: Decodable {
    struct Model: Decodable {
        var type: String
        var file: String
        var sha256: String
        var tensor_types: [String: Int]
        var probe_ids: [Int]
        var prompts: [LogitsFixture.Prompt]
    }
    var models: [Model]
}

/// Where `make kquant-models` wrote the files (KQUANT_DIR there; env CASTSERVE_KQUANT_DIR here), default models/.
private let kquantDirectory = ProcessInfo.processInfo.environment["CASTSERVE_KQUANT_DIR"].map { URL(fileURLWithPath: $0) }
    ?? TestSupport.repositoryRoot.appendingPathComponent("models")

private let kquantFixture: KQuantFixture? = try? JSONDecoder().decode(
    KQuantFixture.self, from: Data(contentsOf: kquantDirectory.appendingPathComponent("kquant_logits_reference.json")))

private func modelPath(_ file: String) -> String { kquantDirectory.appendingPathComponent(file).path }

/// The files of the fixture that `make kquant-models` has written.
private let presentKQuantModels: [String] =
    (kquantFixture?.models ?? []).filter { FileManager.default.fileExists(atPath: modelPath($0.file)) }.map(\.type)

private func sha256(_ path: String) throws -> String {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/sha256sum")
    p.arguments = [path]
    let pipe = Pipe()
    p.standardOutput = pipe
    try p.run()
    let out = pipe.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return String(decoding: out, as: UTF8.self).split(separator: " ").first.map(String.init) ?? ""
}

@Suite(.serialized) struct KQuantModelTests {
    @Test(.enabled(if: kquantFixture != nil, "run `make kquant-models` to write the re-quantized files"))
    func referenceListsEveryMix() throws {
        let types = Set(try #require(kquantFixture).models.map(\.type))
        #expect(types == ["Q4_K_M", "Q5_K_M", "Q6_K", "Q2_K"])
    }

    @Test(.enabled(if: !presentKQuantModels.isEmpty, "run `make kquant-models` to write the re-quantized files"),
          arguments: presentKQuantModels)
    func logitsMatchTheFloat64Reference(type: String) throws {
        let entry = try #require(kquantFixture?.models.first { $0.type == type })
        let path = modelPath(entry.file)
        let hash = try sha256(path)
        try #require(hash == entry.sha256,
                     "\(entry.file) has sha256 \(hash), the fixture was made from \(entry.sha256): re-run `make kquant-models` (kquantize.py and gen_kquant_reference.py together)")
        let file = try GGUFFile(path: path)
        var types: [String: Int] = [:]
        for t in file.tensors { types[t.type.name, default: 0] += 1 }
        #expect(types == entry.tensor_types)
        for kernels in TestSupport.runnableSets {
            let model = try Transformer(file: file, threads: 2, maxStepRows: 64, maxLogitRows: 64, maxContext: 128, kernels: kernels)
            let vocab = model.config.vocabularySize
            var perPosition: [Float] = []
            for prompt in entry.prompts {
                let cache = model.makeCache(slots: 1, capacity: prompt.ids.count + 1, type: .f32)
                try model.forward(BatchRow.chain(slot: 0, tokens: prompt.ids, startPosition: 0, allLogits: true), cache: cache)
                for p in prompt.positions {
                    let ours = model.logitRow(p.pos)
                    var err: Float = 0
                    for (k, id) in entry.probe_ids.enumerated() { err = max(err, abs(ours[id] - p.probe_logits[k])) }
                    for pair in p.top20 { err = max(err, abs(ours[Int(pair[0])] - Float(pair[1]))) }
                    perPosition.append(err)
                    #expect(err <= KQuantLogitTolerance.maxAbsolute[type]!, "\(type) \(kernels): \(prompt.name) position \(p.pos): max |Δlogit| \(err)")
                    let ourArgmax = ours.withUnsafeBufferPointer { Ops.argmax($0.baseAddress!, count: vocab) }
                    if p.margin > KQuantLogitTolerance.argmaxMargin {
                        #expect(ourArgmax == p.argmax, "\(type) \(kernels): \(prompt.name) position \(p.pos): argmax \(ourArgmax), reference \(p.argmax) (margin \(p.margin))")
                    }
                }
            }
            let median = perPosition.sorted()[perPosition.count / 2]
            #expect(median <= KQuantLogitTolerance.median[type]!, "\(type) \(kernels): median \(median)")
            print("\(type) logits vs float64 reference (kernels \(kernels)): \(perPosition.count) positions, worst \(perPosition.max()!), median \(median)")
        }
    }
}
