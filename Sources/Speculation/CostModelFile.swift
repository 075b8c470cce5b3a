import Foundation

/// A step-cost model given in a JSON file, to serve with a fixed model (`--cost-model FILE`,
/// `cost_model_file`) instead of one measured at start-up. The fields are those of GET
/// /v1/cast/cost, so a measured server's answer saved to a file is a valid cost-model file
/// (its other fields are ignored):
///
///     {
///       "step_cost": [{"rows": 1, "ms": 10.0}, {"rows": 256, "ms": 10.5}],
///       "head_cost": [{"rows": 1, "ms": 0.2}, {"rows": 256, "ms": 0.3}],
///       "ms_per_position": 0.0,
///       "host_ms": {"fixed": 0.1, "per_logit_row": 0.0, "per_draft_node": 0.0}
///     }
///
/// - `step_cost` (required): forward milliseconds by rows, without the output head and
///   attention (`CostModel.body`); rows at least 1 and distinct, ms at least 0.
/// - `head_cost` (optional): output-head milliseconds by rows with logits; omitted or empty, the
///   step costs include the head.
/// - `ms_per_position` (optional, default 0): milliseconds per attended position.
/// - `host_ms` (optional, default 0 each): host-side milliseconds per step, per logit row and per
///   draft node.
///
/// The model loaded is fixed (`CostModel.fixed()`): no step time refreshes it and the speculator's
/// measured guards are off, so drafting decisions do not depend on the host's speed or load.
public enum CostModelFile {
    struct Point: Decodable {
        var rows: Int
        var ms: Double
    }

    struct Host: Decodable {
        var fixed: Double?
        var perLogitRow: Double?
        var perDraftNode: Double?
        enum CodingKeys: String, CodingKey {
            case fixed, perLogitRow = "per_logit_row", perDraftNode = "per_draft_node"
        }
    }

    struct Contents: Decodable {
        var stepCost: [Point]
        var headCost: [Point]?
        var msPerPosition: Double?
        var hostMs: Host?
        enum CodingKeys: String, CodingKey {
            case stepCost = "step_cost", headCost = "head_cost", msPerPosition = "ms_per_position", hostMs = "host_ms"
        }
    }

    /// The fixed cost model in `path`. Throws `SpeculationError.costModelFileUnreadable` when the
    /// file cannot be read and `.invalidCostModelFile` naming the field when its contents are wrong.
    public static func load(path: String) throws -> CostModel {
        guard let data = FileManager.default.contents(atPath: path) else { throw SpeculationError.costModelFileUnreadable(path: path) }
        return try parse(data, path: path)
    }

    /// The fixed cost model in `data` (read from `path`, named in errors).
    public static func parse(_ data: Data, path: String) throws -> CostModel {
        let contents: Contents
        do {
            contents = try JSONDecoder().decode(Contents.self, from: data)
        } catch let DecodingError.keyNotFound(key, context) {
            throw SpeculationError.invalidCostModelFile(path: path, reason: "\(field(context.codingPath + [key])) is missing")
        } catch let DecodingError.typeMismatch(_, context) {
            throw SpeculationError.invalidCostModelFile(path: path, reason: "\(field(context.codingPath)) has the wrong type")
        } catch let DecodingError.valueNotFound(_, context) {
            throw SpeculationError.invalidCostModelFile(path: path, reason: "\(field(context.codingPath)) is null")
        } catch {
            throw SpeculationError.invalidCostModelFile(path: path, reason: "not valid JSON (\((error as NSError).localizedDescription))")
        }
        try check(contents.stepCost, "step_cost", path: path, required: true)
        try check(contents.headCost ?? [], "head_cost", path: path, required: false)
        let beta = contents.msPerPosition ?? 0
        guard beta.isFinite && beta >= 0 else {
            throw SpeculationError.invalidCostModelFile(path: path, reason: "ms_per_position is \(beta); it must be a number at least 0")
        }
        let h = contents.hostMs
        let host = [("fixed", h?.fixed), ("per_logit_row", h?.perLogitRow), ("per_draft_node", h?.perDraftNode)]
        for (name, value) in host where !(value ?? 0).isFinite || (value ?? 0) < 0 {
            throw SpeculationError.invalidCostModelFile(path: path, reason: "host_ms.\(name) is \(value ?? 0); it must be a number at least 0")
        }
        return CostModel(body: contents.stepCost.map { ($0.rows, $0.ms) }, head: (contents.headCost ?? []).map { ($0.rows, $0.ms) },
                         msPerPosition: beta,
                         host: HostCost(fixed: h?.fixed ?? 0, perLogitRow: h?.perLogitRow ?? 0, perNode: h?.perDraftNode ?? 0)).fixed()
    }

    /// A table's points: at least one if `required`, rows at least 1 and distinct, ms finite and at least 0.
    static func check(_ points: [Point], _ name: String, path: String, required: Bool) throws {
        if required && points.isEmpty {
            throw SpeculationError.invalidCostModelFile(path: path, reason: "\(name) is empty; give at least one {\"rows\": 1, \"ms\": ...} point")
        }
        for (i, p) in points.enumerated() {
            guard p.rows >= 1 else {
                throw SpeculationError.invalidCostModelFile(path: path, reason: "\(name)[\(i)].rows is \(p.rows); rows must be at least 1")
            }
            guard p.ms.isFinite && p.ms >= 0 else {
                throw SpeculationError.invalidCostModelFile(path: path, reason: "\(name)[\(i)].ms is \(p.ms); it must be a number at least 0")
            }
        }
        guard Set(points.map(\.rows)).count == points.count else {
            throw SpeculationError.invalidCostModelFile(path: path, reason: "\(name) lists a row count twice; give each row count once")
        }
    }

    /// A coding path as the file spells it: `step_cost[2].ms`.
    static func field(_ path: [any CodingKey]) -> String {
        var out = ""
        for key in path {
            if let i = key.intValue { out += "[\(i)]" } else { out += (out.isEmpty ? "" : ".") + key.stringValue }
        }
        return out.isEmpty ? "the top level" : out
    }
}
