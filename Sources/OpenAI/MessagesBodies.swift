import Foundation
import Grammar
import HTTP

// The response bodies and stream events of the Anthropic Messages API as Codable types, in
// Anthropic's shapes (`stop_reason` and `stop_sequence` are explicit nulls while unknown).

/// A content block of a reply: a thinking model's reasoning (ReasoningOutput; the signature is
/// empty: nothing is signed here), text, or a tool call with its input object.
enum MessageContentBlock: Encodable {
    case thinking(String)
    case text(String)
    case toolUse(id: String, name: String, input: JSONValue)

    enum CodingKeys: String, CodingKey { case type, thinking, signature, text, id, name, input }

    func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        switch self {
        case .thinking(let thinking):
            try c.encode("thinking", forKey: .type)
            try c.encode(thinking, forKey: .thinking)
            try c.encode("", forKey: .signature)
        case .text(let text):
            try c.encode("text", forKey: .type)
            try c.encode(text, forKey: .text)
        case .toolUse(let id, let name, let input):
            try c.encode("tool_use", forKey: .type)
            try c.encode(id, forKey: .id)
            try c.encode(name, forKey: .name)
            try c.encode(JSONFragment(input), forKey: .input)
        }
    }
}

/// `usage`: `input_tokens` are the prompt tokens computed for this request, the ones read from
/// the prefix cache are `cache_read_input_tokens` (Anthropic counts them apart; their sum is the
/// prompt). Nothing is written to a cache on request, so `cache_creation_input_tokens` is 0.
struct MessagesUsage: Encodable {
    var inputTokens: Int
    var outputTokens: Int
    var cacheReadInputTokens: Int
    var cacheCreationInputTokens = 0

    enum CodingKeys: String, CodingKey {
        case inputTokens = "input_tokens", outputTokens = "output_tokens", cacheReadInputTokens = "cache_read_input_tokens"
        case cacheCreationInputTokens = "cache_creation_input_tokens"
    }
}

/// A whole reply (`type: message`), and the `message` of a stream's `message_start`.
struct MessageBody: Encodable {
    var id: String
    var type = "message"
    var role = "assistant"
    var model: String
    var content: [MessageContentBlock]
    @Nullable var stopReason: String?
    @Nullable var stopSequence: String?
    var usage: MessagesUsage

    enum CodingKeys: String, CodingKey {
        case id, type, role, model, content, stopReason = "stop_reason", stopSequence = "stop_sequence", usage
    }
}

/// POST /v1/messages/count_tokens.
struct TokenCountBody: Encodable {
    var inputTokens: Int

    enum CodingKeys: String, CodingKey { case inputTokens = "input_tokens" }
}

/// One event of a streamed reply; its `type` is also the SSE `event:` name.
enum MessageStreamEvent: Encodable {
    case messageStart(MessageBody)
    case ping
    case contentBlockStart(index: Int, block: MessageContentBlock)
    case textDelta(index: Int, text: String)
    case thinkingDelta(index: Int, thinking: String)
    case inputJSONDelta(index: Int, partialJSON: String)
    case contentBlockStop(index: Int)
    case messageDelta(stopReason: String, stopSequence: String?, outputTokens: Int)
    case messageStop
    case error(type: String, message: String)

    var name: String {
        switch self {
        case .messageStart: return "message_start"
        case .ping: return "ping"
        case .contentBlockStart: return "content_block_start"
        case .textDelta, .thinkingDelta, .inputJSONDelta: return "content_block_delta"
        case .contentBlockStop: return "content_block_stop"
        case .messageDelta: return "message_delta"
        case .messageStop: return "message_stop"
        case .error: return "error"
        }
    }

    private struct Delta: Encodable {
        var type: String
        var text: String?
        var thinking: String?
        var partialJSON: String?

        enum CodingKeys: String, CodingKey { case type, text, thinking, partialJSON = "partial_json" }
    }

    private struct StopDelta: Encodable {
        var stopReason: String
        @Nullable var stopSequence: String?

        enum CodingKeys: String, CodingKey { case stopReason = "stop_reason", stopSequence = "stop_sequence" }
    }

    private struct OutputUsage: Encodable {
        var outputTokens: Int

        enum CodingKeys: String, CodingKey { case outputTokens = "output_tokens" }
    }

    enum CodingKeys: String, CodingKey {
        case type, message, index, contentBlock = "content_block", delta, usage, error
    }

    func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(name, forKey: .type)
        switch self {
        case .messageStart(let message): try c.encode(message, forKey: .message)
        case .ping, .messageStop: break
        case .contentBlockStart(let index, let block):
            try c.encode(index, forKey: .index)
            try c.encode(block, forKey: .contentBlock)
        case .textDelta(let index, let text):
            try c.encode(index, forKey: .index)
            try c.encode(Delta(type: "text_delta", text: text), forKey: .delta)
        case .thinkingDelta(let index, let thinking):
            try c.encode(index, forKey: .index)
            try c.encode(Delta(type: "thinking_delta", thinking: thinking), forKey: .delta)
        case .inputJSONDelta(let index, let partialJSON):
            try c.encode(index, forKey: .index)
            try c.encode(Delta(type: "input_json_delta", partialJSON: partialJSON), forKey: .delta)
        case .contentBlockStop(let index):
            try c.encode(index, forKey: .index)
        case .messageDelta(let stopReason, let stopSequence, let outputTokens):
            try c.encode(StopDelta(stopReason: stopReason, stopSequence: stopSequence), forKey: .delta)
            try c.encode(OutputUsage(outputTokens: outputTokens), forKey: .usage)
        case .error(let type, let message):
            try c.encode(AnthropicError.Inner(type: type, message: message), forKey: .error)
        }
    }
}

/// An error in Anthropic's shape, `{"type": "error", "error": {"type", "message"}}`, for the
/// /v1/messages routes: the same `OpenAIError` (status, message, headers), another envelope.
struct AnthropicError: Encodable {
    var type = "error"
    var error: Inner

    struct Inner: Encodable {
        var type: String
        var message: String
    }

    /// Anthropic's error type for an HTTP status.
    static func type(status: Int) -> String {
        switch status {
        case 401: return "authentication_error"
        case 403: return "permission_error"
        case 404: return "not_found_error"
        case 413: return "request_too_large"
        case 429: return "rate_limit_error"
        case 503: return "overloaded_error"
        case 400..<500: return "invalid_request_error"
        default: return "api_error"
        }
    }

    /// The response for `e` on an Anthropic route.
    static func response(_ e: OpenAIError) -> HTTPResponse {
        var h = HTTPHeaders()
        h.add(name: "Content-Type", value: "application/json")
        for (k, v) in e.headers { h.add(name: k, value: v) }
        let body = AnthropicError(error: Inner(type: type(status: e.status.code), message: e.message))
        return HTTPResponse(status: e.status, headers: h, body: encodeJSON(body))
    }
}
