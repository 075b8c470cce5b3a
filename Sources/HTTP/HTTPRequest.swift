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

// MARK: - Content coding

extension HTTPRequest {
    /// Undoes the body's Content-Encoding in place (RFC 9110 section 8.4): `gzip` (or `x-gzip`) is
    /// inflated, `identity` is nothing; afterwards Content-Encoding is gone and Content-Length (when
    /// present) gives the decoded size. The decoded body may be at most `maxBodyBytes`; inflating
    /// stops as soon as it would pass that.
    /// - Throws: `HTTPParseError.unsupportedContentEncoding` (415) for any other coding,
    ///   `.decodedBodyTooLarge` (413), `.invalidGzipBody` (400).
    public mutating func decodeContentEncoding(maxBodyBytes: Int) throws(HTTPParseError) {
        let values = headers.values(for: "Content-Encoding")
        guard !values.isEmpty else { return }
        let codings = values.joined(separator: ",").split(separator: ",")
            .map { $0.trimmingHTTPWhitespace().lowercased() }.filter { !$0.isEmpty }
        // Codings are listed in the order they were applied: undo them from the last.
        for coding in codings.reversed() {
            switch coding {
            case "identity": continue
            case "gzip", "x-gzip": body = try Gzip.decompress(body, maxBytes: maxBodyBytes)
            default: throw .unsupportedContentEncoding(values.joined(separator: ", "))
            }
        }
        headers.remove(name: "Content-Encoding")
        if headers.contains("Content-Length") { headers["Content-Length"] = String(body.count) }
    }
}
