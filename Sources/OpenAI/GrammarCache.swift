import ChatTemplate
import Foundation
import Grammar

/// The served model's vocabulary as a token trie (built on first use) and the grammars requests
/// used lately, bound to it: a repeated schema or tool list reuses its automaton and its cached
/// token masks, so only its first request pays for them.
///
/// Thread-safe (locked). The grammars it hands out are then used on the engine thread only.
final class GrammarCache: @unchecked Sendable {
    private let lock = NSLock()
    private var vocabulary: TokenVocabulary?
    private var grammars: [String: TokenGrammar] = [:]
    private var order: [String] = []
    static let capacity = 16

    /// The compiled grammar for GBNF `text` (already validated by the request parser).
    func grammar(_ text: String, formatter: PromptFormatter) throws -> TokenGrammar {
        lock.lock()
        defer { lock.unlock() }
        if let g = grammars[text] {
            order.removeAll { $0 == text }
            order.append(text)
            return g
        }
        let vocabulary = self.vocabulary ?? Self.vocabulary(formatter)
        self.vocabulary = vocabulary
        let g = TokenGrammar(grammar: try Grammar(gbnf: text), vocabulary: vocabulary)
        grammars[text] = g
        order.append(text)
        if order.count > Self.capacity { grammars[order.removeFirst()] = nil }
        return g
    }

    static func vocabulary(_ formatter: PromptFormatter) -> TokenVocabulary {
        let tokenizer = formatter.tokenizer
        return TokenVocabulary(count: tokenizer.vocabularySize, stopTokens: formatter.stopTokens) { id in
            tokenizer.isSpecial(id) ? nil : tokenizer.withPieceBytes(id) { Array($0) }
        }
    }
}
