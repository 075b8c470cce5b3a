// MARK: - Events

/// Something the server did that the executable may log or count (one event per finished request,
/// refused request or rejected connection). Delivered on a serving thread or the event loop: keep the
/// receiver fast and non-blocking.
public enum HTTPServerEvent: Sendable {
    /// A request finished: response complete, or the client went away first.
    case requestFinished(HTTPRequestRecord)
    /// A request was refused before any handler ran (parse error, limit, timeout); the connection closed.
    case requestRefused(status: HTTPStatus, reason: String)
    /// A connection was answered 503 because `maxConnections` were open.
    case connectionRejected(maxConnections: Int)
    /// A TLS connection closed before its handshake completed: a protocol error (e.g. a client
    /// offering only TLS 1.1), plain HTTP sent to the TLS port, or the handshake timeout.
    case tlsHandshakeFailed(reason: String)
}

/// The access-log facts of one request.
public struct HTTPRequestRecord: Sendable {
    /// Request method, e.g. "POST".
    public var method: String
    /// Raw request-target, e.g. "/v1/chat/completions".
    public var target: String
    /// The X-Request-Id sent with the response.
    public var requestID: String
    /// The response status, nil when no response was started before the client went away.
    public var status: HTTPStatus?
    /// Time from the parsed request to the last byte written (or to the disconnect).
    public var duration: Duration
    /// True when the client disconnected before the response completed.
    public var clientWentAway: Bool
}
