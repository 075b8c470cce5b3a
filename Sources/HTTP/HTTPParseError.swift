// MARK: - Parse errors

/// Why a request could not be parsed or was refused before reaching a handler.
///
/// Each case maps to the status the server answers with (`status`); the server then closes the
/// connection, because after a framing error the next request's start cannot be trusted
/// (RFC 9112 section 11.2, request smuggling). `description` names the problem and the fix.
public enum HTTPParseError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The request line is not `method SP request-target SP HTTP-version`. Carries the line.
    case invalidRequestLine(String)
    /// The method contains characters outside RFC 9110's token set. Carries the method.
    case invalidMethod(String)
    /// The request-target is empty or has spaces, control or non-ASCII bytes. Carries the target.
    case invalidRequestTarget(String)
    /// The request-target is longer than the limit (bytes).
    case requestTargetTooLong(limitBytes: Int)
    /// The version is not of the form HTTP/d.d. Carries the text found.
    case invalidVersion(String)
    /// A well-formed version other than HTTP/1.0 or HTTP/1.1. Carries the version.
    case unsupportedVersion(String)
    /// A header line without a colon or with an invalid field name. Carries the line.
    case invalidHeaderLine(String)
    /// A header value holding control characters. Carries the field name.
    case invalidHeaderValue(name: String)
    /// A line that starts with whitespace (obsolete line folding, RFC 9112 section 5.2).
    case obsoleteLineFolding(String)
    /// A carriage return not followed by a line feed inside the head.
    case bareCarriageReturn
    /// The request head (request line plus headers, or the trailer section) exceeds the limit (bytes).
    case headersTooLarge(limitBytes: Int)
    /// An HTTP/1.1 request without a Host header, or with more than one.
    case invalidHost(String)
    /// Both Content-Length and Transfer-Encoding are present.
    case contentLengthWithTransferEncoding
    /// Content-Length values that differ. Carries the values.
    case conflictingContentLength([String])
    /// A Content-Length that is not a non-negative decimal integer of at most 18 digits. Carries it.
    case invalidContentLength(String)
    /// The body is larger than the limit (bytes); `declaredBytes` is the Content-Length when known.
    case bodyTooLarge(limitBytes: Int, declaredBytes: Int?)
    /// A Transfer-Encoding whose final coding is not chunked, that repeats chunked, or that an
    /// HTTP/1.0 request carries. Carries the field value.
    case invalidTransferEncoding(String)
    /// A transfer coding other than chunked applied before chunked (e.g. gzip). Carries the coding.
    case unsupportedTransferEncoding(String)
    /// A chunk-size line that is not hexadecimal or has invalid extensions. Carries the line.
    case invalidChunkSize(String)
    /// Chunk data not followed by CRLF, or a chunk line not ended by CRLF.
    case invalidChunkFraming
    /// An Expect header other than 100-continue. Carries the value.
    case unsupportedExpectation(String)
    /// A Content-Encoding other than gzip (or identity). Carries the field value.
    case unsupportedContentEncoding(String)
    /// A gzip body that inflates past the body limit (bytes); decoding stopped at the limit.
    case decodedBodyTooLarge(limitBytes: Int)
    /// A body sent with Content-Encoding: gzip that is not valid gzip. Carries zlib's reason.
    case invalidGzipBody(String)

    /// The response status for this error: 400, 413, 414, 415, 417, 431, 501 or 505.
    public var status: HTTPStatus {
        switch self {
        case .requestTargetTooLong: return .uriTooLong
        case .unsupportedVersion: return .httpVersionNotSupported
        case .headersTooLarge: return .requestHeaderFieldsTooLarge
        case .bodyTooLarge, .decodedBodyTooLarge: return .contentTooLarge
        case .unsupportedContentEncoding: return .unsupportedMediaType
        case .unsupportedTransferEncoding: return .notImplemented
        case .unsupportedExpectation: return .expectationFailed
        default: return .badRequest
        }
    }

    public var description: String {
        switch self {
        case .invalidRequestLine(let line):
            return "malformed request line \(quoted(line)); expected 'METHOD /path HTTP/1.1' separated by single spaces"
        case .invalidMethod(let method):
            return "invalid method \(quoted(method)); methods are tokens such as GET or POST"
        case .invalidRequestTarget(let target):
            return "invalid request target \(quoted(target)); percent-encode spaces, control and non-ASCII characters"
        case .requestTargetTooLong(let limit):
            return "request target is longer than \(limit) bytes; shorten the URL or send the data in the body"
        case .invalidVersion(let version):
            return "invalid protocol version \(quoted(version)); expected HTTP/1.1 or HTTP/1.0"
        case .unsupportedVersion(let version):
            return "protocol version \(version) is not supported; use HTTP/1.1 or HTTP/1.0"
        case .invalidHeaderLine(let line):
            return "malformed header line \(quoted(line)); expected 'Name: value' with no space before the colon"
        case .invalidHeaderValue(let name):
            return "header \(name) holds control characters; remove them"
        case .obsoleteLineFolding(let line):
            return "header line \(quoted(line)) starts with whitespace (obsolete line folding); put each field on one line"
        case .bareCarriageReturn:
            return "the request head holds a carriage return without a line feed; end lines with CRLF"
        case .headersTooLarge(let limit):
            return "request header section is larger than \(limit) bytes; send fewer or shorter headers"
        case .invalidHost(let detail):
            return "\(detail); an HTTP/1.1 request needs exactly one Host header"
        case .contentLengthWithTransferEncoding:
            return "request has both Content-Length and Transfer-Encoding; send only one of them"
        case .conflictingContentLength(let values):
            return "request has differing Content-Length values \(values.joined(separator: ", ")); send one"
        case .invalidContentLength(let value):
            return "invalid Content-Length \(quoted(value)); expected a non-negative decimal byte count"
        case .bodyTooLarge(let limit, let declared):
            let size = declared.map { "\($0) bytes" } ?? "more"
            return "request body (\(size)) is larger than the limit of \(limit) bytes; send a smaller body"
        case .invalidTransferEncoding(let value):
            return "invalid Transfer-Encoding \(quoted(value)); HTTP/1.1 requests may use only 'chunked' (once, last)"
        case .unsupportedTransferEncoding(let coding):
            return "transfer coding \(quoted(coding)) is not implemented; send the body with Transfer-Encoding: chunked only"
        case .invalidChunkSize(let line):
            return "invalid chunk-size line \(quoted(line)); expected hexadecimal digits, optional ';ext', then CRLF"
        case .invalidChunkFraming:
            return "chunked body is malformed: chunk data must be followed by CRLF"
        case .unsupportedExpectation(let value):
            return "Expect: \(value) is not supported; only 'Expect: 100-continue' is"
        case .unsupportedContentEncoding(let value):
            return "Content-Encoding \(quoted(value)) is not supported; send the body uncompressed or with Content-Encoding: gzip"
        case .decodedBodyTooLarge(let limit):
            return "the gzip request body inflates to more than the limit of \(limit) bytes; send a smaller body"
        case .invalidGzipBody(let reason):
            return "the request body is not valid gzip (\(reason)); compress it with gzip or drop Content-Encoding"
        }
    }
}

/// The text quoted and cut to 80 characters, so a hostile line cannot flood a log or response.
private func quoted(_ text: String) -> String {
    let cut = text.count > 80 ? String(text.prefix(80)) + "..." : text
    return "'" + cut + "'"
}
