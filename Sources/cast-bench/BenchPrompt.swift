import Foundation

/// One row of shared/bench/prompts.jsonl.
struct BenchPrompt: Decodable {
    struct Message: Decodable {
        var role: String
        var content: String
    }

    var id: String
    var category: String
    var messages: [Message]?
    var prompt: String?
    /// Prompt token ids, used as they are (no template); for models without a usable tokenizer.
    var tokens: [Int32]?
    var maxTokens: Int

    enum CodingKeys: String, CodingKey {
        case id, category, messages, prompt, tokens
        case maxTokens = "max_tokens"
    }

    /// Reads a JSON-lines prompt file; errors name the file and line.
    static func load(path: String) throws -> [BenchPrompt] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw BenchError.promptsUnreadable(path: path)
        }
        var prompts: [BenchPrompt] = []
        for (i, line) in String(decoding: data, as: UTF8.self).split(separator: "\n").enumerated()
        where !line.trimmingCharacters(in: .whitespaces).isEmpty {
            do {
                let p = try JSONDecoder().decode(BenchPrompt.self, from: Data(line.utf8))
                guard [p.messages != nil, p.prompt != nil, p.tokens != nil].filter({ $0 }).count == 1 else {
                    throw BenchError.badPrompt(path: path, line: i + 1, reason: "needs exactly one of 'messages', 'prompt' or 'tokens'")
                }
                prompts.append(p)
            } catch let e as BenchError {
                throw e
            } catch {
                throw BenchError.badPrompt(path: path, line: i + 1, reason: "\(error)")
            }
        }
        guard !prompts.isEmpty else { throw BenchError.badPrompt(path: path, line: 0, reason: "the file has no prompts") }
        return prompts
    }
}

enum BenchError: Error, CustomStringConvertible {
    case promptsUnreadable(path: String)
    case badPrompt(path: String, line: Int, reason: String)

    var description: String {
        switch self {
        case .promptsUnreadable(let path):
            return "cannot read prompts file \(path); pass --prompts PATH (the workload is shared/bench/prompts.jsonl)"
        case .badPrompt(let path, let line, let reason):
            return "\(path):\(line): \(reason)"
        }
    }
}
