#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The result of one non-blocking socket or TLS operation.
enum IOStep {
    /// Done: a handshake completed (0), or this many bytes moved (read or written, at least 1).
    case done(Int)
    /// Call again once the socket is readable.
    case wantRead
    /// Call again once the socket is writable.
    case wantWrite
    /// The peer closed (end of file, or TLS close_notify).
    case closed
    /// A protocol or socket error; the connection is unusable. Carries the reason.
    case failed(String)
}

/// Thin wrappers over the POSIX socket calls the server uses. All functions are thread-safe;
/// file descriptors are owned by their caller.
enum Socket {
    /// Linux poll(2) flag: the peer closed its writing side (not exported by every Glibc module map).
    static let pollReadHangup: Int16 = 0x2000

    /// Milliseconds on the monotonic clock (deadlines; immune to wall-clock changes).
    static func monotonicMilliseconds() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Int64(ts.tv_sec) * 1000 + Int64(ts.tv_nsec) / 1_000_000
    }

    /// A duration in whole milliseconds, at least 1 for positive durations.
    static func milliseconds(_ duration: Duration) -> Int64 {
        let (seconds, attoseconds) = duration.components
        let ms = seconds * 1000 + attoseconds / 1_000_000_000_000_000
        return duration > .zero ? max(ms, 1) : ms
    }

    /// The errno text, e.g. "Address already in use (errno 98)".
    static func errorText(_ code: Int32) -> String {
        String(cString: strerror(code)) + " (errno \(code))"
    }

    static func setIntOption(_ fd: Int32, _ level: Int32, _ name: Int32, _ value: Int32) {
        var v = value
        _ = setsockopt(fd, level, name, &v, socklen_t(MemoryLayout<Int32>.size))
    }

    /// Sets SO_SNDTIMEO or SO_RCVTIMEO so a blocking call gives up after `milliseconds`.
    static func setTimeout(_ fd: Int32, option: Int32, milliseconds: Int64) {
        var tv = timeval(tv_sec: Int(milliseconds / 1000), tv_usec: Int((milliseconds % 1000) * 1000))
        _ = setsockopt(fd, SOL_SOCKET, option, &tv, socklen_t(MemoryLayout<timeval>.size))
    }

    static func setCloseOnExec(_ fd: Int32) {
        _ = fcntl(fd, F_SETFD, fcntl(fd, F_GETFD) | FD_CLOEXEC)
    }

    static func setNonBlocking(_ fd: Int32) {
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
    }

    static func setBlocking(_ fd: Int32) {
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK)
    }

    /// One non-blocking recv(2) into `buffer`.
    static func receive(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer) -> IOStep {
        while true {
            let n = recv(fd, buffer.baseAddress, buffer.count, Int32(MSG_DONTWAIT))
            if n > 0 { return .done(n) }
            if n == 0 { return .closed }
            if errno == EINTR { continue }
            if errno == EAGAIN || errno == EWOULDBLOCK { return .wantRead }
            return .failed(errorText(errno))
        }
    }

    /// One non-blocking send(2) of up to all of `bytes`; never raises SIGPIPE.
    static func sendSome(_ fd: Int32, _ bytes: UnsafeRawBufferPointer) -> IOStep {
        guard !bytes.isEmpty else { return .done(0) }
        while true {
            let n = send(fd, bytes.baseAddress, bytes.count, Int32(MSG_NOSIGNAL | MSG_DONTWAIT))
            if n > 0 { return .done(n) }
            if n < 0 && errno == EINTR { continue }
            if n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) { return .wantWrite }
            return .failed(errorText(errno))
        }
    }

    /// Writes every byte (blocking, retrying partial writes and EINTR); false when the peer is gone
    /// or the send timeout expired. Never raises SIGPIPE.
    static func sendAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer) -> Bool {
        guard var p = bytes.baseAddress else { return true }
        var left = bytes.count
        while left > 0 {
            let n = send(fd, p, left, Int32(MSG_NOSIGNAL))
            if n > 0 {
                p += n
                left -= n
            } else if n < 0 && errno == EINTR {
                continue
            } else {
                return false
            }
        }
        return true
    }

    static func sendAll(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
        bytes.withUnsafeBytes { sendAll(fd, $0) }
    }

    /// A non-blocking, close-on-exec pipe used to wake a thread blocked in poll(2).
    static func makeWakePipe() -> (read: Int32, write: Int32)? {
        var fds: [Int32] = [-1, -1]
        guard pipe(&fds) == 0 else { return nil }
        for fd in fds {
            setNonBlocking(fd)
            setCloseOnExec(fd)
        }
        return (fds[0], fds[1])
    }

    static func wake(_ writeFD: Int32) {
        var byte: UInt8 = 1
        _ = write(writeFD, &byte, 1)
    }

    static func drainWake(_ readFD: Int32) {
        var scratch = [UInt8](repeating: 0, count: 64)
        while read(readFD, &scratch, scratch.count) > 0 {}
    }

    /// Closes after an error response without destroying it: half-close, then read and discard
    /// what the client still sends (at most `maxBytes`, for at most `milliseconds`) so the kernel
    /// does not answer unread input with a reset before the client has read the response.
    static func lingeringClose(_ fd: Int32, milliseconds: Int64 = 1000, maxBytes: Int = 1 << 20) {
        _ = shutdown(fd, Int32(SHUT_WR))
        let deadline = monotonicMilliseconds() + milliseconds
        var scratch = [UInt8](repeating: 0, count: 16 * 1024)
        var total = 0
        while total < maxBytes {
            let remaining = deadline - monotonicMilliseconds()
            if remaining <= 0 { break }
            var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let rc = poll(&pfd, 1, Int32(remaining))
            if rc < 0 && errno == EINTR { continue }
            if rc <= 0 { break }
            let n = recv(fd, &scratch, scratch.count, Int32(MSG_DONTWAIT))
            if n < 0 && (errno == EINTR || errno == EAGAIN) { continue }
            if n <= 0 { break }
            total += n
        }
        close(fd)
    }
}
