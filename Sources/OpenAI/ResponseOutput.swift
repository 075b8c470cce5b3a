import Foundation

/// A response's output items built from the reply as it grows, and the stream events that
/// announce them, in the order the Responses API documents:
///
///     output_item.added, reasoning_text.delta..., reasoning_text.done,
///     output_item.done                                         (a thinking model's reasoning)
///     output_item.added, content_part.added, output_text.delta..., output_text.done,
///     content_part.done, output_item.done                      (a message)
///     output_item.added, function_call_arguments.delta..., function_call_arguments.done,
///     output_item.done                                         (each function call)
///
/// A reply read as tool calls (`ToolCallFormat`) becomes one `function_call` item per call; any
/// other reply one message. A thinking model's reasoning (`ChoiceUpdate.reasoning`) is one
/// `reasoning` item before them, closed when the answer starts, as OpenAI's reasoning models
/// send it. Its input is what the request core hands an adapter per step (new reasoning, new
/// text, or tool-call deltas). The same builder serves streamed and whole responses, so both carry
/// the same items.
struct ResponseOutput {
    /// The output items so far (in progress until `finish`).
    private(set) var items: [ResponseOutputItem] = []
    /// The events' numbering (shared with the lifecycle events of the same stream).
    var encoder: ResponseEventEncoder
    private var messageIndex: Int?
    private var text = ""
    private var reasoningIndex: Int?
    private var reasoning = ""
    private var reasoningOpen = false
    /// Output index of each call, by its index in the reply.
    private var callItems: [Int: Int] = [:]

    init(encoder: ResponseEventEncoder = ResponseEventEncoder()) {
        self.encoder = encoder
    }

    /// A new item id with `prefix` (`rs`, `msg`, `fc`), as OpenAI's look.
    static func newID(_ prefix: String) -> String {
        let alphabet = Array("0123456789abcdef")
        return prefix + "_" + String((0..<32).map { _ in alphabet.randomElement()! })
    }

    /// Takes one step of the reply: its new `reasoning` text, its new `text`, or, once it reads
    /// as tool calls, the new tool-call pieces (`ToolCallStream`'s deltas: a call's first piece
    /// carries its id and name, the next ones argument text). Returns the events it makes.
    mutating func append(reasoning thought: String = "", text piece: String, toolCalls: [ToolCallDelta]?) -> [ResponseEvent] {
        var out: [ResponseEvent] = []
        if !thought.isEmpty {
            let r: Int
            if let opened = reasoningIndex {
                r = opened
            } else {
                let item = ResponseOutputItem.reasoning(id: Self.newID("rs"), status: "in_progress", text: "")
                r = items.count
                reasoningIndex = r
                reasoningOpen = true
                items.append(item)
                out.append(encoder.event("response.output_item.added", ResponseEventEncoder.Item(outputIndex: r, item: item)))
            }
            reasoning += thought
            out.append(encoder.event("response.reasoning_text.delta",
                                     ResponseEventEncoder.ReasoningText(itemID: items[r].id, outputIndex: r, delta: thought)))
        }
        if !piece.isEmpty || !(toolCalls ?? []).isEmpty { out += closeReasoning(status: "completed") }
        for delta in toolCalls ?? [] {
            if let callID = delta.id {
                let item = ResponseOutputItem.functionCall(id: Self.newID("fc"), callID: callID, name: delta.function.name ?? "",
                                                           arguments: "", status: "in_progress")
                callItems[delta.index] = items.count
                items.append(item)
                out.append(encoder.event("response.output_item.added", ResponseEventEncoder.Item(outputIndex: items.count - 1, item: item)))
            }
            guard let arguments = delta.function.arguments, !arguments.isEmpty, let i = callItems[delta.index],
                  case .functionCall(let id, let callID, let name, let sent, let status) = items[i] else { continue }
            items[i] = .functionCall(id: id, callID: callID, name: name, arguments: sent + arguments, status: status)
            out.append(encoder.event("response.function_call_arguments.delta",
                                     ResponseEventEncoder.Arguments(itemID: id, outputIndex: i, delta: arguments)))
        }
        guard !piece.isEmpty else { return out }
        let (m, opened) = openMessage()
        out += opened
        text += piece
        out.append(encoder.event("response.output_text.delta", ResponseEventEncoder.Text(itemID: items[m].id, outputIndex: m, delta: piece)))
        return out
    }

    /// Closes every item: `complete` false (the token limit or the context ran out) marks them
    /// incomplete. A reply with no answer (empty, or all reasoning) has an empty message.
    mutating func finish(complete: Bool) -> [ResponseEvent] {
        let status = complete ? "completed" : "incomplete"
        var out = closeReasoning(status: status)
        if items.count == (reasoningIndex == nil ? 0 : 1) { out += openMessage().events }
        for i in items.indices {
            switch items[i] {
            case .reasoning:
                continue
            case .message(let id, _, _):
                items[i] = .message(id: id, status: status, text: text)
                out.append(encoder.event("response.output_text.done", ResponseEventEncoder.Text(itemID: id, outputIndex: i, text: text)))
                out.append(encoder.event("response.content_part.done",
                                         ResponseEventEncoder.Part(itemID: id, outputIndex: i, part: OutputTextPart(text: text))))
            case .functionCall(let id, let callID, let name, let arguments, _):
                items[i] = .functionCall(id: id, callID: callID, name: name, arguments: arguments, status: status)
                out.append(encoder.event("response.function_call_arguments.done",
                                         ResponseEventEncoder.Arguments(itemID: id, outputIndex: i, name: name, arguments: arguments)))
            }
            out.append(encoder.event("response.output_item.done", ResponseEventEncoder.Item(outputIndex: i, item: items[i])))
        }
        return out
    }

    /// Closes the reasoning item if it is open: its whole text, then the item with `status`.
    private mutating func closeReasoning(status: String) -> [ResponseEvent] {
        guard reasoningOpen, let r = reasoningIndex else { return [] }
        reasoningOpen = false
        let id = items[r].id
        items[r] = .reasoning(id: id, status: status, text: reasoning)
        return [encoder.event("response.reasoning_text.done", ResponseEventEncoder.ReasoningText(itemID: id, outputIndex: r, text: reasoning)),
                encoder.event("response.output_item.done", ResponseEventEncoder.Item(outputIndex: r, item: items[r]))]
    }

    /// The message item's index, opening it (item and text part) on first use.
    private mutating func openMessage() -> (index: Int, events: [ResponseEvent]) {
        if let messageIndex { return (messageIndex, []) }
        let item = ResponseOutputItem.message(id: Self.newID("msg"), status: "in_progress", text: "")
        let m = items.count
        items.append(item)
        messageIndex = m
        return (m, [
            encoder.event("response.output_item.added", ResponseEventEncoder.Item(outputIndex: m, item: item)),
            encoder.event("response.content_part.added", ResponseEventEncoder.Part(itemID: item.id, outputIndex: m, part: OutputTextPart(text: ""))),
        ])
    }

    /// The reply as the assistant turn of a stored conversation (its calls, or its text).
    var assistantMessage: APIMessage {
        var m = APIMessage(role: "assistant", content: text)
        if reasoningIndex != nil { m.reasoning = reasoning }
        for item in items {
            if case .functionCall(_, let callID, let name, let arguments, _) = item {
                m.toolCalls.append(APIToolCall(id: callID, name: name, arguments: arguments))
            }
        }
        return m
    }
}
