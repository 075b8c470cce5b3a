import CKernels

/// Mistakes a caller of the Kernels target can make with data it does not control (weight shapes and
/// byte counts that come from a model file). Programmer errors (buffer sizes, row counts) are
/// `precondition`s instead.
public enum KernelError: Error, CustomStringConvertible, Equatable {
    /// The matrix has a non-positive dimension.
    case emptyShape(outFeatures: Int, inFeatures: Int)
    /// A block-quantized format needs inFeatures to be a multiple of its block size.
    case inFeaturesNotMultipleOfBlock(format: WeightFormat, inFeatures: Int, blockSize: Int)
    /// The raw tensor bytes do not match the format and shape.
    case byteCountMismatch(format: WeightFormat, outFeatures: Int, inFeatures: Int, expected: Int, found: Int)
    /// A kernel set was asked for that this CPU cannot run.
    case kernelSetUnsupported(String, missing: String, available: [String])
    /// A kernel set name that does not exist.
    case unknownKernelSet(String)

    public var description: String {
        switch self {
        case let .emptyShape(o, i):
            return "weight matrix shape \(o) x \(i) is empty; both dimensions must be at least 1 (check the tensor's dimensions in the model file)"
        case let .inFeaturesNotMultipleOfBlock(f, i, bs):
            return "weight format \(f) stores blocks of \(bs) values but the row length (inFeatures) is \(i), not a multiple of \(bs); the tensor is malformed or uses a layout this loader does not support"
        case let .byteCountMismatch(f, o, i, e, found):
            return "weight matrix \(o) x \(i) in format \(f) needs \(e) bytes but \(found) were given; check the tensor's type, shape and offset in the model file"
        case let .kernelSetUnsupported(name, missing, available):
            return "kernel set '\(name)' cannot run on this CPU (missing: \(missing)); use kernels 'auto' or one this CPU runs: \(available.joined(separator: ", "))"
        case let .unknownKernelSet(name):
            return "unknown kernel set '\(name)'; choose one of: auto, \(KernelSet.Name.allCases.map(\.rawValue).joined(separator: ", "))"
        }
    }
}

/// ggml weight layouts supported by `LinearWeights`. Quantized formats store blocks of 32 values:
/// q4_0 = f16 d + 16 bytes of nibbles, value (q - 8) * d; q4_1 = f16 d, f16 m + 16 bytes of nibbles,
/// value q * d + m; q8_0 = f16 d + 32 int8, value q * d; q5_0 / q5_1 = q4_0 / q4_1 with a fifth bit
/// per value (32 bits after the scales), value (q - 16) * d / q * d + m. In each nibble byte i, the
/// low nibble is value i and the high nibble value i + 16 of the block. The K-quants store
/// super-blocks of 256 values with sub-block scales (q2_K, q3_K, q6_K: 16 sub-blocks of 16; q4_K,
/// q5_K: 8 of 32, with minimums); bf16 is the top half of an f32; iq4_nl = f16 d + 16 bytes of 4-bit
/// indices into a fixed table of 16 int8 values (llama.cpp's fallback for rows K-quants cannot split). `Sources/Kernels/README.md` gives
/// each layout, how it is repacked, and its tolerance.
public enum WeightFormat: Sendable, CaseIterable, CustomStringConvertible {
    case f32, f16, bf16, q4_0, q4_1, q8_0, q5_0, q5_1, q2_K, q3_K, q4_K, q5_K, q6_K, iq4_nl

    /// Values per block (1 for the float formats).
    public var blockSize: Int {
        switch self {
        case .f32, .f16, .bf16: return 1
        case .q4_0, .q4_1, .q8_0, .q5_0, .q5_1, .iq4_nl: return 32
        case .q2_K, .q3_K, .q4_K, .q5_K, .q6_K: return 256
        }
    }

    /// Bytes per block in the raw ggml layout.
    public var bytesPerBlock: Int {
        switch self {
        case .f32: return 4
        case .f16, .bf16: return 2
        case .q4_0, .iq4_nl: return 18
        case .q4_1: return 20
        case .q8_0: return 34
        case .q5_0: return 22
        case .q5_1: return 24
        case .q2_K: return 84
        case .q3_K: return 110
        case .q4_K: return 144
        case .q5_K: return 176
        case .q6_K: return 210
        }
    }

    /// Bytes of a raw ggml matrix of `outFeatures` rows of `inFeatures` values.
    public func rawByteCount(outFeatures: Int, inFeatures: Int) -> Int {
        outFeatures * (inFeatures / blockSize) * bytesPerBlock
    }

    /// The ggml type name ("Q4_K"), as `GGMLType.name` spells it.
    public var description: String {
        switch self {
        case .f32: return "F32"
        case .f16: return "F16"
        case .bf16: return "BF16"
        case .q4_0: return "Q4_0"
        case .q4_1: return "Q4_1"
        case .q8_0: return "Q8_0"
        case .q5_0: return "Q5_0"
        case .q5_1: return "Q5_1"
        case .q2_K: return "Q2_K"
        case .q3_K: return "Q3_K"
        case .q4_K: return "Q4_K"
        case .q5_K: return "Q5_K"
        case .q6_K: return "Q6_K"
        case .iq4_nl: return "IQ4_NL"
        }
    }

    /// The format whose ggml type name is `name` ("Q6_K"), or nil when the kernels do not compute with it.
    public init?(ggmlName name: String) {
        guard let format = WeightFormat.allCases.first(where: { $0.description == name }) else { return nil }
        self = format
    }

    var ck: Int32 {
        switch self {
        case .f32: return Int32(CK_F32)
        case .f16: return Int32(CK_F16)
        case .bf16: return Int32(CK_BF16)
        case .q4_0: return Int32(CK_Q4_0)
        case .q4_1: return Int32(CK_Q4_1)
        case .q8_0: return Int32(CK_Q8_0)
        case .q5_0: return Int32(CK_Q5_0)
        case .q5_1: return Int32(CK_Q5_1)
        case .q2_K: return Int32(CK_Q2_K)
        case .q3_K: return Int32(CK_Q3_K)
        case .q4_K: return Int32(CK_Q4_K)
        case .q5_K: return Int32(CK_Q5_K)
        case .q6_K: return Int32(CK_Q6_K)
        case .iq4_nl: return Int32(CK_IQ4_NL)
        }
    }
}
