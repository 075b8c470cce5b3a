import Foundation
import Testing
import GGUF
import Kernels
import Model
import Speculation

/// Writes a learned drafter's GGUF as the training tool does (drafter contract: metadata keys,
/// `draft.*` tensors, ggml shape order ne0 = input width), with hooks to break it.
struct DrafterFileWriter {
    var strings: [String: String]
    var integers: [String: UInt32]
    /// name -> (ggml dims, type id, bytes)
    var tensors: [(name: String, dims: [Int], type: UInt32, bytes: [UInt8])] = []

    init(target: ModelConfig, parameters p: LearnedDrafterWeights.Parameters, matrixType: UInt32 = 0) {
        strings = ["general.architecture": "cast-drafter", "cast-drafter.kind": "feature-mlp",
                   "cast-drafter.target.architecture": target.architecture, "cast-drafter.target.sha256": "0",
                   "cast-drafter.training": "{\"seed\": 1, \"test\": true}"]
        integers = ["cast-drafter.embedding_length": UInt32(p.embeddingLength), "cast-drafter.feed_forward_length": UInt32(p.feedForwardLength),
                    "cast-drafter.target.vocab_size": UInt32(target.vocabularySize),
                    "cast-drafter.target.embedding_length": UInt32(target.embeddingLength)]
        let d = p.embeddingLength, m = p.feedForwardLength
        func f32(_ v: [Float]) -> [UInt8] { v.withUnsafeBytes { Array($0) } }
        func matrix(_ v: [Float]) -> [UInt8] {
            guard matrixType == 1 else { return f32(v) }
            var half = [UInt16](repeating: 0, count: v.count)
            v.withUnsafeBufferPointer { x in half.withUnsafeMutableBufferPointer { Ops.floatToHalf(x.baseAddress!, $0.baseAddress!, count: v.count) } }
            return half.withUnsafeBytes { Array($0) }
        }
        tensors = [
            ("draft.vocab", [p.vocabulary.count], 26, p.vocabulary.withUnsafeBytes { Array($0) }),
            ("draft.enorm.weight", [d], 0, f32(p.embeddingNorm)), ("draft.fnorm.weight", [d], 0, f32(p.featureNorm)),
            ("draft.in.weight", [2 * d, d], matrixType, matrix(p.inputWeight)), ("draft.in.bias", [d], 0, f32(p.inputBias)),
            ("draft.mnorm.weight", [d], 0, f32(p.middleNorm)), ("draft.gate.weight", [d, m], matrixType, matrix(p.gateWeight)),
            ("draft.up.weight", [d, m], matrixType, matrix(p.upWeight)), ("draft.down.weight", [m, d], matrixType, matrix(p.downWeight)),
        ]
    }

    func bytes() -> [UInt8] {
        var out: [UInt8] = []
        func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { out += $0 } }
        func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { out += $0 } }
        func str(_ s: String) { u64(UInt64(s.utf8.count)); out += Array(s.utf8) }
        u32(0x4655_4747)
        u32(3)
        u64(UInt64(tensors.count))
        u64(UInt64(strings.count + integers.count))
        for (k, v) in strings.sorted(by: { $0.key < $1.key }) { str(k); u32(8); str(v) }
        for (k, v) in integers.sorted(by: { $0.key < $1.key }) { str(k); u32(4); u32(v) }
        var offset = 0
        for t in tensors {
            str(t.name)
            u32(UInt32(t.dims.count))
            for dim in t.dims { u64(UInt64(dim)) }
            u32(t.type)
            u64(UInt64(offset))
            offset += (t.bytes.count + 31) / 32 * 32
        }
        while out.count % 32 != 0 { out.append(0) }
        for t in tensors {
            out += t.bytes
            while out.count % 32 != 0 { out.append(0) }
        }
        return out
    }

    func write() -> String {
        let path = NSTemporaryDirectory() + "drafter-\(UUID().uuidString).gguf"
        _ = FileManager.default.createFile(atPath: path, contents: Data(bytes()))
        return path
    }
}

/// The learned drafter on the default model with untrained (seeded random) weights: its file is
/// checked against the target with errors naming the key or tensor, its layer equals a float64
/// reference computed here, rows are batch-invariant, trees are valid and gated, and per-slot state
/// follows the slot.
@Suite(.serialized) struct LearnedDrafterTests {
    static var model: Result<Transformer, Error> { SkipDrafterTests.model }
    static let feedForward = 256, draftTokens = 2048

    static func parameters(_ model: Transformer, seed: UInt64 = 7) -> LearnedDrafterWeights.Parameters {
        .random(embeddingLength: model.config.embeddingLength, feedForwardLength: feedForward, draftTokens: draftTokens, seed: seed)
    }

    // MARK: - (a) the file

    @Test func aWrittenFileLoadsWithItsValues() throws {
        let model = try Self.model.get()
        let p = Self.parameters(model)
        for matrixType: UInt32 in [0, 1] {
            let path = DrafterFileWriter(target: model.config, parameters: p, matrixType: matrixType).write()
            defer { try? FileManager.default.removeItem(atPath: path) }
            let w = try LearnedDrafterWeights(path: path, target: model, matrixFormat: .f32)
            #expect(w.vocabulary == p.vocabulary && w.embeddingLength == model.config.embeddingLength && w.feedForwardLength == Self.feedForward)
            #expect(w.training.contains("seed"))
        }
    }

    /// One broken file per check, and the words its error must carry (the key or tensor named).
    @Test func badFilesAreTypedErrorsNamingTheKeyOrTensor() throws {
        let model = try Self.model.get()
        let good = DrafterFileWriter(target: model.config, parameters: Self.parameters(model))
        var cases: [(String, DrafterFileWriter, [String])] = []
        var w = good
        w.strings["general.architecture"] = "llama"
        cases.append(("a model, not a drafter", w, ["general.architecture", "llama", "cast-drafter"]))
        w = good
        w.strings["cast-drafter.kind"] = "eagle"
        cases.append(("another kind", w, ["cast-drafter.kind", "eagle", "feature-mlp"]))
        w = good
        w.strings["cast-drafter.training"] = nil
        cases.append(("a missing key", w, ["cast-drafter.training"]))
        w = good
        w.integers["cast-drafter.target.vocab_size"] = 1000
        cases.append(("another vocabulary", w, ["cast-drafter.target.vocab_size", "1000", String(model.config.vocabularySize)]))
        w = good
        w.integers["cast-drafter.target.embedding_length"] = 640
        cases.append(("another embedding length", w, ["cast-drafter.target.embedding_length", "640"]))
        w = good
        w.strings["cast-drafter.target.architecture"] = "gemma3"
        cases.append(("another architecture", w, ["cast-drafter.target.architecture", "gemma3", model.config.architecture]))
        w = good
        w.tensors.removeAll { $0.name == "draft.up.weight" }
        cases.append(("a missing tensor", w, ["draft.up.weight", "missing"]))
        w = good
        w.tensors[w.tensors.firstIndex { $0.name == "draft.in.bias" }!].dims = [model.config.embeddingLength / 2]
        w.tensors[w.tensors.firstIndex { $0.name == "draft.in.bias" }!].bytes.removeLast(model.config.embeddingLength * 2)
        cases.append(("a wrong shape", w, ["draft.in.bias", "shape"]))
        w = good
        w.tensors[w.tensors.firstIndex { $0.name == "draft.enorm.weight" }!].type = 26
        cases.append(("a wrong type", w, ["draft.enorm.weight", "I32", "F32"]))
        w = good
        let big = Int32(model.config.vocabularySize + 5)
        w.tensors[0].bytes = ([big] + (1..<Int32(Self.draftTokens)).map { $0 }).withUnsafeBytes { Array($0) }
        cases.append(("a token outside the vocabulary", w, ["draft.vocab", String(big)]))
        for (what, writer, words) in cases {
            let path = writer.write()
            defer { try? FileManager.default.removeItem(atPath: path) }
            do {
                _ = try LearnedDrafterWeights(path: path, target: model)
                Issue.record("\(what): loaded")
            } catch let error as SpeculationError {
                for word in words { #expect(error.description.contains(word), "\(what): \(error) lacks '\(word)'") }
            }
        }
        #expect(throws: SpeculationError.self) { try LearnedDrafterWeights(path: "/nonexistent/x.drafter.gguf", target: model) }
        // The target itself is a GGUF but not a drafter.
        do {
            _ = try LearnedDrafterWeights(path: SkipDrafterTests.modelPath, target: model)
            Issue.record("the target model loaded as a drafter")
        } catch let error as SpeculationError {
            #expect(error.description.contains("general.architecture"), "\(error)")
        }
    }

    // MARK: - (b) the forward pass against float64

    /// Normalised mean squared error of a layer's outputs against the float64 reference, per
    /// matrix format: F32 matrices differ by f32 rounding only (measured 4e-14 on features, 1e-13
    /// on logits); Q8_0 adds the int8 quantization of weights and of the activations of four chained
    /// matmuls (measured 1.0e-4 on features, 3.4e-4 on logits).
    static let f32NMSE = 1e-9, q8_0NMSE = 1e-3

    /// The drafter's layer in Double from the parameters and the target's own embedding, head rows
    /// and output norm: `(feature [d], logits [K])` for input feature `f` and token `x`.
    static func reference(_ p: LearnedDrafterWeights.Parameters, model: Transformer, feature f: [Float], token x: Int32) -> ([Double], [Double]) {
        let d = p.embeddingLength, m = p.feedForwardLength
        let eps = Double(model.config.rmsEpsilon)
        func rms(_ v: [Double], _ w: [Float]) -> [Double] {
            let s = 1 / (v.reduce(0) { $0 + $1 * $1 } / Double(v.count) + eps).squareRoot()
            return zip(v, w).map { $0 * s * Double($1) }
        }
        func mul(_ w: [Float], rows: Int, _ v: [Double]) -> [Double] {
            (0..<rows).map { r in (0..<v.count).reduce(0.0) { $0 + Double(w[r * v.count + $1]) * v[$1] } }
        }
        var e = [Float](repeating: 0, count: d)
        model.tokenEmbedding(x, into: &e)
        let u = rms(e.map(Double.init), p.embeddingNorm), v = rms(f.map(Double.init), p.featureNorm)
        let z = zip(mul(p.inputWeight, rows: d, u + v), p.inputBias).map { $0 + Double($1) }
        let g = rms(z, p.middleNorm)
        let gate = mul(p.gateWeight, rows: m, g), up = mul(p.upWeight, rows: m, g)
        let a = zip(gate, up).map { $0 / (1 + exp(-$0)) * $1 }
        let out = zip(z, mul(p.downWeight, rows: d, a)).map { $0 + $1 }
        let h = rms(out, model.outputNormWeights)
        var row = [Float](repeating: 0, count: d)
        let logits = p.vocabulary.map { id -> Double in
            model.outputHeadRow(Int(id), into: &row)
            let l = zip(row, h).reduce(0.0) { $0 + Double($1.0) * $1.1 }
            return model.config.finalLogitSoftcap.map { Double($0) * tanh(l / Double($0)) } ?? l
        }
        return (out, logits)
    }

    static func nmse(_ a: [Float], _ b: [Double]) -> Double {
        zip(a, b).reduce(0.0) { $0 + (Double($1.0) - $1.1) * (Double($1.0) - $1.1) } / max(b.reduce(0.0) { $0 + $1 * $1 }, 1e-30)
    }

    /// Seeded inputs: `rows` features (like the target's: a few large coordinates) and tokens.
    static func inputs(rows: Int, d: Int, seed: UInt64) -> ([Float], [Int32]) {
        var s = seed
        func next() -> Float {
            s = s &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return Float(s >> 40) / Float(1 << 24) * 2 - 1
        }
        let features = (0..<(rows * d)).map { i in next() * (i % 97 == 0 ? 20 : 2) }
        let tokens = (0..<rows).map { _ in Int32(abs(next()) * 40000) }
        return (features, tokens)
    }

    @Test(arguments: [WeightFormat.f32, .q8_0])
    func layerMatchesTheFloat64Reference(format: WeightFormat) throws {
        let model = try Self.model.get()
        let p = Self.parameters(model)
        let drafter = try LearnedDrafter(weights: LearnedDrafterWeights(parameters: p, target: model, matrixFormat: format), slots: 2,
                                         layerRows: 8, cost: LayerCost(points: [(1, 0.1)]))
        let d = model.config.embeddingLength
        let (features, tokens) = Self.inputs(rows: 3, d: d, seed: 11)
        let out = drafter.forward(features: features, tokens: tokens)
        var worst = (feature: 0.0, logits: 0.0)
        for r in 0..<tokens.count {
            let (f, l) = Self.reference(p, model: model, feature: Array(features[(r * d)..<((r + 1) * d)]), token: tokens[r])
            let ef = Self.nmse(Array(out.features[(r * d)..<((r + 1) * d)]), f)
            let el = Self.nmse(Array(out.logits[(r * Self.draftTokens)..<((r + 1) * Self.draftTokens)]), l)
            worst = (max(worst.feature, ef), max(worst.logits, el))
        }
        let bound = format == .f32 ? Self.f32NMSE : Self.q8_0NMSE
        #expect(worst.feature < bound && worst.logits < bound, "\(format): NMSE features \(worst.feature), logits \(worst.logits)")
        print("learned drafter layer vs float64, \(format): NMSE features \(worst.feature), logits \(worst.logits)")
    }

    // MARK: - (e) batching invariance

    @Test func rowsAndTreesDoNotDependOnTheBatch() throws {
        let model = try Self.model.get()
        let weights = try LearnedDrafterWeights(parameters: Self.parameters(model), target: model)
        let drafter = try LearnedDrafter(weights: weights, slots: 4, cost: LayerCost(points: [(1, 0.1)]))
        let d = model.config.embeddingLength
        let (features, tokens) = Self.inputs(rows: 5, d: d, seed: 3)
        let together = drafter.forward(features: features, tokens: tokens)
        for r in 0..<tokens.count {
            let alone = drafter.forward(features: Array(features[(r * d)..<((r + 1) * d)]), tokens: [tokens[r]])
            #expect(alone.features == Array(together.features[(r * d)..<((r + 1) * d)]), "row \(r): feature changed in a batch")
            #expect(alone.logits == Array(together.logits[(r * Self.draftTokens)..<((r + 1) * Self.draftTokens)]), "row \(r): logits changed")
        }
        // Trees: each sequence's tree alone equals its tree among the others.
        let histories: [[Int32]] = [[504, 3575, 282], [1, 9690, 198, 2683], [23, 24], [504, 2988, 314, 42, 30]]
        for (slot, h) in histories.enumerated() {
            drafter.observeFeature(slot: slot, position: h.count - 2, feature: Array(features[(slot * d)..<((slot + 1) * d)]))
        }
        let inputs = histories.enumerated().map { DraftInput(slot: $0, history: $1, maxNodes: 10, maxDepth: 4) }
        let all = try drafter.propose(inputs)
        for (i, input) in inputs.enumerated() {
            let alone = try drafter.propose([input])[0]
            #expect(alone == all[i], "sequence \(i): its tree changed with the batch")
            #expect(!alone.isEmpty && alone.count <= 10 && alone.maxDepth <= 4)
            for n in 0..<alone.count {
                #expect(alone.parents[n] < n && alone.sources[n] == DraftSource.learned)
                #expect(alone.scores[n] <= (alone.parents[n] < 0 ? 1 : alone.scores[alone.parents[n]]))
            }
        }
    }

    // MARK: - (f) per-slot state, and the gate

    @Test func aSlotDraftsOnlyWithItsOwnCurrentFeature() throws {
        let model = try Self.model.get()
        let weights = try LearnedDrafterWeights(parameters: Self.parameters(model), target: model)
        let drafter = try LearnedDrafter(weights: weights, slots: 2, cost: LayerCost(points: [(1, 0.1)]))
        let feature = [Float](repeating: 0.5, count: model.config.embeddingLength)
        let history: [Int32] = [504, 3575, 282, 4649]
        let input = DraftInput(slot: 1, history: history, maxNodes: 6, maxDepth: 3)
        #expect(try drafter.propose([input])[0].isEmpty, "no feature yet")
        drafter.observeFeature(slot: 1, position: history.count - 2, feature: feature)
        #expect(drafter.featurePosition(slot: 1) == history.count - 2 && drafter.slotsHeld == 1)
        #expect(!(try drafter.propose([input])[0].isEmpty))
        // A feature of another position (a stale one) does not draft.
        #expect(try drafter.propose([DraftInput(slot: 1, history: history + [9], maxNodes: 6, maxDepth: 3)])[0].isEmpty)
        drafter.release(slot: 1)
        #expect(drafter.featurePosition(slot: 1) == nil && drafter.slotsHeld == 0)
        #expect(try drafter.propose([input])[0].isEmpty, "a released slot drafts nothing")
    }

    final class FixedGate: LayerGate {
        let rows: Int
        var asked: [[FrontierNode]] = []
        init(rows: Int) { self.rows = rows }
        func expansion(of frontier: [FrontierNode], trees: [DraftTree], inputs: [DraftInput], source: UInt8, spentMilliseconds: Double,
                       layerMilliseconds: (Int) -> Double) -> Int {
            asked.append(frontier)
            #expect(source == DraftSource.learned && layerMilliseconds(frontier.count) > 0)
            return rows
        }
    }

    @Test func theGateDecidesHowFarTheFrontierGrows() throws {
        let model = try Self.model.get()
        let weights = try LearnedDrafterWeights(parameters: Self.parameters(model), target: model)
        let drafter = try LearnedDrafter(weights: weights, slots: 2, width: 2, cost: LayerCost(points: [(1, 0.1), (64, 1)]))
        let feature = [Float](repeating: 0.25, count: model.config.embeddingLength)
        drafter.observeFeature(slot: 0, position: 1, feature: feature)
        drafter.observeFeature(slot: 1, position: 2, feature: feature)
        let inputs = [DraftInput(slot: 0, history: [1, 2, 3], maxNodes: 12, maxDepth: 5), DraftInput(slot: 1, history: [4, 5, 6, 7], maxNodes: 12, maxDepth: 5)]
        let stop = FixedGate(rows: 0)
        #expect(try drafter.propose(inputs, gate: stop).allSatisfy(\.isEmpty))
        #expect(stop.asked.count == 1 && stop.asked[0] == [FrontierNode(tree: 0, node: -1), FrontierNode(tree: 1, node: -1)])
        // One node per layer: the first layer expands the first root only (the other sequence
        // does not draft), each later layer the best node, for all 8 layers (2 children each, the
        // best 12 kept).
        let one = FixedGate(rows: 1)
        let trees = try drafter.propose(inputs, gate: one)
        #expect(trees[1].isEmpty && trees[0].count == 12 && trees[0].maxDepth <= 5, "\(trees)")
        #expect(one.asked.count == 8 && one.asked.dropFirst().allSatisfy { $0.allSatisfy { $0.tree == 0 && $0.node >= 0 } })
    }
}

/// What one frontier layer costs with F32 and with Q8_0 matrices, by rows, at a trained drafter's
/// size (d of the target, m = 1536, K = 16384): `LEARNED_BENCH=1 swift test -c release --filter LearnedDrafterBench`.
@Suite struct LearnedDrafterBench {
    @Test func layerCostByFormat() throws {
        guard ProcessInfo.processInfo.environment["LEARNED_BENCH"] != nil else { return }
        let model = try SkipDrafterTests.model.get()
        let p = LearnedDrafterWeights.Parameters.random(embeddingLength: model.config.embeddingLength, feedForwardLength: 1536,
                                                        draftTokens: 16384, seed: 1)
        for format in [WeightFormat.f32, .q8_0] {
            let drafter = try LearnedDrafter(weights: LearnedDrafterWeights(parameters: p, target: model, matrixFormat: format), slots: 8)
            print("learned drafter layer, \(format): " + drafter.cost.points.map { String(format: "%d rows %.3f ms", $0.rows, $0.ms) }.joined(separator: ", "))
        }
    }
}
