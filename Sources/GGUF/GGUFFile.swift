import Foundation

/// One tensor's entry in the GGUF tensor table.
public struct TensorInfo: Sendable, Equatable {
    public let name: String
    /// Dimensions in ggml order: `dimensions[0]` is the innermost (contiguous) one, so a weight
    /// matrix of `outFeatures` rows of `inFeatures` values has dimensions `[inFeatures, outFeatures]`.
    public let dimensions: [Int]
    public let type: GGMLType
    /// Absolute offset of the first byte in the file.
    public let fileOffset: Int
    public let byteCount: Int

    public var elementCount: Int { dimensions.reduce(1, *) }
}

/// A memory-mapped GGUF file (versions 2 and 3): metadata, tensor table, and zero-copy tensor bytes.
///
/// The mapping lives as long as this object; tensor byte views must not outlive it.
/// Immutable after init, so it can be shared between threads.
public final class GGUFFile: @unchecked Sendable {
    public let path: String
    public let version: UInt32
    public let metadata: [String: MetadataValue]
    /// Metadata keys in file order.
    public let metadataKeys: [String]
    /// Tensors in file order.
    public let tensors: [TensorInfo]
    public let alignment: Int
    public let fileSize: Int
    private let tensorIndex: [String: Int]
    private let base: UnsafeRawPointer
    private let mappedBytes: Int

    public static let magic: UInt32 = 0x4655_4747  // "GGUF" little-endian

    /// Opens and parses `path`. Throws `GGUFError` for a missing, foreign, truncated or corrupt file.
    public init(path: String) throws {
        self.path = path
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else {
            if errno == ENOENT { throw GGUFError.fileNotFound(path: path) }
            throw GGUFError.unreadable(path: path, reason: String(cString: strerror(errno)))
        }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else {
            throw GGUFError.unreadable(path: path, reason: String(cString: strerror(errno)))
        }
        if (st.st_mode & S_IFMT) == S_IFDIR {
            throw GGUFError.unreadable(path: path, reason: "it is a directory")
        }
        let size = Int(st.st_size)
        fileSize = size
        guard size >= 8 else {
            if size >= 4 {
                var magic: UInt32 = 0
                _ = pread(fd, &magic, 4, 0)
                if magic != GGUFFile.magic { throw GGUFError.badMagic(path: path, found: magic) }
            }
            throw GGUFError.truncated(path: path, offset: 0, needed: 8, fileSize: size, what: "the header")
        }
        guard let mapped = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), mapped != MAP_FAILED else {
            throw GGUFError.unreadable(path: path, reason: "mmap failed: \(String(cString: strerror(errno)))")
        }
        base = UnsafeRawPointer(mapped)
        mappedBytes = size
        do {
            var reader = Reader(base: base, size: size, path: path)
            let magic: UInt32 = try reader.scalar("the magic number")
            guard magic == GGUFFile.magic else { throw GGUFError.badMagic(path: path, found: magic) }
            version = try reader.scalar("the version")
            guard version == 2 || version == 3 else { throw GGUFError.unsupportedVersion(path: path, version: version) }
            let tensorCount: UInt64 = try reader.scalar("the tensor count")
            let kvCount: UInt64 = try reader.scalar("the metadata count")
            // Each entry takes at least 12 bytes; a count beyond that is corruption, not a big file.
            guard kvCount < UInt64(size / 12), tensorCount < UInt64(size / 12) else {
                // A count near 2^64 (a garbage header) must not overflow the figure reported.
                let needed = max(kvCount, tensorCount).multipliedReportingOverflow(by: 12)
                throw GGUFError.truncated(path: path, offset: reader.offset, needed: needed.overflow ? Int.max : Int(clamping: needed.partialValue),
                                          fileSize: size, what: "the metadata and tensor table")
            }
            var metadata: [String: MetadataValue] = [:]
            var keys: [String] = []
            for _ in 0..<kvCount {
                let key = try reader.string()
                let type: UInt32 = try reader.scalar("the type of key '\(key)'")
                metadata[key] = try reader.value(type: type, key: key)
                keys.append(key)
            }
            self.metadata = metadata
            metadataKeys = keys
            var alignment = 32
            if let a = metadata["general.alignment"] {
                guard let v = a.intValue, v > 0, v & (v - 1) == 0 else {
                    throw GGUFError.invalidAlignment(path: path, alignment: a.intValue ?? -1)
                }
                alignment = v
            }
            self.alignment = alignment
            var raw: [(String, [Int], UInt32, UInt64)] = []
            for _ in 0..<tensorCount {
                let name = try reader.string()
                let nDims: UInt32 = try reader.scalar("the rank of tensor '\(name)'")
                guard nDims >= 1, nDims <= 4 else {
                    throw GGUFError.invalidTensorShape(tensor: name, dimensions: [], reason: "rank \(nDims) (GGUF allows 1 to 4)")
                }
                var dims: [Int] = []
                for _ in 0..<nDims {
                    let d: UInt64 = try reader.scalar("the shape of tensor '\(name)'")
                    guard d > 0, d < 1 << 40 else {
                        throw GGUFError.invalidTensorShape(tensor: name, dimensions: dims + [Int(clamping: d)], reason: "a dimension is 0 or absurdly large")
                    }
                    dims.append(Int(d))
                }
                let type: UInt32 = try reader.scalar("the type of tensor '\(name)'")
                let offset: UInt64 = try reader.scalar("the offset of tensor '\(name)'")
                raw.append((name, dims, type, offset))
            }
            let dataStart = (reader.offset + alignment - 1) / alignment * alignment
            var tensors: [TensorInfo] = []
            var index: [String: Int] = [:]
            for (name, dims, typeID, offset) in raw {
                guard let type = GGMLType(rawValue: typeID) else {
                    throw GGUFError.unsupportedTensorType(tensor: name, type: typeID)
                }
                let count = dims.reduce(1) { $0.multipliedReportingOverflow(by: $1).partialValue }
                guard dims[0] % type.blockSize == 0, let bytes = type.byteCount(values: count) else {
                    throw GGUFError.invalidTensorShape(tensor: name, dimensions: dims,
                        reason: "the row length \(dims[0]) is not a multiple of \(type.name)'s block size \(type.blockSize)")
                }
                guard offset < UInt64(size) else {
                    throw GGUFError.tensorOutOfBounds(tensor: name, start: Int(clamping: offset), end: Int(clamping: offset), fileSize: size)
                }
                let start = dataStart + Int(offset)
                guard start + bytes <= size else {
                    throw GGUFError.tensorOutOfBounds(tensor: name, start: start, end: start + bytes, fileSize: size)
                }
                index[name] = tensors.count
                tensors.append(TensorInfo(name: name, dimensions: dims, type: type, fileOffset: start, byteCount: bytes))
            }
            self.tensors = tensors
            tensorIndex = index
        } catch {
            munmap(mapped, size)
            throw error
        }
    }

    deinit {
        munmap(UnsafeMutableRawPointer(mutating: base), mappedBytes)
    }

    // MARK: - Tensors

    public func tensor(named name: String) -> TensorInfo? {
        tensorIndex[name].map { tensors[$0] }
    }

    /// The tensor, or `GGUFError.missingTensor`.
    public func requireTensor(_ name: String) throws -> TensorInfo {
        guard let t = tensor(named: name) else { throw GGUFError.missingTensor(name: name) }
        return t
    }

    /// Zero-copy view of a tensor's bytes; valid while this file object is alive.
    public func bytes(of tensor: TensorInfo) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: base + tensor.fileOffset, count: tensor.byteCount)
    }

    // MARK: - Typed metadata access

    public func value(_ key: String) throws -> MetadataValue {
        guard let v = metadata[key] else { throw GGUFError.missingKey(key: key) }
        return v
    }

    public func string(_ key: String) throws -> String {
        let v = try value(key)
        guard let s = v.stringValue else { throw GGUFError.wrongKeyType(key: key, expected: "a string", found: v.typeName) }
        return s
    }

    public func optionalString(_ key: String) -> String? { metadata[key]?.stringValue }

    public func int(_ key: String) throws -> Int {
        let v = try value(key)
        guard let i = v.intValue else { throw GGUFError.wrongKeyType(key: key, expected: "an integer", found: v.typeName) }
        return i
    }

    public func optionalInt(_ key: String) -> Int? { metadata[key]?.intValue }

    public func double(_ key: String) throws -> Double {
        let v = try value(key)
        guard let d = v.doubleValue else { throw GGUFError.wrongKeyType(key: key, expected: "a number", found: v.typeName) }
        return d
    }

    public func optionalDouble(_ key: String) -> Double? { metadata[key]?.doubleValue }

    public func optionalBool(_ key: String) -> Bool? { metadata[key]?.boolValue }

    public func stringArray(_ key: String) throws -> [String] {
        try array(key, of: "strings") { $0.stringValue }
    }

    public func intArray(_ key: String) throws -> [Int] {
        try array(key, of: "integers") { $0.intValue }
    }

    public func floatArray(_ key: String) throws -> [Float] {
        try array(key, of: "numbers") { $0.doubleValue.map(Float.init) }
    }

    /// An array value whose every element converts with `element`, or `wrongKeyType`.
    private func array<T>(_ key: String, of kind: String, _ element: (MetadataValue) -> T?) throws -> [T] {
        let v = try value(key)
        guard let a = v.arrayValue else { throw GGUFError.wrongKeyType(key: key, expected: "an array of \(kind)", found: v.typeName) }
        return try a.map {
            guard let x = element($0) else { throw GGUFError.wrongKeyType(key: key, expected: "an array of \(kind)", found: "an array of \($0.typeName)") }
            return x
        }
    }
}

// MARK: - Bounds-checked little-endian reader

private struct Reader {
    let base: UnsafeRawPointer
    let size: Int
    let path: String
    var offset = 0

    mutating func need(_ n: Int, _ what: @autoclosure () -> String) throws {
        guard n >= 0, offset <= size - n else {
            throw GGUFError.truncated(path: path, offset: offset, needed: n, fileSize: size, what: what())
        }
    }

    mutating func scalar<T: FixedWidthInteger>(_ what: @autoclosure () -> String) throws -> T {
        try need(MemoryLayout<T>.size, what())
        let v = base.loadUnaligned(fromByteOffset: offset, as: T.self)
        offset += MemoryLayout<T>.size
        return T(littleEndian: v)
    }

    mutating func string() throws -> String {
        let start = offset
        let length: UInt64 = try scalar("a string length")
        guard length <= UInt64(size) else { throw GGUFError.invalidString(path: path, offset: start) }
        try need(Int(length), "a string of \(length) bytes")
        let bytes = UnsafeRawBufferPointer(start: base + offset, count: Int(length))
        offset += Int(length)
        guard let s = String(validating: bytes.bindMemory(to: UInt8.self), as: UTF8.self) else {
            throw GGUFError.invalidString(path: path, offset: start)
        }
        return s
    }

    mutating func value(type: UInt32, key: String) throws -> MetadataValue {
        let what = "the value of key '\(key)'"
        switch type {
        case 0: return .uint8(try scalar(what))
        case 1: return .int8(try scalar(what))
        case 2: return .uint16(try scalar(what))
        case 3: return .int16(try scalar(what))
        case 4: return .uint32(try scalar(what))
        case 5: return .int32(try scalar(what))
        case 6: return .float32(Float(bitPattern: try scalar(what)))
        case 7:
            let b: UInt8 = try scalar(what)
            return .bool(b != 0)
        case 8: return .string(try string())
        case 9:
            let elementType: UInt32 = try scalar(what)
            let count: UInt64 = try scalar(what)
            guard count <= UInt64(size - offset) else {
                throw GGUFError.truncated(path: path, offset: offset, needed: Int(clamping: count), fileSize: size, what: "the array '\(key)'")
            }
            var items: [MetadataValue] = []
            items.reserveCapacity(Int(count))
            for _ in 0..<count { items.append(try value(type: elementType, key: key)) }
            return .array(items)
        case 10: return .uint64(try scalar(what))
        case 11: return .int64(try scalar(what))
        case 12: return .float64(Double(bitPattern: try scalar(what)))
        default: throw GGUFError.invalidValueType(path: path, key: key, type: type)
        }
    }
}
