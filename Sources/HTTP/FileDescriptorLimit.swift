#if canImport(Glibc)
import Glibc
#endif

// MARK: - Descriptor limit

/// The process's open-file limit (RLIMIT_NOFILE), which caps how many connections can be open:
/// each open connection holds one descriptor, and one serving a request holds two more (its wake
/// pipe). Value type; thread-safe.
public struct FileDescriptorLimit: Sendable, Equatable {
    /// The soft limit before `raiseToHardLimit` (descriptors).
    public var previousSoft: Int
    /// The soft limit now in force (descriptors).
    public var soft: Int
    /// The hard limit, the most the soft limit can be raised to without privileges (descriptors).
    public var hard: Int
    /// Why the soft limit could not be raised (errno text), nil when it was raised or already at the hard limit.
    public var failure: String?

    /// Raises the soft limit to the hard limit (capped at what the kernel accepts, fs.nr_open).
    /// Never throws: a refusal is reported in `failure` and the old limit stays in force.
    public static func raiseToHardLimit() -> FileDescriptorLimit {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else {
            return FileDescriptorLimit(previousSoft: 0, soft: 0, hard: 0, failure: "getrlimit: " + Socket.errorText(errno))
        }
        let previous = Int(clamping: limit.rlim_cur), hard = Int(clamping: limit.rlim_max)
        var result = FileDescriptorLimit(previousSoft: previous, soft: previous, hard: hard, failure: nil)
        guard limit.rlim_cur < limit.rlim_max else { return result }
        var raised = limit
        raised.rlim_cur = limit.rlim_max
        if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &raised) == 0 {
            result.soft = hard
            return result
        }
        // An unlimited hard limit can be refused above fs.nr_open (1048576 by default): try that.
        let firstError = Socket.errorText(errno)
        raised.rlim_cur = min(limit.rlim_max, 1 << 20)
        if raised.rlim_cur > limit.rlim_cur, setrlimit(Int32(RLIMIT_NOFILE.rawValue), &raised) == 0 {
            result.soft = Int(clamping: raised.rlim_cur)
            return result
        }
        result.failure = "setrlimit: " + firstError
        return result
    }

    /// Descriptors needed for `connections` open connections with all of them serving requests,
    /// plus `reserve` for the rest of the process (model file, logs, pipes).
    public static func needed(connections: Int, reserve: Int = 64) -> Int {
        connections * 3 + reserve
    }
}
