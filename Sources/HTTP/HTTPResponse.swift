import Foundation

/// A complete response: status, header fields and body, sent with Content-Length.
///
/// The server adds Date, Server, X-Request-Id, Content-Length, Connection and (when configured)
/// Access-Control-Allow-Origin; the handler's own Content-Length, Transfer-Encoding and Connection
/// fields are replaced. Value type; thread-safe.
public struct HTTPResponse: Sendable, Equatable {
    /// The status line's code and phrase.
    public var status: HTTPStatus
    /// Header fields set by the handler.
    public var headers: HTTPHeaders
    /// The body bytes (omitted on the wire for HEAD requests and 1xx/204/304 statuses).
    public var body: Data

    /// A response from its parts.
    public init(status: HTTPStatus = .ok, headers: HTTPHeaders = HTTPHeaders(), body: Data = Data()) {
        self.status = status
        self.headers = headers
        self.body = body
    }

    /// A response with a UTF-8 text body and its Content-Type, e.g. `contentType: "application/json"`.
    public init(status: HTTPStatus = .ok, contentType: String, body: String, headers: HTTPHeaders = HTTPHeaders()) {
        var headers = headers
        headers["Content-Type"] = contentType
        self.init(status: status, headers: headers, body: Data(body.utf8))
    }
}
