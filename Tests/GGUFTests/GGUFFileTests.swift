import Foundation
import Testing
import GGUF

/// Writes GGUF bytes by hand, so tests can craft good and broken files.
struct GGUFWriter {
    var bytes: [UInt8] = []
    mutating func u8(_ v: UInt8) { bytes.append(v) }
    mutating func u16(_ v: UInt16) { withUnsafeBytes(of: v.littleEndian) { bytes += $0 } }
    mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { bytes += $0 } }
    mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { bytes += $0 } }
    mutating func str(_ s: String) { u64(UInt64(s.utf8.count)); bytes += Array(s.utf8) }
    mutating func pad(to alignment: Int) { while bytes.count % alignment != 0 { bytes.append(0) } }

    /// A small valid version-3 file: every metadata type, one F32 tensor [4] and one Q8_0 tensor [32 x 2].
    static func sample(version: UInt32 = 3, tensorType: UInt32 = 0, tensorOffset: UInt64 = 0, keysOmitted: Set<String> = []) -> [UInt8] {
        var w = GGUFWriter()
        w.u32(0x4655_4747)
        w.u32(version)
        w.u64(2)
        let kvs: [(String, (inout GGUFWriter) -> Void)] = [
            ("u8", { $0.u32(0); $0.u8(200) }),
            ("i8", { $0.u32(1); $0.u8(0xFF) }),
            ("u16", { $0.u32(2); $0.u16(60000) }),
            ("i16", { $0.u32(3); $0.u16(UInt16(bitPattern: -2)) }),
            ("u32", { $0.u32(4); $0.u32(4_000_000_000) }),
            ("i32", { $0.u32(5); $0.u32(UInt32(bitPattern: -7)) }),
            ("f32", { $0.u32(6); $0.u32(Float(1.5).bitPattern) }),
            ("bool", { $0.u32(7); $0.u8(1) }),
            ("general.architecture", { $0.u32(8); $0.str("llama") }),
            ("arr", { $0.u32(9); $0.u32(8); $0.u64(2); $0.str("a b"); $0.str("é😀") }),
            ("nested", { $0.u32(9); $0.u32(9); $0.u64(1); $0.u32(4); $0.u64(2); $0.u32(1); $0.u32(2) }),
            ("u64", { $0.u32(10); $0.u64(1 << 40) }),
            ("i64", { $0.u32(11); $0.u64(UInt64(bitPattern: -3)) }),
            ("f64", { $0.u32(12); $0.u64(Double(2.25).bitPattern) }),
            ("general.alignment", { $0.u32(4); $0.u32(64) }),
        ].filter { !keysOmitted.contains($0.0) }
        w.u64(UInt64(kvs.count))
        for (k, write) in kvs { w.str(k); write(&w) }
        // Tensor table.
        w.str("norm.weight"); w.u32(1); w.u64(4); w.u32(tensorType); w.u64(tensorOffset)
        w.str("w.weight"); w.u32(2); w.u64(32); w.u64(2); w.u32(8); w.u64(64)
        w.pad(to: 64)
        for f in [Float(1), 2, 3, 4] { w.u32(f.bitPattern) }
        w.pad(to: 64)
        w.bytes += [UInt8](repeating: 7, count: 68)
        return w.bytes
    }
}

func writeTemp(_ bytes: [UInt8], _ name: String = UUID().uuidString) -> String {
    let path = NSTemporaryDirectory() + "gguf-test-\(name).gguf"
    FileManager.default.createFile(atPath: path, contents: Data(bytes))
    return path
}

func expectError(_ bytes: [UInt8], _ check: (GGUFError) -> Bool, sourceLocation: SourceLocation = #_sourceLocation) {
    let path = writeTemp(bytes)
    defer { try? FileManager.default.removeItem(atPath: path) }
    do {
        _ = try GGUFFile(path: path)
        Issue.record("expected an error", sourceLocation: sourceLocation)
    } catch let e as GGUFError {
        #expect(check(e), "unexpected error: \(e)", sourceLocation: sourceLocation)
        #expect(!e.description.isEmpty)
    } catch {
        Issue.record("not a GGUFError: \(error)", sourceLocation: sourceLocation)
    }
}

@Suite struct GGUFFileTests {
    @Test func readsEveryMetadataTypeAndTensors() throws {
        let path = writeTemp(GGUFWriter.sample())
        defer { try? FileManager.default.removeItem(atPath: path) }
        let f = try GGUFFile(path: path)
        #expect(f.version == 3)
        #expect(f.metadata["u8"] == .uint8(200))
        #expect(f.metadata["i8"] == .int8(-1))
        #expect(f.metadata["u16"] == .uint16(60000))
        #expect(f.metadata["i16"] == .int16(-2))
        #expect(f.metadata["u32"] == .uint32(4_000_000_000))
        #expect(f.metadata["i32"] == .int32(-7))
        #expect(f.metadata["f32"] == .float32(1.5))
        #expect(f.metadata["bool"] == .bool(true))
        #expect(try f.string("general.architecture") == "llama")
        #expect(try f.stringArray("arr") == ["a b", "é😀"])
        #expect(f.metadata["nested"] == .array([.array([.uint32(1), .uint32(2)])]))
        #expect(try f.int("u64") == 1 << 40)
        #expect(try f.int("i64") == -3)
        #expect(try f.double("f64") == 2.25)
        #expect(f.alignment == 64)
        #expect(f.metadataKeys.first == "u8")
        let norm = try f.requireTensor("norm.weight")
        #expect(norm.type == .f32 && norm.dimensions == [4] && norm.byteCount == 16)
        #expect(norm.fileOffset % 64 == 0)
        let floats = f.bytes(of: norm).bindMemory(to: Float.self)
        #expect(Array(floats) == [1, 2, 3, 4])
        let w = try f.requireTensor("w.weight")
        #expect(w.type == .q8_0 && w.dimensions == [32, 2] && w.byteCount == 68 && w.elementCount == 64)
        #expect(f.bytes(of: w).allSatisfy { $0 == 7 })
    }

    @Test func version2IsAccepted() throws {
        let path = writeTemp(GGUFWriter.sample(version: 2))
        defer { try? FileManager.default.removeItem(atPath: path) }
        #expect(try GGUFFile(path: path).version == 2)
    }

    @Test func missingFile() {
        #expect(throws: GGUFError.fileNotFound(path: "/nonexistent/model.gguf")) {
            try GGUFFile(path: "/nonexistent/model.gguf")
        }
        let message = GGUFError.fileNotFound(path: "/x.gguf").description
        #expect(message.contains("/x.gguf") && message.contains("make model"))
    }

    @Test func badMagic() {
        var bytes = GGUFWriter.sample()
        bytes[0] = UInt8(ascii: "P")
        expectError(bytes) { if case .badMagic = $0 { return true } else { return false } }
        expectError(Array("PK\u{3}\u{4}zip".utf8)) { if case .badMagic = $0 { return true } else { return false } }
    }

    @Test(arguments: [UInt32(1), 4, 99])
    func unsupportedVersion(version: UInt32) {
        expectError(GGUFWriter.sample(version: version)) {
            if case .unsupportedVersion(_, let v) = $0 { return v == version } else { return false }
        }
    }

    @Test func truncatedAtEveryHeaderBoundary() {
        let full = GGUFWriter.sample()
        // Cut inside the header, the metadata, the tensor table and the data.
        for cut in [0, 3, 6, 12, 20, 40, 100, 200, 300, full.count - 70, full.count - 1] {
            expectError(Array(full.prefix(cut))) { e in
                switch e {
                case .truncated, .tensorOutOfBounds: return true
                default: return false
                }
            }
        }
    }

    /// Counts near 2^64 (a garbage header) are corruption reported as truncation, not an
    /// arithmetic overflow that stops the process (a server keeps serving its other models).
    @Test func hugeCountsAreTruncationNotACrash() {
        var bytes = Array(GGUFWriter.sample().prefix(8))
        bytes += [UInt8](repeating: 0xff, count: 64)
        expectError(bytes) { if case .truncated = $0 { return true } else { return false } }
    }

    @Test func tensorOutOfBounds() {
        expectError(GGUFWriter.sample(tensorOffset: 1 << 20)) {
            if case .tensorOutOfBounds(let name, _, _, _) = $0 { return name == "norm.weight" } else { return false }
        }
    }

    @Test func unknownTensorTypeNamesTheTensor() {
        expectError(GGUFWriter.sample(tensorType: 99)) {
            guard case .unsupportedTensorType(let name, let type) = $0 else { return false }
            return name == "norm.weight" && type == 99 && $0.description.contains("norm.weight") && $0.description.contains("re-quantize")
        }
    }

    @Test func missingAndMistypedKeys() throws {
        let path = writeTemp(GGUFWriter.sample(keysOmitted: ["general.alignment"]))
        defer { try? FileManager.default.removeItem(atPath: path) }
        let f = try GGUFFile(path: path)
        #expect(f.alignment == 32)
        #expect(throws: GGUFError.missingKey(key: "llama.block_count")) { try f.int("llama.block_count") }
        #expect(throws: GGUFError.wrongKeyType(key: "general.architecture", expected: "an integer", found: "string")) {
            try f.int("general.architecture")
        }
        #expect(throws: GGUFError.missingTensor(name: "output.weight")) { try f.requireTensor("output.weight") }
        #expect(GGUFError.missingKey(key: "llama.block_count").description.contains("llama.block_count"))
    }

    @Test func defaultModelLoads() throws {
        let path = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("models/SmolLM2-135M-Instruct.Q4_1.gguf").path
        guard FileManager.default.fileExists(atPath: path) else {
            Issue.record("default model missing at \(path): run `make model`")
            return
        }
        let f = try GGUFFile(path: path)
        #expect(f.version == 3)
        #expect(f.tensors.count == 272)
        #expect(try f.string("general.architecture") == "llama")
        #expect(try f.int("llama.block_count") == 30)
        #expect(try f.stringArray("tokenizer.ggml.tokens").count == 49152)
        let embd = try f.requireTensor("token_embd.weight")
        #expect(embd.type == .q8_0 && embd.dimensions == [576, 49152])
        #expect(try f.requireTensor("blk.0.attn_q.weight").type == .q4_1)
    }
}
