// MARK: - Server errors

/// Failures of the listener and of writing responses (parse errors are `HTTPParseError`).
public enum HTTPServerError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The configuration has an impossible value. Carries the field and the problem.
    case invalidConfiguration(field: String, problem: String)
    /// The host could not be resolved to a numeric IPv4 or IPv6 address.
    case invalidAddress(host: String, port: Int, reason: String)
    /// A socket system call failed while starting the listener. Carries the call and errno text.
    case listenerFailed(host: String, port: Int, call: String, reason: String)
    /// `start()` was called on a server that was already started.
    case alreadyStarted
    /// The client closed the connection (or a write to it failed): stop producing output.
    case clientDisconnected
    /// A write came after `finish()` or after the response was complete.
    case streamFinished

    public var description: String {
        switch self {
        case .invalidConfiguration(let field, let problem):
            return "invalid HTTP server configuration: \(field) \(problem)"
        case .invalidAddress(let host, let port, let reason):
            return "cannot listen on \(host):\(port): \(reason); use a numeric address such as 127.0.0.1, 0.0.0.0 or ::"
        case .listenerFailed(let host, let port, let call, let reason):
            return "cannot listen on \(host):\(port): \(call) failed: \(reason); pick another port or stop the process using it"
        case .alreadyStarted:
            return "the HTTP server was already started; create a new HTTPServer to listen again"
        case .clientDisconnected:
            return "the client closed the connection; stop generating output for this request"
        case .streamFinished:
            return "the response stream is already finished; write nothing after finish()"
        }
    }
}
