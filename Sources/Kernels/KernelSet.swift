import CKernels

/// One set of kernels, written for one instruction set: `avx512` (AVX-512 with VNNI), `avx2`
/// (x86-64-v3: AVX2, FMA, F16C), `neon` (ARMv8.2-A with the dot-product extension) and `scalar`
/// (plain C, the reference every SIMD set is tested against; it never serves when a SIMD set can).
///
/// A process picks its set once at start (`select`); everything that computes takes a set
/// explicitly, defaulting to `current`, so a test can run any set beside the one in use. Within a
/// set every reduction has a fixed order, so a row's result never depends on its batch; the
/// quantized matmuls, activation quantization, dot, axpy, rmsNorm, RoPE and the f16 conversions are
/// bit-identical across sets, the exp-based kernels (softmax, SiLU, log-sum-exp, attention) agree
/// within a few ulps.
///
/// Thread-safety: a `KernelSet` is an immutable value; `select` should run once, before any work.
public struct KernelSet: @unchecked Sendable, Hashable, CustomStringConvertible {
    /// The instruction sets with kernels.
    public enum Name: String, CaseIterable, Sendable, Codable {
        case scalar, avx2, avx512, neon

        var id: Int32 {
            switch self {
            case .scalar: return Int32(CK_SET_SCALAR)
            case .avx2: return Int32(CK_SET_AVX2)
            case .avx512: return Int32(CK_SET_AVX512)
            case .neon: return Int32(CK_SET_NEON)
            }
        }
    }

    public let name: Name
    let table: OpaquePointer

    private init(name: Name, table: OpaquePointer) {
        self.name = name
        self.table = table
    }

    public var description: String { name.rawValue }
    public static func == (a: KernelSet, b: KernelSet) -> Bool { a.name == b.name }
    public func hash(into hasher: inout Hasher) { hasher.combine(name) }

    /// The set called `name`. Throws `KernelError.kernelSetUnsupported` (naming the CPU features
    /// it lacks) when this CPU cannot run it.
    public static func named(_ name: Name) throws -> KernelSet {
        if let missing = missingFeatures(name) {
            throw KernelError.kernelSetUnsupported(name.rawValue, missing: missing,
                                                   available: runnable.map(\.name.rawValue))
        }
        return KernelSet(name: name, table: ck_kernels_get(name.id)!)
    }

    /// What `name` needs that this CPU lacks (space-separated CPU features, or why the set does not
    /// exist on this architecture); nil when it can run here.
    public static func missingFeatures(_ name: Name) -> String? {
        var buffer = [CChar](repeating: 0, count: 256)
        guard ck_kernels_missing(name.id, &buffer, buffer.count) > 0 else { return nil }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// The fastest set this CPU runs (what `auto` picks).
    public static var best: KernelSet {
        let id = ck_kernels_best()
        return KernelSet(name: Name.allCases.first { $0.id == id }!, table: ck_kernels_get(id)!)
    }

    /// Every set this CPU can run, the scalar reference first.
    public static var runnable: [KernelSet] {
        Name.allCases.filter { missingFeatures($0) == nil }.map { KernelSet(name: $0, table: ck_kernels_get($0.id)!) }
    }

    /// The process-wide set, used wherever none is given (the best one until `select` changes it).
    public static var current: KernelSet {
        let table = ck_kernels_default()!
        let id = ck_kernels_id(table)
        return KernelSet(name: Name.allCases.first { $0.id == id }!, table: table)
    }

    /// Makes `choice` the process-wide set and returns it; throws (changing nothing) when this
    /// CPU cannot run it.
    @discardableResult
    public static func select(_ choice: KernelChoice) throws -> KernelSet {
        let set: KernelSet
        switch choice {
        case .auto: set = best
        case .named(let name): set = try named(name)
        }
        _ = ck_kernels_set_default(set.name.id)
        return set
    }
}

/// How the kernel set is chosen: `auto` (the fastest this CPU runs) or one set by name.
public enum KernelChoice: Equatable, Sendable, CustomStringConvertible {
    case auto
    case named(KernelSet.Name)

    /// Parses `auto`, `avx512`, `avx2`, `neon` or `scalar`; throws `KernelError.unknownKernelSet`.
    public init(parsing text: String) throws {
        let t = text.lowercased()
        if t == "auto" { self = .auto; return }
        guard let name = KernelSet.Name(rawValue: t) else { throw KernelError.unknownKernelSet(text) }
        self = .named(name)
    }

    public var description: String {
        switch self {
        case .auto: return "auto"
        case .named(let name): return name.rawValue
        }
    }
}
