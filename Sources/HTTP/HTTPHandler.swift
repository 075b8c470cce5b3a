/// Answers requests. The server calls `handle` on the connection's serving thread (never an engine
/// thread), once per request, in request order on each connection.
///
/// The handler must eventually complete the response through `responder`: call `send` once, or
/// `startStream`/`startEventStream` and later `finish()` on the stream. It may do so before
/// returning (synchronous style; may block the connection thread for a whole generation), or
/// return first and complete the response from any other thread: the connection thread then waits,
/// writes queued stream output as it arrives, and watches for the client disconnecting.
public protocol HTTPHandler: Sendable {
    /// Handles one request; see the protocol's notes on completing the response.
    func handle(_ request: HTTPRequest, _ responder: HTTPResponder)

    /// The response for a request the server refuses itself (malformed or over a limit: 400, 408,
    /// 413, 414, 415, 431, ...), so refusals can share the API's error format; `message` says what
    /// was wrong and how to fix it. The server sets framing and Connection. Return nil for a
    /// plain-text body (the default). Called on a connection thread; must not block.
    func refusalResponse(status: HTTPStatus, message: String) -> HTTPResponse?
}

extension HTTPHandler {
    /// Plain-text refusals.
    public func refusalResponse(status: HTTPStatus, message: String) -> HTTPResponse? { nil }
}

/// An `HTTPHandler` made of a closure.
public struct HTTPClosureHandler: HTTPHandler {
    private let body: @Sendable (HTTPRequest, HTTPResponder) -> Void

    /// A handler that runs `body` for every request.
    public init(_ body: @escaping @Sendable (HTTPRequest, HTTPResponder) -> Void) {
        self.body = body
    }

    public func handle(_ request: HTTPRequest, _ responder: HTTPResponder) {
        body(request, responder)
    }
}
