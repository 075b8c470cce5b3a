import Foundation

/// What the figures were measured on, recorded with every report.
struct MachineInfo: Codable {
    var cpu: String
    var cores: Int
    var simd: String
    var commit: String
    var date: String

    static func current() -> MachineInfo {
        let cpuinfo = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
        func field(_ name: String) -> String {
            cpuinfo.split(separator: "\n").first { $0.hasPrefix(name) }
                .map { $0.split(separator: ":", maxSplits: 1).last.map { $0.trimmingCharacters(in: .whitespaces) } ?? "" } ?? ""
        }
        let flags = Set(field("flags").split(separator: " ").map(String.init))
        let simd = ["avx512_vnni", "avx512bw", "avx512f", "avx2"].filter(flags.contains).joined(separator: " ")
        let git = Process()
        git.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        git.arguments = ["git", "rev-parse", "--short", "HEAD"]
        let pipe = Pipe()
        git.standardOutput = pipe
        git.standardError = FileHandle.nullDevice
        var commit = "unknown"
        if (try? git.run()) != nil {
            git.waitUntilExit()
            let out = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
                .trimmingCharacters(in: .whitespacesAndNewlines)
            if git.terminationStatus == 0 && !out.isEmpty { commit = out }
        }
        return MachineInfo(cpu: field("model name"), cores: ProcessInfo.processInfo.activeProcessorCount,
                           simd: simd.isEmpty ? "none detected" : simd, commit: commit,
                           date: ISO8601DateFormatter().string(from: Date()))
    }
}
