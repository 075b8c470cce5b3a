import Engine
import Foundation
import Grammar
import HTTP

/// POST /v1/messages and /v1/messages/count_tokens (the Anthropic Messages API), an adapter over
/// the request core: the body parses into the chat request it equals (`MessagesRequest`), runs
/// as chat completions would (`runRequest`, `RequestRun`), and `MessagesWire` maps the run to a
/// message or to Anthropic's stream events. Errors on these routes come in Anthropic's shape
/// (`AnthropicError`, chosen in `handle`).
extension OpenAIService {
    /// Whether `path` answers in Anthropic's shapes.
    static func isMessagesPath(_ path: String) -> Bool { path == "/v1/messages" || path.hasPrefix("/v1/messages/") }

    /// `e` in the shape of the route at `path`: Anthropic's on /v1/messages, OpenAI's elsewhere.
    static func errorResponse(_ e: OpenAIError, path: String) -> HTTPResponse {
        isMessagesPath(path) ? AnthropicError.response(e) : e.response
    }

    func messages(_ request: HTTPRequest, _ responder: HTTPResponder, _ log: inout RequestLog, start: ContinuousClock.Instant) throws {
        let b = try ready()
        let m = try MessagesRequest.parse(request.body, defaults: settings.samplingDefaults)
        try checkModel(m.chat.model, b)
        let run = try startRun(try runRequest(m.chat, chat: true, reasoning: true, b), b)
        var wire = MessagesWire(id: "msg_" + responder.requestID, model: b.modelID)
        let stream = m.stream ? responder.startEventStream() : nil
        let outcome = run.drive(responder) { update in
            guard let stream else { return }
            for event in wire.events(update, run: run) { try stream.sendEvent(wire.text(event), event: event.name) }
        }
        record(run, outcome, &log, start: start)
        switch outcome {
        case .clientGone: return
        case .failed(let failure):
            let e = OpenAIError.from(failure)
            guard let stream else { throw e }
            let event = MessageStreamEvent.error(type: AnthropicError.type(status: e.status.code), message: e.message)
            try? stream.sendEvent(wire.text(event), event: event.name)
            stream.finish()
            return
        case .completed: break
        }
        if let stream {
            stream.finish()
            return
        }
        responder.send(jsonResponse(encodeJSON(wire.message(run))))
    }

    func countTokens(_ request: HTTPRequest, _ responder: HTTPResponder, _ log: inout RequestLog) throws {
        let b = try ready()
        let m = try MessagesRequest.parse(request.body, countOnly: true, defaults: settings.samplingDefaults)
        try checkModel(m.chat.model, b)
        let count = try promptTokens(m.chat, b).reduce(0) { $0 + $1.count }
        log.promptTokens = count
        responder.send(json(TokenCountBody(inputTokens: count)))
    }
}

/// The wire side of one /v1/messages request (one choice): the whole message, or the stream's
/// events with their content blocks opened and closed in order.
struct MessagesWire {
    let id: String
    let model: String
    /// The open content block (index, and whether it is text), and the next block's index.
    private var open: (index: Int, text: Bool)?
    private var nextIndex = 0
    /// Block index of each streamed tool call, and of the thinking block (a thinking model's
    /// reasoning, which comes first).
    private var callBlocks: [Int: Int] = [:]
    private var thinkingBlock: Int?

    init(id: String, model: String) {
        self.id = id
        self.model = model
    }

    func text(_ event: MessageStreamEvent) -> String { String(decoding: encodeJSON(event), as: UTF8.self) }

    func usage(_ run: RequestRun) -> MessagesUsage {
        let u = run.usage
        return MessagesUsage(inputTokens: u.promptTokens - u.cachedTokens, outputTokens: u.completionTokens, cacheReadInputTokens: u.cachedTokens)
    }

    /// Why the reply ended, in Anthropic's words, and the stop sequence that ended it.
    func stop(_ run: RequestRun) -> (reason: String, sequence: String?) {
        if run.toolCalls(0) != nil { return ("tool_use", nil) }
        let c = run.choices[0]
        if c.finish == .length { return ("max_tokens", nil) }
        if let s = c.stopSequence { return ("stop_sequence", s) }
        return ("end_turn", nil)
    }

    /// The whole message.
    func message(_ run: RequestRun) -> MessageBody {
        var content: [MessageContentBlock] = []
        if !run.choices[0].reasoningText.isEmpty { content.append(.thinking(run.choices[0].reasoningText)) }
        if let calls = run.toolCalls(0) {
            content += calls.map { .toolUse(id: $0.id, name: $0.name, input: (try? JSONValue.parse($0.arguments)) ?? .object([])) }
        } else {
            content.append(.text(run.choices[0].text))
        }
        let (reason, sequence) = stop(run)
        return MessageBody(id: id, model: model, content: content, stopReason: reason, stopSequence: sequence, usage: usage(run))
    }

    // MARK: - Streaming

    private mutating func startBlock(_ block: MessageContentBlock, text: Bool, into out: inout [MessageStreamEvent]) -> Int {
        closeBlock(into: &out)
        let index = nextIndex
        nextIndex += 1
        open = (index, text)
        out.append(.contentBlockStart(index: index, block: block))
        return index
    }

    private mutating func closeBlock(into out: inout [MessageStreamEvent]) {
        if let o = open { out.append(.contentBlockStop(index: o.index)) }
        open = nil
    }

    /// The events one update of the run produces.
    mutating func events(_ u: ChoiceUpdate, run: RequestRun) -> [MessageStreamEvent] {
        var out: [MessageStreamEvent] = []
        if case .started = u.kind {
            var start = self.usage(run)
            start.outputTokens = 0
            out.append(.messageStart(MessageBody(id: id, model: model, content: [], stopReason: nil, stopSequence: nil, usage: start)))
            out.append(.ping)
        }
        if !u.reasoning.isEmpty {
            if thinkingBlock == nil || open?.index != thinkingBlock { thinkingBlock = startBlock(.thinking(""), text: false, into: &out) }
            out.append(.thinkingDelta(index: thinkingBlock!, thinking: u.reasoning))
        }
        if !u.text.isEmpty {
            let index = open?.text == true ? open!.index : startBlock(.text(""), text: true, into: &out)
            out.append(.textDelta(index: index, text: u.text))
        }
        for d in u.toolCalls ?? [] {
            if let callID = d.id, let name = d.function.name {
                callBlocks[d.index] = startBlock(.toolUse(id: callID, name: name, input: .object([])), text: false, into: &out)
            }
            if let piece = d.function.arguments, !piece.isEmpty, let index = callBlocks[d.index] {
                out.append(.inputJSONDelta(index: index, partialJSON: piece))
            }
        }
        if u.finished {
            // A reply with no text and no calls still has its (empty) text block, as the whole message does.
            if nextIndex == (thinkingBlock == nil ? 0 : 1) { _ = startBlock(.text(""), text: true, into: &out) }
            closeBlock(into: &out)
            let (reason, sequence) = stop(run)
            out.append(.messageDelta(stopReason: reason, stopSequence: sequence, outputTokens: run.choices[u.choice].completionTokens))
            out.append(.messageStop)
        }
        return out
    }
}
