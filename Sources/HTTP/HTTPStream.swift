import Foundation

/// The body of a streamed response, from `HTTPResponder.startStream` or `startEventStream`.
///
/// Framing follows the client: chunked for HTTP/1.1 (each write is one chunk and is flushed),
/// close-delimited for HTTP/1.0 (the connection closes after `finish`), nothing at all for HEAD
/// (writes are accepted and dropped). Thread-safe: writes from any threads are serialised in call
/// order; see `HTTPResponder` for which thread does the socket I/O. Output waiting for a slow client
/// is buffered without bound; producers that can outrun the network should watch `bufferedByteCount`.
public final class HTTPStream: @unchecked Sendable {
    enum Mode {
        case chunked
        case closeDelimited
        case discard
    }

    private let responder: HTTPResponder
    private let mode: Mode

    init(responder: HTTPResponder, mode: Mode) {
        self.responder = responder
        self.mode = mode
    }

    /// The responder this stream belongs to (request ID, disconnect callbacks).
    public var requestID: String { responder.requestID }

    /// Writes body bytes (one chunk). Empty writes are ignored.
    /// Throws `.clientDisconnected` once the client is gone, `.streamFinished` after `finish()`.
    public func write(_ bytes: Data) throws(HTTPServerError) {
        try write(bytes: Array(bytes))
    }

    /// Writes UTF-8 text as body bytes (one chunk).
    public func write(_ text: String) throws(HTTPServerError) {
        try write(bytes: Array(text.utf8))
    }

    /// Sends one Server-Sent Event: optional `event:` and `id:` lines, then one `data:` line per line
    /// of `data`, then a blank line (WHATWG HTML, server-sent events), flushed as one chunk.
    /// For OpenAI streams: `sendEvent(jsonText)` and finally `sendEvent("[DONE]")`.
    public func sendEvent(_ data: String, event: String? = nil, id: String? = nil) throws(HTTPServerError) {
        var text = ""
        if let event { text += "event: \(singleLine(event))\n" }
        if let id { text += "id: \(singleLine(id))\n" }
        var lines = data.split(separator: "\n", omittingEmptySubsequences: false)
        if lines.isEmpty { lines = [""] }
        for line in lines {
            text += "data: "
            text += line.hasSuffix("\r") ? String(line.dropLast()) : String(line)
            text += "\n"
        }
        text += "\n"
        try write(bytes: Array(text.utf8))
    }

    /// Ends the response (the terminating zero chunk for chunked framing). Idempotent; does nothing
    /// when the client is gone.
    public func finish() {
        let trailer: [UInt8] = mode == .chunked ? Array("0\r\n\r\n".utf8) : []
        try? responder.enqueue(trailer, completes: true)
    }

    /// Bytes written to the stream but not yet to the socket (see `HTTPResponder.bufferedByteCount`).
    public var bufferedByteCount: Int { responder.bufferedByteCount }

    /// Whether the client has gone away (see `HTTPResponder.isClientGone`).
    public var isClientGone: Bool { responder.isClientGone }

    /// Registers a callback for a client disconnect (see `HTTPResponder.onDisconnect`).
    public func onDisconnect(_ callback: @escaping @Sendable () -> Void) {
        responder.onDisconnect(callback)
    }

    private func write(bytes: [UInt8]) throws(HTTPServerError) {
        switch mode {
        case .discard:
            if responder.isClientGone { throw .clientDisconnected }
        case .closeDelimited:
            guard !bytes.isEmpty else { return }
            try responder.enqueue(bytes, completes: false)
        case .chunked:
            guard !bytes.isEmpty else { return }
            var frame = Array(String(bytes.count, radix: 16).utf8)
            frame.reserveCapacity(frame.count + bytes.count + 4)
            frame.append(0x0D)
            frame.append(0x0A)
            frame.append(contentsOf: bytes)
            frame.append(0x0D)
            frame.append(0x0A)
            try responder.enqueue(frame, completes: false)
        }
    }

    private func singleLine(_ text: String) -> String {
        text.replacingOccurrences(of: "\r", with: " ").replacingOccurrences(of: "\n", with: " ")
    }
}
