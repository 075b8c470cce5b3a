// MARK: - Configuration

/// Listener address, limits and timeouts of an `HTTPServer`. Value type; thread-safe.
///
/// Every limit answers with its own status: header section over `maxHeaderBytes` -> 431,
/// request-target over `maxRequestTargetBytes` -> 414, body over `maxBodyBytes` -> 413,
/// connections over `maxConnections` -> 503; a request whose head or body arrives too slowly -> 408.
/// All of them close the connection.
public struct HTTPServerConfiguration: Sendable, Equatable {
    /// Numeric address to bind: "127.0.0.1", "0.0.0.0", "::1", "::" (dual-stack), or "localhost".
    public var host: String
    /// TCP port to bind; 0 picks an ephemeral port (read it from `HTTPServer.port`).
    public var port: Int
    /// Pending-connection queue length passed to listen(2).
    public var backlog: Int
    /// Most connections served at once; more are answered 503 and closed.
    public var maxConnections: Int
    /// Most bytes in the request line plus headers (and, separately, in a chunked trailer section).
    public var maxHeaderBytes: Int
    /// Most bytes in the request-target (URL).
    public var maxRequestTargetBytes: Int
    /// Most bytes in a request body (after de-chunking).
    public var maxBodyBytes: Int
    /// Longest time from a request's first byte (or from accepting the connection) to the end of its head.
    public var headerReadTimeout: Duration
    /// Longest time to receive a whole request body once its head has arrived.
    public var bodyReadTimeout: Duration
    /// Longest time a kept-alive connection may wait for the next request's first byte.
    public var idleKeepAliveTimeout: Duration
    /// Longest time one socket write may block on a client that does not read; then the client counts as gone.
    public var writeTimeout: Duration
    /// Value of Access-Control-Allow-Origin (e.g. "*"); nil sends no CORS headers and leaves OPTIONS to the handler.
    public var corsAllowedOrigin: String?
    /// Methods listed in a preflight's Access-Control-Allow-Methods.
    public var corsAllowedMethods: [String]
    /// Request headers listed in a preflight's Access-Control-Allow-Headers.
    public var corsAllowedHeaders: [String]
    /// Seconds a browser may cache a preflight answer (Access-Control-Max-Age).
    public var corsMaxAgeSeconds: Int
    /// Value of the Server header on every response.
    public var serverName: String
    /// HTTPS settings; nil serves plain HTTP.
    public var tls: TLSConfiguration?
    /// Smallest body (bytes) of a complete (non-streamed) response that is gzip-compressed for a
    /// client that accepts gzip; nil never compresses. Request bodies with Content-Encoding: gzip
    /// are inflated either way (bounded by `maxBodyBytes`).
    public var compressionThresholdBytes: Int?

    /// A configuration; every parameter has a serving default.
    public init(
        host: String = "127.0.0.1",
        port: Int = 8080,
        backlog: Int = 128,
        maxConnections: Int = 64,
        maxHeaderBytes: Int = 64 * 1024,
        maxRequestTargetBytes: Int = 8 * 1024,
        maxBodyBytes: Int = 8 * 1024 * 1024,
        headerReadTimeout: Duration = .seconds(10),
        bodyReadTimeout: Duration = .seconds(30),
        idleKeepAliveTimeout: Duration = .seconds(30),
        writeTimeout: Duration = .seconds(30),
        corsAllowedOrigin: String? = nil,
        corsAllowedMethods: [String] = ["GET", "POST", "OPTIONS"],
        corsAllowedHeaders: [String] = ["Authorization", "Content-Type"],
        corsMaxAgeSeconds: Int = 86400,
        serverName: String = "CastServe",
        tls: TLSConfiguration? = nil,
        compressionThresholdBytes: Int? = 1024
    ) {
        self.host = host
        self.port = port
        self.backlog = backlog
        self.maxConnections = maxConnections
        self.maxHeaderBytes = maxHeaderBytes
        self.maxRequestTargetBytes = maxRequestTargetBytes
        self.maxBodyBytes = maxBodyBytes
        self.headerReadTimeout = headerReadTimeout
        self.bodyReadTimeout = bodyReadTimeout
        self.idleKeepAliveTimeout = idleKeepAliveTimeout
        self.writeTimeout = writeTimeout
        self.corsAllowedOrigin = corsAllowedOrigin
        self.corsAllowedMethods = corsAllowedMethods
        self.corsAllowedHeaders = corsAllowedHeaders
        self.corsMaxAgeSeconds = corsMaxAgeSeconds
        self.serverName = serverName
        self.tls = tls
        self.compressionThresholdBytes = compressionThresholdBytes
    }

    /// Checks ranges; throws `HTTPServerError.invalidConfiguration` naming the first bad field.
    public func validate() throws(HTTPServerError) {
        func bad(_ field: String, _ problem: String) -> HTTPServerError {
            .invalidConfiguration(field: field, problem: problem)
        }
        guard (0...65535).contains(port) else { throw bad("port", "is \(port); use 0...65535 (0 = ephemeral)") }
        guard backlog >= 1 else { throw bad("backlog", "is \(backlog); use at least 1") }
        guard maxConnections >= 1 else { throw bad("maxConnections", "is \(maxConnections); use at least 1") }
        guard maxHeaderBytes >= 256 else { throw bad("maxHeaderBytes", "is \(maxHeaderBytes); use at least 256") }
        guard maxRequestTargetBytes >= 1 else {
            throw bad("maxRequestTargetBytes", "is \(maxRequestTargetBytes); use at least 1")
        }
        guard maxBodyBytes >= 0 else { throw bad("maxBodyBytes", "is \(maxBodyBytes); use 0 or more") }
        for (name, value) in [
            ("headerReadTimeout", headerReadTimeout), ("bodyReadTimeout", bodyReadTimeout),
            ("idleKeepAliveTimeout", idleKeepAliveTimeout), ("writeTimeout", writeTimeout),
        ] where value <= .zero {
            throw bad(name, "is \(value); use a positive duration")
        }
        guard !serverName.isEmpty, !serverName.contains(where: { $0 == "\r" || $0 == "\n" }) else {
            throw bad("serverName", "is empty or holds a line break; use a short product name")
        }
        if let tls {
            guard tls.handshakeTimeout > .zero else {
                throw bad("tls.handshakeTimeout", "is \(tls.handshakeTimeout); use a positive duration")
            }
            guard !tls.certificatePath.isEmpty else { throw bad("tls.certificatePath", "is empty; give a PEM certificate file") }
            guard !tls.privateKeyPath.isEmpty else { throw bad("tls.privateKeyPath", "is empty; give a PEM private key file") }
        }
        if let threshold = compressionThresholdBytes, threshold < 0 {
            throw bad("compressionThresholdBytes", "is \(threshold); use 0 or more bytes, or nil to never compress")
        }
        if let origin = corsAllowedOrigin, origin.isEmpty || origin.contains(where: { $0 == "\r" || $0 == "\n" }) {
            throw bad("corsAllowedOrigin", "is empty or holds a line break; use \"*\" or an origin such as https://example.com")
        }
    }
}
