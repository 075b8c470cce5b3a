/// What can be wrong with a grammar or a JSON schema a request sends. Each message names the
/// place (line and column, or the schema path) and says what to change.
public enum GrammarError: Error, CustomStringConvertible, Equatable, Sendable {
    /// GBNF text that does not parse.
    case syntax(line: Int, column: Int, message: String)
    /// A rule used but never defined.
    case undefinedRule(String)
    /// No `root` rule.
    case missingRoot
    /// A rule that can reach itself without consuming a character (top-down matching would loop).
    case leftRecursion(String)
    /// A grammar beyond the server's size limits.
    case tooLarge(String)
    /// A JSON-schema keyword the compiler does not support, at a schema path.
    case unsupportedKeyword(keyword: String, path: String)
    /// A supported keyword used in a way the compiler does not support (a regular-expression
    /// construct in `pattern`, an unknown `format`, a fractional bound on a number, ...).
    case unsupportedFeature(keyword: String, path: String, message: String)
    /// A JSON schema that is malformed at a path (wrong type of a keyword's value, bad $ref, ...).
    case invalidSchema(path: String, message: String)

    public var description: String {
        switch self {
        case .syntax(let line, let column, let message):
            return "grammar syntax error at line \(line), column \(column): \(message)"
        case .undefinedRule(let name):
            return "grammar rule '\(name)' is used but not defined; define it as `\(name) ::= ...`"
        case .missingRoot:
            return "the grammar has no 'root' rule; the output must match `root ::= ...`"
        case .leftRecursion(let name):
            return "grammar rule '\(name)' is left-recursive (it can reach itself without reading a character); rewrite it with repetition, e.g. `list ::= item (\",\" item)*`"
        case .tooLarge(let what):
            return "the grammar is too large: \(what)"
        case .unsupportedKeyword(let keyword, let path):
            return "JSON schema keyword '\(keyword)' at \(path) is not supported; supported keywords: \(JSONSchemaGrammar.supportedKeywords.joined(separator: ", "))"
        case .unsupportedFeature(let keyword, let path, let message):
            return "JSON schema keyword '\(keyword)' at \(path): \(message)"
        case .invalidSchema(let path, let message):
            return "invalid JSON schema at \(path): \(message)"
        }
    }
}
