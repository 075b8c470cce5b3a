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
        func git(_ arguments: [String]) -> String? {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            process.arguments = ["git"] + arguments
            let pipe = Pipe()
            process.standardOutput = pipe
            process.standardError = FileHandle.nullDevice
            guard (try? process.run()) != nil else { return nil }
            let out = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            process.waitUntilExit()
            return process.terminationStatus == 0 ? out.trimmingCharacters(in: .whitespacesAndNewlines) : nil
        }
        var commit = git(["rev-parse", "--short", "HEAD"]).flatMap { $0.isEmpty ? nil : $0 } ?? "unknown"
        // Figures from a build with uncommitted changes say so.
        if commit != "unknown", let status = git(["status", "--porcelain", "--untracked-files=no"]), !status.isEmpty {
            commit += "-dirty"
        }
        return MachineInfo(cpu: field("model name"), cores: ProcessInfo.processInfo.activeProcessorCount,
                           simd: simd.isEmpty ? "none detected" : simd, commit: commit,
                           date: ISO8601DateFormatter().string(from: Date()))
    }
}
