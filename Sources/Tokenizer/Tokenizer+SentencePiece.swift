// MARK: - SentencePiece encoding

extension Tokenizer {
    /// Encodes one text fragment (no special tokens inside) the way llama.cpp's SentencePiece
    /// tokenizer does: spaces escaped to `▁` (one `▁` prepended when `spacePrefix`), one symbol
    /// per UTF-8 character, then repeatedly the adjacent pair whose concatenation is a token with
    /// the highest score is merged (leftmost first on equal scores); a final symbol that is no token
    /// becomes its bytes' `<0xXX>` tokens.
    func encodeSentencePiece(_ fragment: ArraySlice<UInt8>, spacePrefix: Bool, into output: inout [Int32]) {
        var text: [UInt8] = []
        text.reserveCapacity(fragment.count * 2 + 3)
        if spacePrefix { text += SentencePiece.space }
        for byte in fragment {
            if byte == 0x20 { text += SentencePiece.space } else { text.append(byte) }
        }
        guard !text.isEmpty else { return }

        // Symbols: (start, length, prev, next) over `text`, one per UTF-8 character.
        var start: [Int] = [], length: [Int] = [], prev: [Int] = [], next: [Int] = []
        var offset = 0
        while offset < text.count {
            let n = min(SentencePiece.utf8Length(text[offset]), text.count - offset)
            prev.append(start.count - 1)
            start.append(offset)
            length.append(n)
            offset += n
            next.append(offset == text.count ? -1 : start.count)
        }

        var queue = SentencePiece.BigramQueue()
        func tryAdd(_ left: Int, _ right: Int) {
            guard left >= 0 && right >= 0 else { return }
            let size = length[left] + length[right]
            guard let id = pieceIDs[Array(text[start[left]..<(start[left] + size)])],
                  Int(id) < scores.count else { return }
            queue.push(SentencePiece.Bigram(left: left, right: right, score: scores[Int(id)], size: size))
        }
        for i in 1..<start.count { tryAdd(i - 1, i) }
        while let bigram = queue.pop() {
            let l = bigram.left, r = bigram.right
            // Stale: one side was merged away or grew since the pair was queued.
            guard length[l] > 0 && length[r] > 0 && length[l] + length[r] == bigram.size else { continue }
            length[l] += length[r]
            length[r] = 0
            next[l] = next[r]
            if next[r] >= 0 { prev[next[r]] = l }
            tryAdd(prev[l], l)
            tryAdd(l, next[l])
        }

        var i = 0
        while i != -1 {
            let piece = text[start[i]..<(start[i] + length[i])]
            if let id = pieceIDs[Array(piece)] {
                output.append(id)
            } else {
                for byte in piece where byteFallbackIDs[Int(byte)] >= 0 { output.append(byteFallbackIDs[Int(byte)]) }
            }
            i = next[i]
        }
    }
}

/// SentencePiece helpers: the escaped space, piece texts, and the merge queue.
enum SentencePiece {
    /// UTF-8 of `▁` (U+2581), which stands for a space in piece texts.
    static let space: [UInt8] = [0xE2, 0x96, 0x81]

    /// Length of the UTF-8 sequence a lead byte starts (llama.cpp's table: continuation and invalid
    /// lead bytes count as 1).
    @inline(__always)
    static func utf8Length(_ lead: UInt8) -> Int {
        switch lead >> 4 {
        case 0xC, 0xD: return 2
        case 0xE: return 3
        case 0xF: return 4
        default: return 1
        }
    }

    /// Appends the bytes a piece decodes to: `<0xXX>` byte tokens their byte, normal pieces their
    /// text with `▁` turned back into spaces, unused and undefined ones nothing (as llama.cpp).
    static func pieceBytes(_ text: String, kind: Tokenizer.TokenKind, into bytes: inout [UInt8]) {
        switch kind {
        case .byte:
            let u = Array(text.utf8)
            if u.count == 6, u[0] == 0x3C, u[1] == 0x30, u[2] == 0x78, u[5] == 0x3E,
               let v = UInt8(String(decoding: u[3..<5], as: UTF8.self), radix: 16) {
                bytes.append(v)
            } else {
                bytes += u
            }
        case .normal:
            let u = Array(text.utf8)
            var i = 0
            while i < u.count {
                if i + 2 < u.count, u[i] == space[0], u[i + 1] == space[1], u[i + 2] == space[2] {
                    bytes.append(0x20)
                    i += 3
                } else {
                    bytes.append(u[i])
                    i += 1
                }
            }
        default:
            break
        }
    }

    /// A candidate merge of adjacent symbols `left` and `right` into a token of `score`; `size` is
    /// the merged byte length when queued.
    struct Bigram {
        var left: Int
        var right: Int
        var score: Float
        var size: Int

        /// Whether `self` is popped before `other`: higher score first, then the leftmost.
        @inline(__always)
        func precedes(_ other: Bigram) -> Bool {
            score > other.score || (score == other.score && left < other.left)
        }
    }

    /// A binary max-heap of bigrams ordered by `Bigram.precedes`.
    struct BigramQueue {
        private var heap: [Bigram] = []

        mutating func push(_ b: Bigram) {
            heap.append(b)
            var i = heap.count - 1
            while i > 0 {
                let parent = (i - 1) / 2
                guard heap[i].precedes(heap[parent]) else { break }
                heap.swapAt(i, parent)
                i = parent
            }
        }

        mutating func pop() -> Bigram? {
            guard let top = heap.first else { return nil }
            let last = heap.removeLast()
            if !heap.isEmpty {
                heap[0] = last
                var i = 0
                while true {
                    let l = 2 * i + 1, r = l + 1
                    var best = i
                    if l < heap.count && heap[l].precedes(heap[best]) { best = l }
                    if r < heap.count && heap[r].precedes(heap[best]) { best = r }
                    if best == i { break }
                    heap.swapAt(i, best)
                    i = best
                }
            }
            return top
        }
    }
}
