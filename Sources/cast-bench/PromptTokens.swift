import Model
import ChatTemplate

extension PromptFormatter {
    /// Prompt tokens of a bench row: chat rows through the chat template, plain rows as text,
    /// token rows as they are.
    func tokens(for prompt: BenchPrompt) throws -> [Int32] {
        if let tokens = prompt.tokens { return tokens }
        if let messages = prompt.messages {
            return try chatTokens(messages.map { ChatMessage(role: $0.role, content: $0.content) })
        }
        return completionTokens(prompt.prompt ?? "")
    }
}
