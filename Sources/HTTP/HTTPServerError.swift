// MARK: - Server errors

/// Failures of the listener and of writing responses (parse errors are `HTTPParseError`).
public enum HTTPServerError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The configuration has an impossible value. Carries the field and the problem.
    case invalidConfiguration(field: String, problem: String)
    /// The host could not be resolved to a numeric IPv4 or IPv6 address.
    case invalidAddress(host: String, port: Int, reason: String)
    /// A socket system call failed while starting the listener. Carries the call and errno text.
    case listenerFailed(host: String, port: Int, call: String, reason: String)
    /// `start()` was called on a server that was already started.
    case alreadyStarted
    /// The client closed the connection (or a write to it failed): stop producing output.
    case clientDisconnected
    /// A write came after `finish()` or after the response was complete.
    case streamFinished
    /// A TLS certificate or key file cannot be opened. `role` is "certificate" or "private key".
    case tlsFileUnreadable(role: String, path: String, reason: String)
    /// The certificate file is not a PEM certificate (chain) OpenSSL accepts. Carries OpenSSL's reason.
    case tlsCertificateInvalid(path: String, reason: String)
    /// The key file is not an unencrypted PEM private key OpenSSL accepts. Carries OpenSSL's reason.
    case tlsPrivateKeyInvalid(path: String, reason: String)
    /// The private key does not belong to the certificate.
    case tlsKeyMismatch(certificatePath: String, privateKeyPath: String)
    /// OpenSSL could not set up a server context (out of memory, broken library).
    case tlsSetupFailed(reason: String)

    public var description: String {
        switch self {
        case .invalidConfiguration(let field, let problem):
            return "invalid HTTP server configuration: \(field) \(problem)"
        case .invalidAddress(let host, let port, let reason):
            return "cannot listen on \(host):\(port): \(reason); use a numeric address such as 127.0.0.1, 0.0.0.0 or ::"
        case .listenerFailed(let host, let port, let call, let reason):
            return "cannot listen on \(host):\(port): \(call) failed: \(reason); pick another port or stop the process using it"
        case .alreadyStarted:
            return "the HTTP server was already started; create a new HTTPServer to listen again"
        case .clientDisconnected:
            return "the client closed the connection; stop generating output for this request"
        case .streamFinished:
            return "the response stream is already finished; write nothing after finish()"
        case .tlsFileUnreadable(let role, let path, let reason):
            let key = role == "certificate" ? "tls_cert (--tls-cert)" : "tls_key (--tls-key)"
            return "TLS \(role) file '\(path)' cannot be read: \(reason); point \(key) at a readable PEM file"
        case .tlsCertificateInvalid(let path, let reason):
            return "TLS certificate file '\(path)' is not a usable PEM certificate (OpenSSL: \(reason)); "
                + "give a PEM file that starts with -----BEGIN CERTIFICATE----- (leaf first, then intermediates)"
        case .tlsPrivateKeyInvalid(let path, let reason):
            return "TLS private key file '\(path)' is not a usable PEM private key (OpenSSL: \(reason)); "
                + "give the unencrypted PEM key (-----BEGIN PRIVATE KEY-----), e.g. decrypt it with `openssl pkey -in KEY -out KEY.plain`"
        case .tlsKeyMismatch(let certificate, let key):
            return "TLS private key '\(key)' does not belong to certificate '\(certificate)'; "
                + "pass the key the certificate was issued for (compare `openssl x509 -noout -pubkey -in CERT` with `openssl pkey -pubout -in KEY`)"
        case .tlsSetupFailed(let reason):
            return "OpenSSL could not set up TLS: \(reason); check the OpenSSL installation (libssl3)"
        }
    }
}
