import Foundation

// The response object of the Responses API and its streamed events, as Codable types in OpenAI's
// shapes (fields OpenAI sends as an explicit `null` are `Nullable`).

/// A response (`object: "response"`): what `POST /v1/responses` returns, what `GET
/// /v1/responses/{id}` returns again, and what the lifecycle events carry.
struct ResponseObject: Encodable {
    var id: String
    var object = "response"
    var createdAt: Int
    /// in_progress, completed, incomplete or failed.
    var status: String
    @Nullable var incompleteDetails: IncompleteDetails?
    @Nullable var error: ResponseErrorBody?
    @Nullable var instructions: String?
    @Nullable var maxOutputTokens: Int?
    var model: String
    var output: [ResponseOutputItem]
    var parallelToolCalls: Bool
    @Nullable var previousResponseID: String?
    var store: Bool
    var temperature: Double
    var topP: Double
    var toolChoice: ToolChoiceBody
    var tools: [FunctionToolBody]
    var text: TextBody
    var truncation = "disabled"
    @Nullable var usage: ResponseUsage?
    var metadata: [String: String]

    enum CodingKeys: String, CodingKey {
        case id, object, createdAt = "created_at", status, incompleteDetails = "incomplete_details", error, instructions
        case maxOutputTokens = "max_output_tokens", model, output, parallelToolCalls = "parallel_tool_calls"
        case previousResponseID = "previous_response_id", store, temperature, topP = "top_p", toolChoice = "tool_choice"
        case tools, text, truncation, usage, metadata
    }
}

/// Why a response is incomplete: `max_output_tokens` (the limit or the context ran out).
struct IncompleteDetails: Encodable {
    var reason: String
}

struct ResponseErrorBody: Encodable {
    var code: String
    var message: String
}

/// `usage` of a response: cached input tokens are those reused from the prefix cache.
struct ResponseUsage: Encodable {
    var inputTokens: Int
    var inputTokensDetails: CachedTokens
    var outputTokens: Int
    var outputTokensDetails: ReasoningTokens
    var totalTokens: Int
    /// CastServe extension, as on chat completions: what speculative decoding did.
    var speculation: SpeculationBody?

    struct CachedTokens: Encodable {
        var cachedTokens: Int
        enum CodingKeys: String, CodingKey { case cachedTokens = "cached_tokens" }
    }

    struct ReasoningTokens: Encodable {
        var reasoningTokens = 0
        enum CodingKeys: String, CodingKey { case reasoningTokens = "reasoning_tokens" }
    }

    enum CodingKeys: String, CodingKey {
        case inputTokens = "input_tokens", inputTokensDetails = "input_tokens_details", outputTokens = "output_tokens"
        case outputTokensDetails = "output_tokens_details", totalTokens = "total_tokens", speculation
    }
}

/// One item of `output`: a thinking model's reasoning, the assistant's message (one
/// `output_text` part), or a function call.
///
/// The reasoning item follows OpenAI's `ResponseReasoningItem` (openai-python
/// `types/responses/response_reasoning_item.py`, the API reference's "Reasoning" output item):
/// `{"type": "reasoning", "id": "rs_...", "summary": [], "content": [{"type": "reasoning_text",
/// "text"}], "status"}`; the raw reasoning text is the content, and there is no summary.
enum ResponseOutputItem: Encodable {
    case reasoning(id: String, status: String, text: String)
    case message(id: String, status: String, text: String)
    case functionCall(id: String, callID: String, name: String, arguments: String, status: String)

    var id: String {
        switch self {
        case .reasoning(let id, _, _), .message(let id, _, _), .functionCall(let id, _, _, _, _): return id
        }
    }

    enum Keys: String, CodingKey { case type, id, status, role, summary, content, callID = "call_id", name, arguments }

    func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: Keys.self)
        switch self {
        case .reasoning(let id, let status, let text):
            try c.encode("reasoning", forKey: .type)
            try c.encode(id, forKey: .id)
            try c.encode([String](), forKey: .summary)
            // As a message: no part while just opened, the one reasoning_text part once closed.
            try c.encode(status == "in_progress" && text.isEmpty ? [] : [ReasoningTextPart(text: text)], forKey: .content)
            try c.encode(status, forKey: .status)
        case .message(let id, let status, let text):
            try c.encode("message", forKey: .type)
            try c.encode(id, forKey: .id)
            try c.encode(status, forKey: .status)
            try c.encode("assistant", forKey: .role)
            // An item just opened has no part yet; a closed one has its one text part.
            try c.encode(status == "in_progress" && text.isEmpty ? [] : [OutputTextPart(text: text)], forKey: .content)
        case .functionCall(let id, let callID, let name, let arguments, let status):
            try c.encode("function_call", forKey: .type)
            try c.encode(id, forKey: .id)
            try c.encode(callID, forKey: .callID)
            try c.encode(name, forKey: .name)
            try c.encode(arguments, forKey: .arguments)
            try c.encode(status, forKey: .status)
        }
    }
}

/// An `output_text` content part.
struct OutputTextPart: Encodable {
    var type = "output_text"
    var text: String
    var annotations: [String] = []
}

/// A `reasoning_text` content part of a reasoning item.
struct ReasoningTextPart: Encodable {
    var type = "reasoning_text"
    var text: String
}

/// `tool_choice` as sent back: a mode string or `{"type": "function", "name"}`.
struct ToolChoiceBody: Encodable {
    var choice: ToolChoice

    func encode(to encoder: Encoder) throws {
        struct Named: Encodable {
            var type = "function"
            var name: String
        }
        var c = encoder.singleValueContainer()
        switch choice {
        case .none: try c.encode("none")
        case .auto: try c.encode("auto")
        case .required: try c.encode("required")
        case .function(let name): try c.encode(Named(name: name))
        }
    }
}

struct FunctionToolBody: Encodable {
    var type = "function"
    var name: String
    @Nullable var description: String?
    var parameters: JSONFragment
    var strict: Bool
}

/// `text` as sent back: `{"format": {"type": "text" | "json_object" | "json_schema", ...}}`.
struct TextBody: Encodable {
    var format: Format

    struct Format: Encodable {
        var type: String
        var name: String?
        var schema: JSONFragment?
        var strict: Bool?
    }
}

// MARK: - Streaming events

/// One server-sent event of a streamed response: its `event:` name and its JSON `data`.
struct ResponseEvent: Equatable {
    var name: String
    var data: String
}

/// Numbers and encodes the events of one streamed response: every event's data carries its
/// `type` (the event name) and `sequence_number`, counting from 0 in send order.
struct ResponseEventEncoder {
    private(set) var sequenceNumber = 0

    /// The event `type` with `payload`'s fields, numbered next.
    mutating func event<Payload: Encodable>(_ type: String, _ payload: Payload) -> ResponseEvent {
        let data = encodeJSON(Envelope(type: type, sequenceNumber: sequenceNumber, payload: payload))
        sequenceNumber += 1
        return ResponseEvent(name: type, data: String(decoding: data, as: UTF8.self))
    }

    private struct Envelope<P: Encodable>: Encodable {
        var type: String
        var sequenceNumber: Int
        var payload: P

        enum Keys: String, CodingKey { case type, sequenceNumber = "sequence_number" }

        func encode(to encoder: Encoder) throws {
            try payload.encode(to: encoder)
            var c = encoder.container(keyedBy: Keys.self)
            try c.encode(type, forKey: .type)
            try c.encode(sequenceNumber, forKey: .sequenceNumber)
        }
    }

    // The payloads, one per kind of event.

    /// response.created, response.in_progress, response.completed, response.incomplete, response.failed.
    struct Lifecycle: Encodable { var response: ResponseObject }

    /// response.output_item.added and response.output_item.done.
    struct Item: Encodable {
        var outputIndex: Int
        var item: ResponseOutputItem
        enum CodingKeys: String, CodingKey { case outputIndex = "output_index", item }
    }

    /// response.content_part.added and response.content_part.done.
    struct Part: Encodable {
        var itemID: String
        var outputIndex: Int
        var contentIndex = 0
        var part: OutputTextPart
        enum CodingKeys: String, CodingKey { case itemID = "item_id", outputIndex = "output_index", contentIndex = "content_index", part }
    }

    /// response.output_text.delta (`delta`) and response.output_text.done (`text`).
    struct Text: Encodable {
        var itemID: String
        var outputIndex: Int
        var contentIndex = 0
        var delta: String?
        var text: String?
        var logprobs: [String] = []
        enum CodingKeys: String, CodingKey {
            case itemID = "item_id", outputIndex = "output_index", contentIndex = "content_index", delta, text, logprobs
        }
    }

    /// response.reasoning_text.delta (`delta`) and response.reasoning_text.done (`text`): the
    /// fields of OpenAI's `ResponseReasoningTextDeltaEvent` / `ResponseReasoningTextDoneEvent`
    /// (item_id, output_index, content_index, delta or text, sequence_number, type).
    struct ReasoningText: Encodable {
        var itemID: String
        var outputIndex: Int
        var contentIndex = 0
        var delta: String?
        var text: String?
        enum CodingKeys: String, CodingKey { case itemID = "item_id", outputIndex = "output_index", contentIndex = "content_index", delta, text }
    }

    /// response.function_call_arguments.delta (`delta`) and .done (`name`, `arguments`).
    struct Arguments: Encodable {
        var itemID: String
        var outputIndex: Int
        var delta: String?
        var name: String?
        var arguments: String?
        enum CodingKeys: String, CodingKey { case itemID = "item_id", outputIndex = "output_index", delta, name, arguments }
    }
}
