import Engine
import Foundation
import HTTP

// The response and chunk bodies of the API as Codable types, in OpenAI's shapes. Fields OpenAI
// sends as an explicit `null` (`finish_reason` of a running chunk, `logprobs` when not asked,
// `content` of a tool-calling message) are `Nullable`; optional fields absent from OpenAI's
// responses when unused are plain optionals (left out).

/// A value encoded as JSON `null` when nil (a plain optional would be left out).
@propertyWrapper
struct Nullable<Value: Encodable>: Encodable {
    var wrappedValue: Value?
    init(wrappedValue: Value?) { self.wrappedValue = wrappedValue }
    func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        if let wrappedValue { try c.encode(wrappedValue) } else { try c.encodeNil() }
    }
}

/// A 200 response carrying JSON `body`.
func jsonResponse(_ body: Data) -> HTTPResponse {
    var h = HTTPHeaders()
    h.add(name: "Content-Type", value: "application/json")
    return HTTPResponse(status: .ok, headers: h, body: body)
}

/// JSON text of a response body (keys sorted, slashes unescaped), the one encoder of the API.
func encodeJSON<T: Encodable>(_ value: T) -> Data {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    return (try? encoder.encode(value)) ?? Data("{}".utf8)
}

// MARK: - Usage

struct Usage: Encodable {
    var promptTokens: Int
    var completionTokens: Int
    var totalTokens: Int
    /// Prompt tokens served from the prefix cache.
    var promptTokensDetails: PromptTokensDetails
    /// CastServe extension: what speculative decoding did (only with speculation on).
    var speculation: SpeculationBody?

    enum CodingKeys: String, CodingKey {
        case promptTokens = "prompt_tokens", completionTokens = "completion_tokens", totalTokens = "total_tokens"
        case promptTokensDetails = "prompt_tokens_details", speculation
    }
}

/// `usage.prompt_tokens_details`: of the prompt tokens, those whose keys and values were reused
/// from the prefix cache instead of computed (whole KV blocks of a prefix an earlier request
/// left, so a multiple of the block size per choice).
struct PromptTokensDetails: Encodable {
    var cachedTokens: Int

    enum CodingKeys: String, CodingKey { case cachedTokens = "cached_tokens" }
}

/// `usage.speculation`, an extension clients that do not know it ignore: what speculative
/// decoding did for the request.
struct SpeculationBody: Encodable {
    var draftedTokens: Int
    var acceptedTokens: Int
    var decodeSteps: Int
    var speculativeSteps: Int
    var acceptanceRate: Double
    /// Draft tokens a grammar forced (drafted without a drafter), and those accepted.
    var forcedDraftedTokens: Int
    var forcedAcceptedTokens: Int

    enum CodingKeys: String, CodingKey {
        case draftedTokens = "drafted_tokens", acceptedTokens = "accepted_tokens", decodeSteps = "decode_steps"
        case speculativeSteps = "speculative_steps", acceptanceRate = "acceptance_rate"
        case forcedDraftedTokens = "forced_drafted_tokens", forcedAcceptedTokens = "forced_accepted_tokens"
    }
}

extension SpeculationBody {
    /// The body for a run's counts `s`; nil when the server does not speculate.
    init?(_ s: SpeculationUsage, backend: Backend) {
        guard backend.engine.configuration.speculation else { return nil }
        self.init(draftedTokens: s.draftedTokens, acceptedTokens: s.acceptedTokens, decodeSteps: s.decodeSteps,
                  speculativeSteps: s.speculativeSteps,
                  acceptanceRate: s.draftedTokens > 0 ? Double(s.acceptedTokens) / Double(s.draftedTokens) : 0,
                  forcedDraftedTokens: s.forcedDraftedTokens, forcedAcceptedTokens: s.forcedAcceptedTokens)
    }
}

// MARK: - Log-probabilities

/// One entry of a chat `logprobs.content` list (and of its `top_logprobs`).
struct ChatTokenLogprob: Encodable {
    var token: String
    var logprob: Double
    var bytes: [Int]
    var topLogprobs: [ChatTopLogprob]

    enum CodingKeys: String, CodingKey { case token, logprob, bytes, topLogprobs = "top_logprobs" }
}

struct ChatTopLogprob: Encodable {
    var token: String
    var logprob: Double
    var bytes: [Int]
}

struct ChatLogprobs: Encodable {
    var content: [ChatTokenLogprob]
}

/// The legacy completions `logprobs` object: parallel lists over the text's tokens.
struct CompletionLogprobs: Encodable {
    var tokens: [String] = []
    /// null for the prompt's first token (nothing predicts it).
    var tokenLogprobs: [Double?] = []
    var topLogprobs: [[String: Double]?] = []
    var textOffset: [Int] = []

    enum CodingKeys: String, CodingKey {
        case tokens, tokenLogprobs = "token_logprobs", topLogprobs = "top_logprobs", textOffset = "text_offset"
    }

    mutating func append(token: String, logprob: Double?, top: [String: Double]?, offset: Int) {
        tokens.append(token)
        tokenLogprobs.append(logprob)
        topLogprobs.append(top)
        textOffset.append(offset)
    }
}

// MARK: - Chat

struct ToolCallBody: Encodable {
    var id: String
    var type = "function"
    var function: FunctionCallBody
}

struct FunctionCallBody: Encodable {
    var name: String
    /// The arguments as JSON text.
    var arguments: String
}

struct ChatMessageBody: Encodable {
    var role = "assistant"
    @Nullable var content: String?
    var toolCalls: [ToolCallBody]?
    /// A thinking model's reasoning (ReasoningOutput), under llama-server's and DeepSeek's
    /// `reasoning_content` and vLLM's newer `reasoning`; left out when there is none.
    var reasoningContent: String?
    var reasoning: String?

    enum CodingKeys: String, CodingKey { case role, content, toolCalls = "tool_calls", reasoningContent = "reasoning_content", reasoning }

    mutating func setReasoning(_ text: String) {
        reasoningContent = text.isEmpty ? nil : text
        reasoning = reasoningContent
    }
}

struct ChatChoice: Encodable {
    var index: Int
    var message: ChatMessageBody
    @Nullable var logprobs: ChatLogprobs?
    var finishReason: String

    enum CodingKeys: String, CodingKey { case index, message, logprobs, finishReason = "finish_reason" }
}

struct ChatCompletion: Encodable {
    var id: String
    var object = "chat.completion"
    var created: Int
    var model: String
    var choices: [ChatChoice]
    var usage: Usage
}

// MARK: - Streaming chunks

/// A tool call's piece in a streamed delta: the first carries id, type and name; later ones
/// only argument text, matched by `index`.
struct ToolCallDelta: Encodable {
    var index: Int
    var id: String?
    var type: String?
    var function: FunctionDelta
}

struct FunctionDelta: Encodable {
    var name: String?
    var arguments: String?
}

struct ChatDelta: Encodable {
    var role: String?
    var content: String?
    var toolCalls: [ToolCallDelta]?
    /// New reasoning text (both names, as on `ChatMessageBody`).
    var reasoningContent: String?
    var reasoning: String?

    enum CodingKeys: String, CodingKey { case role, content, toolCalls = "tool_calls", reasoningContent = "reasoning_content", reasoning }

    mutating func setReasoning(_ text: String) {
        reasoningContent = text.isEmpty ? nil : text
        reasoning = reasoningContent
    }
}

struct ChatChunkChoice: Encodable {
    var index: Int
    var delta: ChatDelta
    @Nullable var logprobs: ChatLogprobs?
    @Nullable var finishReason: String?

    enum CodingKeys: String, CodingKey { case index, delta, logprobs, finishReason = "finish_reason" }
}

struct ChatCompletionChunk: Encodable {
    var id: String
    var object = "chat.completion.chunk"
    var created: Int
    var model: String
    var choices: [ChatChunkChoice]
    var usage: Usage?
}

// MARK: - Completions

struct CompletionChoice: Encodable {
    var index: Int
    var text: String
    @Nullable var logprobs: CompletionLogprobs?
    @Nullable var finishReason: String?

    enum CodingKeys: String, CodingKey { case index, text, logprobs, finishReason = "finish_reason" }
}

/// A non-streamed completion, and (object the same) each streamed chunk.
struct Completion: Encodable {
    var id: String
    var object = "text_completion"
    var created: Int
    var model: String
    var choices: [CompletionChoice]
    var usage: Usage?
}

// MARK: - Embeddings

struct EmbeddingItem: Encodable {
    var object = "embedding"
    var index: Int
    var embedding: EmbeddingVector
}

/// Floats, or base64 of their little-endian float32 bytes (`encoding_format: base64`).
enum EmbeddingVector: Encodable {
    case floats([Float])
    case base64(String)

    func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case .floats(let v): try c.encode(v.map(Double.init))
        case .base64(let s): try c.encode(s)
        }
    }
}

struct EmbeddingUsage: Encodable {
    var promptTokens: Int
    var totalTokens: Int
    enum CodingKeys: String, CodingKey { case promptTokens = "prompt_tokens", totalTokens = "total_tokens" }
}

struct EmbeddingResponse: Encodable {
    var object = "list"
    var data: [EmbeddingItem]
    var model: String
    var usage: EmbeddingUsage
}
