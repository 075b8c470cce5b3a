import COpenSSL
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The server side of OpenSSL: one `SSL_CTX` (certificate, key, TLS 1.2+) shared by every
/// connection, and a `TLSSession` per connection. Internal to the HTTP target.
///
/// Thread-safety: the context is immutable after `init` and OpenSSL allows creating sessions from
/// any thread; each `TLSSession` is used by one thread at a time (the event loop while it shakes
/// hands, then the connection's worker).
final class TLSContext: @unchecked Sendable {
    private let context: OpaquePointer

    /// Loads and checks the certificate and key; throws the first problem, naming the file.
    init(configuration: TLSConfiguration) throws(HTTPServerError) {
        let certificate = configuration.certificatePath, key = configuration.privateKeyPath
        try TLSContext.checkReadable(certificate, role: "certificate")
        try TLSContext.checkReadable(key, role: "private key")
        ERR_clear_error()
        guard let context = SSL_CTX_new(TLS_server_method()) else {
            throw .tlsSetupFailed(reason: TLSContext.openSSLErrorText())
        }
        // Configured before `self.context` is set: a throw from here on frees it once, here.
        do throws(HTTPServerError) {
            try TLSContext.configure(context, certificate: certificate, key: key)
        } catch {
            SSL_CTX_free(context)
            throw error
        }
        self.context = context
    }

    private static func configure(_ context: OpaquePointer, certificate: String, key: String) throws(HTTPServerError) {
        guard castserve_ssl_ctx_set_min_tls12(context) == 1 else { throw .tlsSetupFailed(reason: openSSLErrorText()) }
        castserve_ssl_ctx_set_modes(context)
        castserve_ssl_ctx_set_options(context)
        _ = castserve_ssl_ctx_disable_session_cache(context)
        // Key first: a certificate loaded next that does not match it makes OpenSSL drop the key,
        // which the check below reports as a mismatch (rather than as an unusable key file).
        guard SSL_CTX_use_PrivateKey_file(context, key, SSL_FILETYPE_PEM) == 1 else {
            throw .tlsPrivateKeyInvalid(path: key, reason: openSSLErrorText())
        }
        guard SSL_CTX_use_certificate_chain_file(context, certificate) == 1 else {
            throw .tlsCertificateInvalid(path: certificate, reason: openSSLErrorText())
        }
        guard SSL_CTX_check_private_key(context) == 1 else {
            ERR_clear_error()
            throw .tlsKeyMismatch(certificatePath: certificate, privateKeyPath: key)
        }
        ERR_clear_error()
    }

    deinit { SSL_CTX_free(context) }

    /// A server session on the connected socket `fd` (not yet shaken hands); nil when OpenSSL is out of memory.
    func makeSession(fd: Int32) -> TLSSession? {
        guard let ssl = SSL_new(context) else { return nil }
        guard SSL_set_fd(ssl, fd) == 1 else {
            SSL_free(ssl)
            return nil
        }
        SSL_set_accept_state(ssl)
        return TLSSession(ssl: ssl)
    }

    private static func checkReadable(_ path: String, role: String) throws(HTTPServerError) {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw .tlsFileUnreadable(role: role, path: path, reason: Socket.errorText(errno)) }
        close(fd)
    }

    /// The oldest queued OpenSSL error as text (the queue is then cleared), e.g.
    /// "error:0A080009:SSL routines::PEM lib".
    static func openSSLErrorText() -> String {
        let code = ERR_get_error()
        ERR_clear_error()
        guard code != 0 else { return "no detail from OpenSSL" }
        var buffer = [CChar](repeating: 0, count: 256)
        ERR_error_string_n(code, &buffer, buffer.count)
        return String(cString: buffer)
    }
}

/// One connection's TLS state over a non-blocking socket. Used by one thread at a time.
final class TLSSession: @unchecked Sendable {
    private let ssl: OpaquePointer

    init(ssl: OpaquePointer) { self.ssl = ssl }

    deinit { SSL_free(ssl) }

    /// Advances the handshake without blocking.
    func handshake() -> IOStep {
        ERR_clear_error()
        let rc = SSL_do_handshake(ssl)
        return rc == 1 ? .done(0) : step(for: rc)
    }

    /// Decrypted bytes into `buffer` (at most its size).
    func read(into buffer: UnsafeMutableRawBufferPointer) -> IOStep {
        ERR_clear_error()
        let rc = SSL_read(ssl, buffer.baseAddress, Int32(clamping: buffer.count))
        return rc > 0 ? .done(Int(rc)) : step(for: rc)
    }

    /// Encrypts and sends up to all of `bytes` (partial writes allowed); retry the rest.
    func write(_ bytes: UnsafeRawBufferPointer) -> IOStep {
        guard !bytes.isEmpty else { return .done(0) }
        ERR_clear_error()
        let rc = SSL_write(ssl, bytes.baseAddress, Int32(clamping: bytes.count))
        return rc > 0 ? .done(Int(rc)) : step(for: rc)
    }

    /// Whether OpenSSL holds input not yet returned by `read` (decrypted bytes or whole records):
    /// the socket may then look idle while a request is already here.
    var hasBufferedInput: Bool { SSL_has_pending(ssl) == 1 }

    /// Sends close_notify once, without waiting for the peer's (best effort, never blocks).
    func close() {
        ERR_clear_error()
        _ = SSL_shutdown(ssl)
        ERR_clear_error()
    }

    private func step(for rc: Int32) -> IOStep {
        let error = SSL_get_error(ssl, rc)
        switch error {
        case SSL_ERROR_WANT_READ: return .wantRead
        case SSL_ERROR_WANT_WRITE: return .wantWrite
        case SSL_ERROR_ZERO_RETURN: return .closed
        case SSL_ERROR_SYSCALL:
            let code = errno
            ERR_clear_error()
            return code == 0 ? .closed : .failed(Socket.errorText(code))
        default:
            return .failed(TLSContext.openSSLErrorText())
        }
    }
}
