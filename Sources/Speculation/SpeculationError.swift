/// A drafter configured with values it cannot use.
public enum SpeculationError: Error, CustomStringConvertible, Equatable {
    /// An early-exit depth outside the target's layers.
    case invalidSkipLayers(requested: Int, available: Int)
    /// A branching width or level budget below one.
    case invalidDraftWidth(parameter: String, value: Int)

    public var description: String {
        switch self {
        case .invalidSkipLayers(let requested, let available):
            return "the skip drafter cannot exit after \(requested) layers: the model has \(available); choose 1...\(available) (fewer is faster, more is more accurate)"
        case .invalidDraftWidth(let parameter, let value):
            return "the skip drafter's \(parameter) is \(value); it must be at least 1"
        }
    }
}
