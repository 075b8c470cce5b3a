// MARK: - Streaming decoder

extension Tokenizer {
    /// Turns a stream of token IDs into text, one token at a time, emitting only complete UTF-8.
    ///
    /// A token may end in the middle of a multi-byte character (byte-level BPE splits emoji and CJK
    /// across tokens); those trailing bytes are held back until the character completes. Bytes that
    /// can never form a valid character are emitted as U+FFFD at once.
    ///
    /// Thread-safety: a value type; use one decoder per sequence.
    public struct StreamingDecoder: Sendable {
        /// The tokenizer whose pieces are decoded.
        public let tokenizer: Tokenizer
        /// Whether control tokens produce no text.
        public let skipSpecial: Bool
        private var pending: [UInt8] = []

        /// Creates a decoder; `skipSpecial` drops the text of control tokens.
        public init(tokenizer: Tokenizer, skipSpecial: Bool = false) {
            self.tokenizer = tokenizer
            self.skipSpecial = skipSpecial
            pending.reserveCapacity(16)
        }

        /// Whether bytes of an unfinished character are held back.
        public var hasPendingBytes: Bool { !pending.isEmpty }

        /// Adds one token; returns the text that became complete (possibly empty).
        public mutating func append(_ id: Int32) -> String {
            tokenizer.withPieceBytes(id, skipSpecial: skipSpecial) { pending.append(contentsOf: $0) }
            let complete = Self.completePrefixLength(pending)
            guard complete > 0 else { return "" }
            let text = String(decoding: pending[0..<complete], as: UTF8.self)
            pending.removeFirst(complete)
            return text
        }

        /// Ends the stream: returns held-back bytes (as U+FFFD if incomplete) and clears them.
        public mutating func finish() -> String {
            defer { pending.removeAll(keepingCapacity: true) }
            return pending.isEmpty ? "" : String(decoding: pending, as: UTF8.self)
        }

        /// Length of the prefix of `bytes` that does not end inside a possibly-valid UTF-8 sequence.
        static func completePrefixLength(_ bytes: [UInt8]) -> Int {
            // Look back at most 3 bytes for the lead byte of an unfinished sequence.
            var i = bytes.count - 1
            let lowest = max(0, bytes.count - 4)
            while i >= lowest {
                let b = bytes[i]
                if b & 0xC0 != 0x80 {  // a lead byte or ASCII
                    let needed: Int
                    switch b {
                    case 0xC2...0xDF: needed = 2
                    case 0xE0...0xEF: needed = 3
                    case 0xF0...0xF4: needed = 4
                    default: needed = 1  // ASCII or a byte that can never start a sequence
                    }
                    return bytes.count - i < needed ? i : bytes.count
                }
                i -= 1
            }
            return bytes.count  // only continuation bytes: invalid, emit them now
        }
    }
}
