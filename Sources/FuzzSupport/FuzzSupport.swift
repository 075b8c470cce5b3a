import Foundation

/// Shared pieces of the libFuzzer targets (`fuzz-http-parser`, `fuzz-request-json`): a deterministic
/// random source seeded from the input, the failure report, and the replay driver that runs a
/// target over corpus files in an ordinary (non-fuzzer) build.

/// splitmix64: a tiny deterministic generator. Seeded from the fuzz input, so every decision a
/// target derives from it (chunk boundaries, limits) is a pure function of the input and a crash
/// reproduces from the input file alone. Value type; not shared between threads.
public struct SplitMix64: Sendable {
    private var state: UInt64

    /// A generator whose sequence is fixed by `seed`.
    public init(seed: UInt64) { state = seed }

    /// A generator seeded with the FNV-1a hash of `bytes`.
    public init(hashing bytes: UnsafeRawBufferPointer) {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in bytes {
            h ^= UInt64(b)
            h = h &* 0x0000_0100_0000_01B3
        }
        state = h
    }

    /// The next 64 random bits.
    public mutating func next() -> UInt64 {
        state = state &+ 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// A value in `range` (slightly biased for huge ranges; irrelevant here).
    public mutating func next(in range: ClosedRange<Int>) -> Int {
        let span = UInt64(range.upperBound - range.lowerBound) + 1
        return range.lowerBound + Int(next() % span)
    }
}

/// Reports a broken invariant and aborts, so libFuzzer records the input as a crash (and the
/// replay driver exits with a signal). Never returns.
public func fuzzFailure(_ message: @autoclosure () -> String, file: StaticString = #fileID, line: UInt = #line) -> Never {
    FileHandle.standardError.write(Data("fuzz invariant broken at \(file):\(line): \(message())\n".utf8))
    abort()
}

/// Replays corpus files through a fuzz target's body in a build without `-sanitize=fuzzer`
/// (used by `swift build` users and CI to check the committed corpora still pass).
public enum FuzzReplay {
    /// Runs `body` once per file named in `arguments` (directories: every regular file inside,
    /// sorted by name). Returns the exit status: 0 when every file ran, 2 on a usage error.
    /// `body` aborts on a broken invariant, so a failing file ends the process.
    public static func run(target: String, arguments: [String], _ body: (UnsafeRawBufferPointer) -> Void) -> Int32 {
        guard !arguments.isEmpty else {
            FileHandle.standardError.write(Data("""
                usage: \(target) FILE|DIR...
                Runs the fuzz target once on each file (no fuzzing). To fuzz, build with
                `swift build -c release --product \(target) --sanitize=fuzzer -Xswiftc -sanitize=fuzzer,address -Xswiftc -parse-as-library -Xswiftc -DFUZZING`
                or use fuzz/run.sh.

                """.utf8))
            return 2
        }
        var files: [String] = []
        let fm = FileManager.default
        for path in arguments {
            var isDirectory: ObjCBool = false
            guard fm.fileExists(atPath: path, isDirectory: &isDirectory) else {
                FileHandle.standardError.write(Data("\(target): \(path) does not exist; pass corpus files or directories\n".utf8))
                return 2
            }
            if isDirectory.boolValue {
                let names = (try? fm.contentsOfDirectory(atPath: path)) ?? []
                for name in names.sorted() where !name.hasPrefix(".") {
                    files.append((path as NSString).appendingPathComponent(name))
                }
            } else {
                files.append(path)
            }
        }
        for file in files {
            guard let data = fm.contents(atPath: file) else {
                FileHandle.standardError.write(Data("\(target): cannot read \(file)\n".utf8))
                return 2
            }
            data.withUnsafeBytes { body($0) }
        }
        print("\(target): \(files.count) inputs ran without a failure")
        return 0
    }
}
