import CZlib
import Foundation

/// The gzip content coding (RFC 9110 section 8.4.1.3, RFC 1952) through zlib: compressing
/// responses, inflating request bodies under a size limit, and reading `Accept-Encoding`.
///
/// Stateless; every function is thread-safe (each call owns its zlib stream).
public enum Gzip {
    /// Output produced per inflate call while decoding (bytes); the decoder never holds more than
    /// the limit plus this much.
    static let inflateChunkBytes = 64 * 1024

    // MARK: - Compress

    /// `bytes` as one gzip member at zlib `level` (1 fastest ... 9 smallest; 6 is zlib's default).
    /// Precondition: `level` in 1...9 (programmer error otherwise).
    public static func compress(_ bytes: Data, level: Int = 6) -> Data {
        precondition((1...9).contains(level), "gzip level \(level) is outside 1...9")
        var stream = z_stream()
        let initialised = castserve_deflate_init_gzip(&stream, Int32(level))
        // Only a bad level or no memory fail here; the level is checked above.
        precondition(initialised == Z_OK, "deflateInit2 failed with \(initialised)")
        defer { deflateEnd(&stream) }
        let bound = Int(deflateBound(&stream, uLong(bytes.count)))
        var out = Data(count: bound)
        let written: Int = bytes.withUnsafeBytes { input in
            out.withUnsafeMutableBytes { output in
                stream.next_in = UnsafeMutablePointer(mutating: input.bindMemory(to: Bytef.self).baseAddress)
                stream.avail_in = uInt(input.count)
                stream.next_out = output.bindMemory(to: Bytef.self).baseAddress
                stream.avail_out = uInt(output.count)
                // deflateBound guarantees one Z_FINISH call completes the stream.
                let rc = deflate(&stream, Z_FINISH)
                precondition(rc == Z_STREAM_END, "deflate with a deflateBound-sized buffer returned \(rc)")
                return output.count - Int(stream.avail_out)
            }
        }
        out.count = written
        return out
    }

    // MARK: - Decompress

    /// Inflates a gzip body (one or more concatenated members) into at most `maxBytes` bytes.
    ///
    /// Decoding stops as soon as the output would pass `maxBytes`, so a small body that inflates
    /// to gigabytes (a "zip bomb") costs at most `maxBytes` plus one 64 KiB chunk of memory.
    /// An empty input is an empty body.
    /// - Throws: `HTTPParseError.decodedBodyTooLarge` past the limit,
    ///   `HTTPParseError.invalidGzipBody` for corrupt or truncated data.
    public static func decompress(_ bytes: Data, maxBytes: Int) throws(HTTPParseError) -> Data {
        if bytes.isEmpty { return Data() }
        var stream = z_stream()
        guard castserve_inflate_init_gzip(&stream) == Z_OK else {
            throw .invalidGzipBody("the decoder could not start (out of memory)")
        }
        defer { inflateEnd(&stream) }
        var out = Data()
        var scratch = [UInt8](repeating: 0, count: inflateChunkBytes)
        let result: Result<Void, HTTPParseError> = bytes.withUnsafeBytes { input in
            stream.next_in = UnsafeMutablePointer(mutating: input.bindMemory(to: Bytef.self).baseAddress)
            stream.avail_in = uInt(input.count)
            return scratch.withUnsafeMutableBufferPointer { buffer in
                while true {
                    // Ask for at most one byte past the limit: that byte proves the body too large.
                    let room = min(buffer.count, maxBytes - out.count + 1)
                    stream.next_out = buffer.baseAddress
                    stream.avail_out = uInt(room)
                    let rc = inflate(&stream, Z_NO_FLUSH)
                    let produced = room - Int(stream.avail_out)
                    if out.count + produced > maxBytes { return .failure(.decodedBodyTooLarge(limitBytes: maxBytes)) }
                    out.append(buffer.baseAddress!, count: produced)
                    switch rc {
                    case Z_OK:
                        continue
                    case Z_STREAM_END:
                        // Another member may follow (RFC 1952 section 2.2); trailing zeros are padding.
                        if stream.avail_in == 0 { return .success(()) }
                        let rest = UnsafeBufferPointer(start: stream.next_in, count: Int(stream.avail_in))
                        if rest.allSatisfy({ $0 == 0 }) { return .success(()) }
                        guard inflateReset(&stream) == Z_OK else {
                            return .failure(.invalidGzipBody("a following member could not be started"))
                        }
                    case Z_BUF_ERROR where stream.avail_in == 0:
                        return .failure(.invalidGzipBody("the data ends before the gzip stream does (truncated)"))
                    case Z_BUF_ERROR:
                        continue
                    default:
                        let reason = stream.msg.map { String(cString: $0) } ?? "zlib error \(rc)"
                        return .failure(.invalidGzipBody(reason))
                    }
                }
            }
        }
        try result.get()
        return out
    }

    // MARK: - Negotiation

    /// Whether `Accept-Encoding` values (every field, in order) allow a gzip response
    /// (RFC 9110 section 12.5.3): an explicit `gzip` or `x-gzip` with a q-value above 0, or else
    /// `*` above 0. `q=0` refuses; no field at all means no compression.
    public static func accepts(_ acceptEncoding: [String]) -> Bool {
        var explicit: Bool?
        var wildcard: Bool?
        for value in acceptEncoding {
            for element in value.split(separator: ",") {
                let parts = element.split(separator: ";")
                guard let first = parts.first else { continue }
                let coding = first.trimmingHTTPWhitespace().lowercased()
                var quality = 1.0
                for parameter in parts.dropFirst() {
                    let pair = parameter.split(separator: "=", maxSplits: 1)
                    guard pair.count == 2, pair[0].trimmingHTTPWhitespace().lowercased() == "q" else { continue }
                    quality = Double(pair[1].trimmingHTTPWhitespace()) ?? 0
                }
                if coding == "gzip" || coding == "x-gzip" {
                    explicit = (explicit ?? false) || quality > 0
                } else if coding == "*" {
                    wildcard = quality > 0
                }
            }
        }
        return explicit ?? wildcard ?? false
    }
}
