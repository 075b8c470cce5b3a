import Foundation

/// Renders reports as Markdown tables (cast-bench's default output).
enum MarkdownReport {
    static func render(_ r: SingleStreamReport) -> String {
        var out: [String] = []
        out.append("CastServe single stream — \(r.model), \(r.threads) threads, \(r.kernels) kernels, KV cache \(r.kvCacheType) "
                   + "(\(r.kvBytesPerPosition) bytes per position), \(r.machine.cpu) (\(r.machine.simd)), commit \(r.machine.commit)")
        out.append("")
        out.append("| test | tokens/s |")
        out.append("|---|---:|")
        for t in r.synthetic { out.append(String(format: "| %@ | %.1f ± %.1f |", t.test, t.tokensPerSecond, t.stddev)) }
        out.append(String(format: "| decode bandwidth | %.1f GB/s (%.1f MB of weights per step), %.0f%% of the host's %.1f GB/s read bandwidth |",
                          r.decodeBandwidthGBs, Double(r.weightBytesPerStep) / 1e6, 100 * r.decodeBandwidthGBs / r.readBandwidthGBs,
                          r.readBandwidthGBs))
        out.append(String(format: "| output head's share of a decode step (ctx %d) | %.0f%% (%.2f ms with logits, %.2f ms without) |",
                          r.head.context, 100 * r.head.share, r.head.withLogitsMs, r.head.withoutLogitsMs))
        if let n = r.neighbour {
            out.append(String(format: "| tg128 with a busy-loop neighbour | %.1f (%.2fx alone) |", n.withNeighbourTokS,
                              n.withNeighbourTokS / n.aloneTokS))
        }
        if !r.categories.isEmpty {
            out.append("")
            out.append("| category | prompts | prompt tok | completion tok | prefill tok/s | decode tok/s | e2e tok/s |")
            out.append("|---|---:|---:|---:|---:|---:|---:|")
            for c in r.categories + [CategoryFigures(category: "**total**", prompts: r.categories.reduce(0) { $0 + $1.prompts },
                                                     promptTokens: r.categories.reduce(0) { $0 + $1.promptTokens },
                                                     completionTokens: r.categories.reduce(0) { $0 + $1.completionTokens },
                                                     prefillTokS: r.prefillTokS, decodeTokS: r.decodeTokS, e2eTokS: r.e2eTokS)] {
                out.append(String(format: "| %@ | %d | %d | %d | %.1f | %.1f | %.1f |", c.category, c.prompts, c.promptTokens,
                                  c.completionTokens, c.prefillTokS, c.decodeTokS, c.e2eTokS))
            }
        }
        out.append("")
        out.append("Step cost T(rows, context), median ms (logits for every row):")
        out.append("")
        let contexts = Array(Set(r.costCurve.map(\.context))).sorted()
        let rows = Array(Set(r.costCurve.map(\.rows))).sorted()
        var header = "| rows |"
        var rule = "|---:|"
        for c in contexts {
            header += " 1 seq, ctx \(c) | spread, ctx \(c) | ×T(1) |"
            rule += "---:|---:|---:|"
        }
        out.append(header)
        out.append(rule)
        for n in rows {
            var line = "| \(n) |"
            for c in contexts {
                let one = r.costCurve.first { $0.rows == n && $0.context == c && $0.sequences == 1 }
                let spread = r.costCurve.filter { $0.rows == n && $0.context == c }.max { $0.sequences < $1.sequences }
                let base = r.costCurve.first { $0.rows == 1 && $0.context == c }
                line += String(format: " %.2f | %.2f (%d seq) | %.2f |", one?.ms ?? .nan, spread?.ms ?? .nan, spread?.sequences ?? 0,
                               (one?.ms ?? .nan) / (base?.ms ?? .nan))
            }
            out.append(line)
        }
        return out.joined(separator: "\n")
    }
}
