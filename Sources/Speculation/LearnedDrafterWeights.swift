import Foundation
import GGUF
import Kernels
import Model

/// A learned drafter's weights (a "castserve drafter" GGUF: `general.architecture` =
/// `cast-drafter`, kind `feature-mlp`), checked against the target it drafts for and prepared for
/// the kernels once, at load.
///
/// The drafter is a feature-level MLP (EAGLE without attention; no KV cache of its own). One step
/// takes the target's feature f at position t (the residual after the last layer, before the
/// output norm) and the token x at t + 1, and predicts the feature at t + 1:
///
///     u  = rmsnorm(e(x)) * w_enorm ;  v = rmsnorm(f) * w_fnorm            [d] each
///     z  = W_in · [u | v] + b_in                                          [d]
///     z' = z + W_down · (silu(W_gate · g) ⊙ (W_up · g)),  g = rmsnorm(z) * w_mnorm
///     logits = H_sub · outputNorm(z')                                     [K], soft-capped as the target's
///
/// e(x) is the target's own embedding (as its forward computes it), H_sub the target's own output
/// head restricted to the draft vocabulary's K rows (gathered here, once), outputNorm the target's.
/// Norms use the target's RMS epsilon.
///
/// Matrices are held as Q8_0 by default (quantized here from the file's F32, F16 or Q8_0: the int8
/// kernels run them several times faster than f32 on one row; see the Speculation README for the
/// measured NMSE and cost) or as F32. A matrix whose input width is not a multiple of 32 stays F32.
///
/// Immutable after init; `target` must outlive it. Thread-safety: read-only.
public final class LearnedDrafterWeights: @unchecked Sendable {
    /// The file's `general.architecture` and `cast-drafter.kind`.
    public static let architecture = "cast-drafter"
    public static let kind = "feature-mlp"

    public let path: String
    /// d (the target's embedding length) and m (the MLP's hidden width).
    public let embeddingLength: Int
    public let feedForwardLength: Int
    /// The draft vocabulary: target token ids, most frequent first (`[K]`).
    public let vocabulary: [Int32]
    /// The sha256 the file names for its target GGUF (checked by the caller, a warning on mismatch).
    public let targetSHA256: String
    /// Provenance: the training command, seed and data recipe (one-line JSON).
    public let training: String
    /// How the matrices are held for the kernels.
    public let matrixFormat: WeightFormat
    /// The target model (its embedding is read per drafted token).
    public let target: Transformer

    let embeddingNorm: [Float]
    let featureNorm: [Float]
    let inputBias: [Float]
    let middleNorm: [Float]
    /// The target's output norm.
    let outputNorm: [Float]
    /// W_in `[d x 2d]`, [W_gate; W_up] `[2m x d]`, W_down `[d x m]`, H_sub `[K x d]`.
    let input: LinearWeights
    let gateUp: LinearWeights
    let down: LinearWeights
    let head: LinearWeights
    let epsilon: Float
    let softcap: Float?

    /// Loads the drafter at `path` for `target`.
    /// - Parameter matrixFormat: `.q8_0` (default) or `.f32`.
    /// - Throws: `SpeculationError` naming the key or tensor that does not fit, and the fix.
    public convenience init(path: String, target: Transformer, matrixFormat: WeightFormat = .q8_0) throws {
        let file: GGUFFile
        do {
            file = try GGUFFile(path: path)
        } catch {
            throw SpeculationError.drafterUnreadable(path: path, reason: "\(error)")
        }
        try self.init(file: file, target: target, matrixFormat: matrixFormat)
    }

    /// The trained values, as f32 (row-major matrices `[rows x columns]`).
    public struct Parameters: Sendable {
        /// The draft vocabulary: target token ids, most frequent first (`[K]`).
        public var vocabulary: [Int32]
        public var embeddingNorm: [Float]   // [d]
        public var featureNorm: [Float]     // [d]
        public var inputWeight: [Float]     // [d x 2d]
        public var inputBias: [Float]       // [d]
        public var middleNorm: [Float]      // [d]
        public var gateWeight: [Float]      // [m x d]
        public var upWeight: [Float]        // [m x d]
        public var downWeight: [Float]      // [d x m]

        public init(vocabulary: [Int32], embeddingNorm: [Float], featureNorm: [Float], inputWeight: [Float], inputBias: [Float],
                    middleNorm: [Float], gateWeight: [Float], upWeight: [Float], downWeight: [Float]) {
            self.vocabulary = vocabulary
            self.embeddingNorm = embeddingNorm
            self.featureNorm = featureNorm
            self.inputWeight = inputWeight
            self.inputBias = inputBias
            self.middleNorm = middleNorm
            self.gateWeight = gateWeight
            self.upWeight = upWeight
            self.downWeight = downWeight
        }

        /// d and m.
        public var embeddingLength: Int { embeddingNorm.count }
        public var feedForwardLength: Int { gateWeight.count / max(embeddingNorm.count, 1) }

        /// An untrained drafter (for tests, and for measuring a drafter's cost before one is
        /// trained): norms near 1, matrices uniform in ±1/√(input width), the first `draftTokens`
        /// token ids as draft vocabulary; the same `seed` gives the same values.
        public static func random(embeddingLength d: Int, feedForwardLength m: Int, draftTokens: Int, seed: UInt64) -> Parameters {
            var state = seed &+ 0x9E37_79B9_7F4A_7C15
            func next() -> Float {
                // splitmix64
                state = state &+ 0x9E37_79B9_7F4A_7C15
                var z = state
                z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
                z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
                z ^= z >> 31
                return Float(z >> 40) / Float(1 << 24) * 2 - 1
            }
            func values(_ n: Int, scale: Float, offset: Float = 0) -> [Float] { (0..<n).map { _ in offset + scale * next() } }
            return Parameters(vocabulary: (0..<draftTokens).map(Int32.init), embeddingNorm: values(d, scale: 0.1, offset: 1),
                              featureNorm: values(d, scale: 0.1, offset: 1), inputWeight: values(d * 2 * d, scale: 1 / Float(2 * d).squareRoot()),
                              inputBias: values(d, scale: 0.01), middleNorm: values(d, scale: 0.1, offset: 1),
                              gateWeight: values(m * d, scale: 1 / Float(d).squareRoot()), upWeight: values(m * d, scale: 1 / Float(d).squareRoot()),
                              downWeight: values(d * m, scale: 1 / Float(m).squareRoot()))
        }
    }

    /// Loads the drafter from an open file (copied; the file may be closed after).
    public convenience init(file: GGUFFile, target: Transformer, matrixFormat: WeightFormat = .q8_0) throws {
        let path = file.path
        func string(_ key: String) throws -> String {
            guard let s = file.metadata[key]?.stringValue else { throw SpeculationError.drafterMissingKey(path: path, key: key, expected: "a string") }
            return s
        }
        func int(_ key: String) throws -> Int {
            guard let i = file.metadata[key]?.intValue else { throw SpeculationError.drafterMissingKey(path: path, key: key, expected: "an integer") }
            return i
        }
        let architecture = try string("general.architecture")
        guard architecture == Self.architecture else {
            throw SpeculationError.drafterWrongKind(path: path, key: "general.architecture", expected: Self.architecture, found: architecture)
        }
        let kind = try string("cast-drafter.kind")
        guard kind == Self.kind else {
            throw SpeculationError.drafterWrongKind(path: path, key: "cast-drafter.kind", expected: Self.kind, found: kind)
        }
        let config = target.config
        let d = try int("cast-drafter.embedding_length")
        let m = try int("cast-drafter.feed_forward_length")
        let targetArchitecture = try string("cast-drafter.target.architecture")
        let targetVocabulary = try int("cast-drafter.target.vocab_size")
        let targetEmbedding = try int("cast-drafter.target.embedding_length")
        let sha = try string("cast-drafter.target.sha256")
        let training = try string("cast-drafter.training")
        let checks: [(String, String, String)] = [
            ("cast-drafter.target.architecture", targetArchitecture, config.architecture),
            ("cast-drafter.target.vocab_size", String(targetVocabulary), String(config.vocabularySize)),
            ("cast-drafter.target.embedding_length", String(targetEmbedding), String(config.embeddingLength)),
            ("cast-drafter.embedding_length", String(d), String(config.embeddingLength)),
        ]
        for (key, mine, theirs) in checks where mine != theirs {
            throw SpeculationError.drafterTargetMismatch(path: path, key: key, drafter: mine, target: theirs)
        }
        guard m >= 1 else {
            throw SpeculationError.drafterTensor(path: path, tensor: "cast-drafter.feed_forward_length", problem: "is \(m); it must be at least 1")
        }

        func tensor(_ name: String, _ shape: [Int], types: [GGMLType]) throws -> TensorInfo {
            guard let t = file.tensor(named: name) else {
                throw SpeculationError.drafterTensor(path: path, tensor: name, problem: "is missing")
            }
            guard t.dimensions == shape else {
                throw SpeculationError.drafterTensor(path: path, tensor: name, problem: "has shape \(t.dimensions); expected \(shape)")
            }
            guard types.contains(t.type) else {
                throw SpeculationError.drafterTensor(path: path, tensor: name,
                                                     problem: "has type \(t.type.name); expected \(types.map(\.name).joined(separator: " or "))")
            }
            return t
        }
        func vector(_ name: String, _ count: Int) throws -> [Float] {
            Array(file.bytes(of: try tensor(name, [count], types: [.f32])).bindMemory(to: Float.self))
        }
        /// A matrix `[rows x columns]` (ggml ne0 = columns) as f32, row-major.
        func matrix(_ name: String, rows: Int, columns: Int) throws -> [Float] {
            let t = try tensor(name, [columns, rows], types: [.f32, .f16, .q8_0])
            let raw: LinearWeights
            do {
                raw = try LinearWeights(format: WeightFormat(ggmlName: t.type.name)!, outFeatures: rows, inFeatures: columns, bytes: file.bytes(of: t))
            } catch {
                throw SpeculationError.drafterTensor(path: path, tensor: name, problem: "cannot be read: \(error)")
            }
            var out = [Float](repeating: 0, count: rows * columns)
            out.withUnsafeMutableBufferPointer { o in
                for r in 0..<rows { raw.dequantizeRow(r, into: o.baseAddress! + r * columns) }
            }
            return out
        }

        // The draft vocabulary: one dimension of K I32 token ids.
        let draftCount = file.tensor(named: "draft.vocab").flatMap { $0.dimensions.count == 1 ? $0.dimensions[0] : nil } ?? -1
        let vocabularyTensor = try tensor("draft.vocab", [draftCount], types: [GGMLType(rawValue: 26)!])
        let parameters = Parameters(
            vocabulary: Array(file.bytes(of: vocabularyTensor).bindMemory(to: Int32.self)),
            embeddingNorm: try vector("draft.enorm.weight", d), featureNorm: try vector("draft.fnorm.weight", d),
            inputWeight: try matrix("draft.in.weight", rows: d, columns: 2 * d), inputBias: try vector("draft.in.bias", d),
            middleNorm: try vector("draft.mnorm.weight", d), gateWeight: try matrix("draft.gate.weight", rows: m, columns: d),
            upWeight: try matrix("draft.up.weight", rows: m, columns: d), downWeight: try matrix("draft.down.weight", rows: d, columns: m))
        try self.init(parameters: parameters, target: target, matrixFormat: matrixFormat, path: path, targetSHA256: sha, training: training)
    }

    /// A drafter from its values (the file loader's last step; tests build untrained ones).
    /// - Parameter path: where the values came from, for messages ("" when built in memory).
    /// - Throws: `SpeculationError` when the shapes do not fit the target or a draft token is
    ///   outside the target's vocabulary.
    public init(parameters p: Parameters, target: Transformer, matrixFormat: WeightFormat = .q8_0, path: String = "",
                targetSHA256: String = "", training: String = "") throws {
        precondition(matrixFormat == .q8_0 || matrixFormat == .f32, "the learned drafter holds its matrices as Q8_0 or F32")
        let config = target.config
        let d = p.embeddingLength, m = p.feedForwardLength
        guard d == config.embeddingLength else {
            throw SpeculationError.drafterTargetMismatch(path: path, key: "cast-drafter.embedding_length", drafter: String(d),
                                                         target: String(config.embeddingLength))
        }
        let shapes: [(String, Int, Int)] = [
            ("draft.fnorm.weight", p.featureNorm.count, d), ("draft.in.weight", p.inputWeight.count, d * 2 * d),
            ("draft.in.bias", p.inputBias.count, d), ("draft.mnorm.weight", p.middleNorm.count, d),
            ("draft.gate.weight", p.gateWeight.count, m * d), ("draft.up.weight", p.upWeight.count, m * d),
            ("draft.down.weight", p.downWeight.count, d * m),
        ]
        for (name, found, expected) in shapes where found != expected || m < 1 {
            throw SpeculationError.drafterTensor(path: path, tensor: name, problem: "has \(found) values; expected \(expected)")
        }
        guard !p.vocabulary.isEmpty else { throw SpeculationError.drafterTensor(path: path, tensor: "draft.vocab", problem: "is empty") }
        if let bad = p.vocabulary.firstIndex(where: { $0 < 0 || Int($0) >= config.vocabularySize }) {
            throw SpeculationError.drafterTensor(path: path, tensor: "draft.vocab",
                                                 problem: "holds token \(p.vocabulary[bad]) at \(bad), outside the target's vocabulary of \(config.vocabularySize)")
        }
        func prepared(_ values: [Float], rows: Int, columns: Int) throws -> LinearWeights {
            try values.withUnsafeBufferPointer { v in
                if matrixFormat == .q8_0 && columns % 32 == 0 {
                    return try LinearWeights(quantizingToQ8_0: v.baseAddress!, outFeatures: rows, inFeatures: columns)
                }
                return try LinearWeights(format: .f32, outFeatures: rows, inFeatures: columns, bytes: UnsafeRawBufferPointer(v))
            }
        }
        input = try prepared(p.inputWeight, rows: d, columns: 2 * d)
        gateUp = try prepared(p.gateWeight + p.upWeight, rows: 2 * m, columns: d)
        down = try prepared(p.downWeight, rows: d, columns: m)
        // The target's head rows of the draft vocabulary (a Q8_0 head requantizes to itself exactly).
        var rows = [Float](repeating: 0, count: p.vocabulary.count * d)
        rows.withUnsafeMutableBufferPointer { r in
            for (k, id) in p.vocabulary.enumerated() { target.outputHeadRow(Int(id), into: r.baseAddress! + k * d) }
        }
        head = try prepared(rows, rows: p.vocabulary.count, columns: d)
        vocabulary = p.vocabulary
        embeddingNorm = p.embeddingNorm
        featureNorm = p.featureNorm
        inputBias = p.inputBias
        middleNorm = p.middleNorm
        self.path = path
        embeddingLength = d
        feedForwardLength = m
        self.matrixFormat = matrixFormat
        self.target = target
        self.targetSHA256 = targetSHA256
        self.training = training
        outputNorm = target.outputNormWeights
        epsilon = config.rmsEpsilon
        softcap = config.finalLogitSoftcap
    }

    /// K, the draft vocabulary's size.
    public var vocabularyCount: Int { vocabulary.count }

    /// Bytes the kernels read for one frontier layer (the four matrices).
    public var weightBytes: Int { input.packedByteCount + gateUp.packedByteCount + down.packedByteCount + head.packedByteCount }
}
