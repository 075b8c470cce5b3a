/// A drafter configured with values it cannot use, a learned drafter's file that does not fit, or
/// a cost-model file speculation cannot use.
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
    /// A learned drafter's file that cannot be read as GGUF.
    case drafterUnreadable(path: String, reason: String)
    /// A learned drafter's file without a required metadata key, or with a value of the wrong type.
    case drafterMissingKey(path: String, key: String, expected: String)
    /// A learned drafter's file of another kind (`general.architecture`, `cast-drafter.kind`).
    case drafterWrongKind(path: String, key: String, expected: String, found: String)
    /// A learned drafter trained for another target: the key, the drafter's value and the target's.
    case drafterTargetMismatch(path: String, key: String, drafter: String, target: String)
    /// A learned drafter's tensor that is missing or has the wrong shape or type.
    case drafterTensor(path: String, tensor: String, problem: String)

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
        case .drafterUnreadable(let path, let reason):
            return "cannot read the learned drafter \(path): \(reason); pass a drafter GGUF written by the training tool (drafters/README.md) to --drafter-model or \"drafter_model\""
        case .drafterMissingKey(let path, let key, let expected):
            return "the learned drafter \(path) lacks metadata key \(key) (\(expected)); it was not written by the drafter training tool or is damaged: write it again (drafters/README.md)"
        case .drafterWrongKind(let path, let key, let expected, let found):
            return "\(path) is not a feature-MLP drafter: \(key) is '\(found)', expected '\(expected)'; pass a drafter GGUF (drafters/<model>.drafter.gguf), not a model"
        case .drafterTargetMismatch(let path, let key, let drafter, let target):
            return "the learned drafter \(path) was trained for another model: its \(key) is \(drafter) but the served model's is \(target); use the drafter trained for this model (drafters/<model file stem>.drafter.gguf) or train one for it (drafters/README.md)"
        case .drafterTensor(let path, let tensor, let problem):
            return "the learned drafter \(path): tensor \(tensor) \(problem); write the file again with the training tool (drafters/README.md)"
        }
    }
}
