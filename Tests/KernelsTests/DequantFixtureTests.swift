import Foundation
import Testing
import Kernels

/// Dequantization of real ggml blocks against gguf's `dequantize` (PyPI `gguf`), from the fixture
/// `Tests/Fixtures/kquant_dequant.json` (written by tools/reference/gen_kquant_fixture.py): random
/// blocks of every 5-bit, K-quant and BF16 format, and blocks gguf's quantizer wrote.
enum DequantTolerance {
    /// Largest difference allowed from gguf's values, in units in the last place, per format: the
    /// packed layout keeps each (sub-)block's scale and minimum as exact f32 products, so every value
    /// is the same single rounding gguf's numpy code does (README.md), and the bound is 0 for all.
    static let q5_0ULPs = 0, q5_1ULPs = 0, q2_KULPs = 0, q3_KULPs = 0, q4_KULPs = 0, q5_KULPs = 0, q6_KULPs = 0
    static let bf16ULPs = 0, iq4_nlULPs = 0

    static func ulps(_ format: WeightFormat) -> Int {
        switch format {
        case .q5_0: return q5_0ULPs
        case .q5_1: return q5_1ULPs
        case .q2_K: return q2_KULPs
        case .q3_K: return q3_KULPs
        case .q4_K: return q4_KULPs
        case .q5_K: return q5_KULPs
        case .q6_K: return q6_KULPs
        case .bf16: return bf16ULPs
        case .iq4_nl: return iq4_nlULPs
        default: return 0
        }
    }
}

struct DequantFixtureCase: Decodable, CustomStringConvertible {
    let format: String
    let source: String
    let rows: Int
    let in_features: Int
    let raw: String
    let values_f32: String
    var description: String { "\(format) (\(source))" }
}

private struct DequantFixture: Decodable {
    let cases: [DequantFixtureCase]
}

private let fixtureCases: [DequantFixtureCase] = {
    let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/kquant_dequant.json")
    guard let data = try? Data(contentsOf: url), let doc = try? JSONDecoder().decode(DequantFixture.self, from: data) else {
        return []
    }
    return doc.cases
}()

/// Distance in float steps (same sign assumed for nonzero pairs; ±0 are equal).
private func ulpDistance(_ a: Float, _ b: Float) -> Int {
    if a == b { return 0 }
    let ia = Int64(Int32(bitPattern: a.bitPattern)), ib = Int64(Int32(bitPattern: b.bitPattern))
    let ka = ia < 0 ? Int64(Int32.min) - ia : ia, kb = ib < 0 ? Int64(Int32.min) - ib : ib
    return Int(min(abs(ka - kb), Int64(Int.max)))
}

@Suite struct DequantFixtureTests {
    @Test func fixtureCoversEveryNewFormat() {
        let formats = Set(fixtureCases.map(\.format))
        #expect(formats.isSuperset(of: ["Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "BF16", "IQ4_NL"]),
                "fixture formats: \(formats.sorted())")
    }

    /// The packed weights (`dequantizeRow`, also the token-embedding lookup) and the Swift block
    /// oracle both reproduce gguf's values within the format's tolerance.
    @Test(arguments: fixtureCases)
    func matchesGGUFDequantize(_ c: DequantFixtureCase) throws {
        let format = try #require(WeightFormat(ggmlName: c.format))
        let raw = [UInt8](try #require(Data(base64Encoded: c.raw)))
        let expected = try #require(Data(base64Encoded: c.values_f32)).withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
        #expect(expected.count == c.rows * c.in_features)
        let w = try makeWeights(format, out: c.rows, inFeatures: c.in_features, raw: raw)
        let tolerance = DequantTolerance.ulps(format)
        var row = [Float](repeating: .nan, count: c.in_features)
        for r in 0..<c.rows {
            row.withUnsafeMutableBufferPointer { w.dequantizeRow(r, into: $0.baseAddress!) }
            let oracle = referenceDequantRaw(format, raw, inFeatures: c.in_features, row: r)
            var worst = 0, worstOracle = 0
            for i in 0..<c.in_features {
                worst = max(worst, ulpDistance(row[i], expected[r * c.in_features + i]))
                worstOracle = max(worstOracle, ulpDistance(oracle[i], expected[r * c.in_features + i]))
            }
            #expect(worst <= tolerance, "\(c) row \(r): packed dequantization \(worst) ulps from gguf")
            #expect(worstOracle <= tolerance, "\(c) row \(r): Swift block oracle \(worstOracle) ulps from gguf")
        }
    }
}
