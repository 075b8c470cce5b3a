/// A drafter or a cost-model file with values speculation cannot use.
public enum SpeculationError: Error, CustomStringConvertible, Equatable {
    /// An early-exit depth outside the target's layers.
    case invalidSkipLayers(requested: Int, available: Int)
    /// A layer list that is empty, not increasing, or names layers the model lacks.
    case invalidLayerList([Int], available: Int)
    /// A shortlist head larger than the vocabulary or empty.
    case invalidHeadTokens(Int, vocabularySize: Int)
    /// A branching width or level budget below one.
    case invalidDraftWidth(parameter: String, value: Int)
    /// A cost-model file (`--cost-model`) that is missing or cannot be read.
    case costModelFileUnreadable(path: String)
    /// A cost-model file whose contents are not a cost model (the reason names the field).
    case invalidCostModelFile(path: String, reason: String)

    public var description: String {
        switch self {
        case .invalidSkipLayers(let requested, let available):
            return "the skip drafter cannot exit after \(requested) layers: the model has \(available); choose 1...\(available) (fewer is faster, more is more accurate)"
        case .invalidLayerList(let list, let available):
            return "the skip drafter's layer list \(list) is invalid; list distinct layers of 0..<\(available) in increasing order"
        case .invalidHeadTokens(let head, let vocabulary):
            return "the skip drafter's head shortlist of \(head) tokens is invalid; use 1...\(vocabulary)"
        case .invalidDraftWidth(let parameter, let value):
            return "the skip drafter's \(parameter) is \(value); it must be at least 1"
        case .costModelFileUnreadable(let path):
            return "cost-model file \(path) cannot be read (missing or not readable); pass an existing file to --cost-model "
                + "(\"cost_model_file\"), e.g. tests/fixtures/cost_model_rows_free.json, or leave it out to measure the model at start-up"
        case .invalidCostModelFile(let path, let reason):
            return "cost-model file \(path) is not a cost model: \(reason); the format is GET /v1/cast/cost's "
                + "(step_cost [{rows, ms}], optional head_cost, ms_per_position, host_ms), see docs/CONFIG.md"
        }
    }
}
