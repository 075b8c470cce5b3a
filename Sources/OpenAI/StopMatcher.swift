/// Finds stop strings in streamed text without ever emitting any part of one.
///
/// Text that could still be the start of a stop string is held back until the next piece shows
/// whether it is; `finish` releases it at the end.
public struct StopMatcher: Sendable {
    public let stops: [String]
    /// The stop string that ended the text, once one has.
    public private(set) var matched: String?
    private var pending = ""

    public init(stops: [String]) {
        self.stops = stops.filter { !$0.isEmpty }
    }

    /// Adds `piece`; returns the text safe to emit, and whether a stop string was found (the text
    /// before it is returned; the stop string and everything after it are dropped).
    public mutating func append(_ piece: String) -> (text: String, stopped: Bool) {
        guard !stops.isEmpty else { return (piece, false) }
        pending += piece
        var earliest: String.Index?
        for stop in stops {
            if let r = pending.range(of: stop), earliest.map({ r.lowerBound < $0 }) ?? true {
                earliest = r.lowerBound
                matched = stop
            }
        }
        if let at = earliest {
            let text = String(pending[..<at])
            pending = ""
            return (text, true)
        }
        // Hold back the longest suffix that is a proper prefix of some stop string.
        var hold = 0
        for stop in stops {
            var k = min(stop.count - 1, pending.count)
            while k > hold {
                if pending.hasSuffix(stop.prefix(k)) { hold = k; break }
                k -= 1
            }
        }
        let cut = pending.index(pending.endIndex, offsetBy: -hold)
        let text = String(pending[..<cut])
        pending = String(pending[cut...])
        return (text, false)
    }

    /// Releases held-back text at the end of the stream.
    public mutating func finish() -> String {
        defer { pending = "" }
        return pending
    }
}
