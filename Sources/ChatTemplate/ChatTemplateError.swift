// MARK: - Chat template errors

/// Why a chat template could not be parsed or rendered. Lines are 1-based lines of the template source.
public enum ChatTemplateError: Error, CustomStringConvertible, Equatable, Sendable {
    /// The model has no `tokenizer.chat_template`.
    case missingTemplate
    /// The template is not valid Jinja.
    case syntax(line: Int, message: String)
    /// The template uses a Jinja feature this interpreter does not implement.
    case unsupported(construct: String, line: Int)
    /// The template called `raise_exception(message)`, usually because the messages break its rules
    /// (for example, roles that do not alternate).
    case raised(message: String, line: Int)
    /// An operation got values of the wrong type (e.g. adding a string and a number).
    case type(message: String, line: Int)

    public var description: String {
        switch self {
        case .missingTemplate:
            return "the model has no tokenizer.chat_template; pass a template explicitly or use the completions endpoint"
        case .syntax(let line, let message):
            return "chat template line \(line): syntax error: \(message)"
        case .unsupported(let construct, let line):
            return "chat template line \(line): \(construct) is not supported by this Jinja interpreter; "
                + "simplify the template or supply one without it"
        case .raised(let message, let line):
            return "chat template line \(line) rejected the conversation: \(message)"
        case .type(let message, let line):
            return "chat template line \(line): \(message)"
        }
    }
}
