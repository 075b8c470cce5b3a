import Foundation

// MARK: - Request

/// One complete request as parsed from the connection: head, de-chunked body and trailers.
///
/// Value type; thread-safe. Bodies are at most `HTTPServerConfiguration.maxBodyBytes`.
public struct HTTPRequest: Sendable, Equatable {
    /// The method as sent (case-sensitive), e.g. "GET", "POST", "HEAD", "OPTIONS".
    public var method: String
    /// The raw request-target, e.g. "/v1/chat/completions?x=1".
    public var target: String
    /// The protocol version of the request line.
    public var version: HTTPVersion
    /// The header fields in order; lookup is case-insensitive.
    public var headers: HTTPHeaders
    /// The body bytes, de-chunked. Empty when the request has none.
    public var body: Data
    /// Trailer fields that followed a chunked body (usually empty).
    public var trailers: HTTPHeaders
    /// Whether the client allows the connection to stay open after the response
    /// (HTTP/1.1 unless `Connection: close`; HTTP/1.0 only with `Connection: keep-alive`).
    public var keepAlive: Bool

    /// A request from its parts (mainly for tests and routers).
    public init(
        method: String, target: String, version: HTTPVersion = .http1_1, headers: HTTPHeaders = HTTPHeaders(),
        body: Data = Data(), trailers: HTTPHeaders = HTTPHeaders(), keepAlive: Bool = true
    ) {
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers
        self.body = body
        self.trailers = trailers
        self.keepAlive = keepAlive
    }

    /// The target's path: the part before any '?', e.g. "/v1/models".
    public var path: String {
        if let q = target.firstIndex(of: "?") { return String(target[..<q]) }
        return target
    }

    /// The target's query: the part after the first '?', without it; nil when there is none.
    public var query: String? {
        guard let q = target.firstIndex(of: "?") else { return nil }
        return String(target[target.index(after: q)...])
    }
}
