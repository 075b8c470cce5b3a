// MARK: - TLS configuration

/// HTTPS for an `HTTPServer`: a PEM certificate (chain) and its private key, served with
/// TLS 1.2 or newer through OpenSSL. Value type; thread-safe.
///
/// The files are read once, at `HTTPServer.start()`; a missing or unreadable file, a file that is
/// not PEM, or a key that does not belong to the certificate stops the start with an
/// `HTTPServerError` naming the file and the fix.
public struct TLSConfiguration: Sendable, Equatable {
    /// Path of the PEM certificate file; it may hold the chain (leaf first, then intermediates).
    public var certificatePath: String
    /// Path of the PEM private key of the certificate (unencrypted).
    public var privateKeyPath: String
    /// Longest time from accepting a connection to the end of its TLS handshake; a client that
    /// stalls longer is disconnected. Handshakes never hold a connection thread.
    public var handshakeTimeout: Duration

    /// A TLS configuration; the handshake timeout defaults to 10 seconds.
    public init(certificatePath: String, privateKeyPath: String, handshakeTimeout: Duration = .seconds(10)) {
        self.certificatePath = certificatePath
        self.privateKeyPath = privateKeyPath
        self.handshakeTimeout = handshakeTimeout
    }
}
