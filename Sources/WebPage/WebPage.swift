import Foundation

/// One file of the page served at GET /: its bytes, content type and validator.
///
/// Value type; thread-safe.
public struct PageAsset: Sendable {
    /// The URL path the asset answers ("/", "/app.js", ...).
    public let path: String
    /// The Content-Type header value, with charset for text.
    public let contentType: String
    /// The file's bytes, as kept in the repository (`Sources/WebPage/Resources/`).
    public let body: Data
    /// A weak entity tag (`W/"…"`, FNV-1a 64 of the bytes): weak because the same bytes go out
    /// gzip-compressed or not, depending on the request.
    public let etag: String

    init(path: String, contentType: String, bytes: [UInt8]) {
        self.path = path
        self.contentType = contentType
        body = Data(bytes)
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in bytes {
            hash ^= UInt64(byte)
            hash = hash &* 0x0000_0100_0000_01b3
        }
        etag = "W/\"\(String(hash, radix: 16))-\(bytes.count)\""
    }
}

/// The single-page app served at GET / (chat and the live engine view): plain HTML, CSS and
/// JavaScript embedded in the binary at build time (SwiftPM `embedInCode` resources), so the
/// page works wherever the binary runs (`make run`, the container image) with nothing fetched at
/// run time and no build step for the page itself.
public enum WebPage {
    /// The page's files by URL path.
    public static let assets: [String: PageAsset] = {
        let files = [
            PageAsset(path: "/", contentType: "text/html; charset=utf-8", bytes: PackageResources.index_html),
            PageAsset(path: "/app.js", contentType: "text/javascript; charset=utf-8", bytes: PackageResources.app_js),
            PageAsset(path: "/app.css", contentType: "text/css; charset=utf-8", bytes: PackageResources.app_css),
            PageAsset(path: "/favicon.svg", contentType: "image/svg+xml", bytes: PackageResources.favicon_svg),
        ]
        var table: [String: PageAsset] = [:]
        for file in files { table[file.path] = file }
        table["/index.html"] = table["/"]
        return table
    }()
}
