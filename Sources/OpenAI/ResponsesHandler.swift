import Engine
import Foundation
import HTTP

/// `POST /v1/responses` (the OpenAI Responses API), an adapter over the request core
/// (`RequestRun`): the body becomes one chat conversation and the `CompletionRequest` it equals
/// (so the prompt, grammar and limits are chat's), the run's updates (a thinking model's reasoning
/// split off, as chat's `reasoning_content`) become output items and stream events
/// (`ResponseOutput`), and the finished response
/// goes to the `ResponseStore` unless `store` is false. `GET` and `DELETE /v1/responses/{id}`
/// read and remove stored ones; `GET /v1/responses/{id}/input_items` lists a stored one's input.
extension OpenAIService {
    // MARK: - Create

    func responses(_ request: HTTPRequest, _ responder: HTTPResponder, _ log: inout RequestLog, start: ContinuousClock.Instant) throws {
        let b = try ready()
        let wire = try ResponsesRequest.parse(request.body)
        try checkModel(wire.model, b)
        if wire.store == true && responseStore.capacity == 0 {
            throw ResponsesRequest.refuse("store", "the response store is off (config responses_store_size is 0); send 'store': false or raise responses_store_size")
        }
        var history: [APIMessage] = []
        if let previous = wire.previousResponseID {
            guard responseStore.capacity > 0 else {
                throw ResponsesRequest.refuse("previous_response_id", "the response store is off (config responses_store_size is 0); send the whole conversation as 'input'")
            }
            guard let entry = responseStore.entry(previous) else {
                throw OpenAIError.invalid("previous_response_id", "Previous response with id '\(previous)' not found: it was never stored ('store': false), was deleted, or was evicted (the server keeps the latest \(responseStore.capacity) responses, config responses_store_size)",
                                          code: "previous_response_not_found")
            }
            history = entry.conversation
        }
        let messages = ResponsesRequest.conversation(instructions: wire.instructions, history: history, input: wire.input)
        let r = try wire.completionRequest(messages: messages, defaults: settings.samplingDefaults)
        var runRequest = try self.runRequest(r, chat: true, reasoning: true, b)
        runRequest.promptParam = "input"
        let run = try startRun(runRequest, b)

        let id = "resp_" + responder.requestID
        let createdAt = Int(Date().timeIntervalSince1970)
        let stores = wire.store ?? (responseStore.capacity > 0)
        func body(status: String, output: [ResponseOutputItem], usage: ResponseUsage?, error: ResponseErrorBody? = nil) -> ResponseObject {
            var format = TextBody.Format(type: "text")
            switch wire.text {
            case .jsonObject?: format.type = "json_object"
            case .jsonSchema(let name, let schema, let strict)?:
                format = TextBody.Format(type: "json_schema", name: name, schema: JSONFragment(schema), strict: strict ?? false)
            case .text?, nil: break
            }
            return ResponseObject(id: id, createdAt: createdAt, status: status,
                                  incompleteDetails: status == "incomplete" ? IncompleteDetails(reason: "max_output_tokens") : nil,
                                  error: error, instructions: wire.instructions, maxOutputTokens: wire.maxOutputTokens, model: b.modelID,
                                  output: output, parallelToolCalls: r.parallelToolCalls, previousResponseID: wire.previousResponseID,
                                  store: stores, temperature: Double("\(r.temperature)") ?? 1, topP: Double("\(r.topP)") ?? 1,
                                  toolChoice: ToolChoiceBody(choice: r.toolChoice),
                                  tools: wire.tools.map { FunctionToolBody(name: $0.name, description: $0.description,
                                                                           parameters: JSONFragment($0.parameters), strict: $0.strict ?? false) },
                                  text: TextBody(format: format), usage: usage, metadata: Dictionary(wire.metadata, uniquingKeysWith: { $1 }))
        }

        var output = ResponseOutput()
        var stream: HTTPStream?
        func send(_ events: [ResponseEvent]) throws {
            guard let stream else { return }
            for e in events { try stream.sendEvent(e.data, event: e.name) }
        }
        if wire.stream {
            stream = responder.startEventStream()
            let opening = body(status: "in_progress", output: [], usage: nil)
            try? send([output.encoder.event("response.created", ResponseEventEncoder.Lifecycle(response: opening)),
                       output.encoder.event("response.in_progress", ResponseEventEncoder.Lifecycle(response: opening))])
        }
        // Updates always build the output (streamed or not), so both carry the same items.
        let outcome = run.drive(responder) { update in
            try send(output.append(reasoning: update.reasoning, text: update.text, toolCalls: update.toolCalls))
        }
        record(run, outcome, &log, start: start)
        switch outcome {
        case .clientGone: return
        case .failed(let failure):
            let error = OpenAIError.from(failure)
            guard stream != nil else { throw error }
            let failed = body(status: "failed", output: output.items, usage: nil,
                              error: ResponseErrorBody(code: error.code ?? "server_error", message: error.message))
            try? send([output.encoder.event("response.failed", ResponseEventEncoder.Lifecycle(response: failed))])
            stream?.finish()
            log.status = 200
            return
        case .completed: break
        }
        let complete = run.choices[0].finish != .length
        let closing = output.finish(complete: complete)
        let u = run.usage
        let usage = ResponseUsage(inputTokens: u.promptTokens, inputTokensDetails: .init(cachedTokens: u.cachedTokens),
                                  outputTokens: u.completionTokens, outputTokensDetails: .init(), totalTokens: u.promptTokens + u.completionTokens,
                                  speculation: SpeculationBody(u.speculation, backend: b))
        let final = body(status: complete ? "completed" : "incomplete", output: output.items, usage: usage)
        let encoded = encodeJSON(final)
        if stores {
            let continued = ResponsesRequest.conversation(instructions: nil, history: history, input: wire.input) + [output.assistantMessage]
            responseStore.store(id, ResponseStore.Entry(body: encoded, conversation: continued, input: wire.input))
        }
        if let stream {
            try? send(closing)
            try? send([output.encoder.event(complete ? "response.completed" : "response.incomplete", ResponseEventEncoder.Lifecycle(response: final))])
            stream.finish()
            return
        }
        responder.send(jsonResponse(encoded))
    }

    // MARK: - Stored responses

    /// `GET /v1/responses/{id}` (the stored response as it was sent) and `DELETE` (removes it).
    func storedResponse(_ id: String, method: String, _ responder: HTTPResponder, _ log: inout RequestLog) throws {
        let path = "/v1/responses/\(id)"
        guard method == "GET" || method == "DELETE" else { throw OpenAIError.methodNotAllowed(method, path, allowed: ["GET", "DELETE"]) }
        let notFound = notStored(id)
        if method == "GET" {
            guard let entry = responseStore.entry(id) else { throw notFound }
            responder.send(jsonResponse(entry.body))
        } else {
            guard responseStore.remove(id) else { throw notFound }
            struct Deleted: Encodable {
                var id: String
                var object = "response"
                var deleted = true
            }
            responder.send(jsonResponse(encodeJSON(Deleted(id: id))))
        }
        log.status = 200
    }

    /// The 404 for a response id the store does not hold.
    private func notStored(_ id: String) -> OpenAIError {
        OpenAIError(status: .notFound,
                    message: "Response with id '\(id)' not found: it was never stored ('store': false), was deleted, or was evicted (the server keeps the latest \(responseStore.capacity) responses, config responses_store_size)",
                    type: "invalid_request_error", param: nil, code: "not_found")
    }

    /// `GET /v1/responses/{id}/input_items`: the stored response's own `input` items (not the
    /// conversation a `previous_response_id` continued), as OpenAI lists them: a page of
    /// `limit` (1-100, default 20) items in `order` (`desc`, the default, newest first, or `asc`),
    /// starting after the item id `after`; each item has a stable id (`msg_`, `fc_` or `fco_`, the
    /// response id and its index).
    func inputItems(_ id: String, _ request: HTTPRequest, _ responder: HTTPResponder, _ log: inout RequestLog) throws {
        guard request.method == "GET" else {
            throw OpenAIError.methodNotAllowed(request.method, "/v1/responses/\(id)/input_items", allowed: ["GET"])
        }
        let query = Self.queryItems(request.query)
        for name in query.keys where !["limit", "order", "after", "include", "include[]"].contains(name) {
            throw OpenAIError.invalid(name, "'\(name)' is not a parameter of input_items; use limit, order or after", code: "unknown_parameter")
        }
        for name in ["include", "include[]"] where !(query[name] ?? "").isEmpty {
            throw OpenAIError.invalid(name, "'\(name)' asks for image, file or audio parts; CastServe's input items are text only, so send no include",
                                      code: "unsupported_parameter")
        }
        var limit = 20
        if let text = query["limit"] {
            guard let n = Int(text), (1...100).contains(n) else {
                throw OpenAIError.invalid("limit", "'limit' must be an integer from 1 to 100 (items per page)")
            }
            limit = n
        }
        let order = query["order"] ?? "desc"
        guard order == "asc" || order == "desc" else { throw OpenAIError.invalid("order", "'order' is '\(order)'; use asc or desc") }
        guard let entry = responseStore.entry(id) else { throw notStored(id) }
        var items = entry.input.enumerated().map { InputItemBody($1, id: id, index: $0) }
        if order == "desc" { items.reverse() }
        if let after = query["after"] {
            guard let i = items.firstIndex(where: { $0.id == after }) else {
                throw OpenAIError.invalid("after", "'after' is '\(after)', not an input item of \(id); pass an id from a previous page")
            }
            items.removeFirst(i + 1)
        }
        let page = Array(items.prefix(limit))
        responder.send(jsonResponse(encodeJSON(InputItemList(data: page, firstID: page.first?.id, lastID: page.last?.id,
                                                             hasMore: items.count > page.count))))
        log.status = 200
    }
}

/// One input item as `GET /v1/responses/{id}/input_items` lists it.
struct InputItemBody: Encodable {
    struct Part: Encodable {
        var type: String
        var text: String
    }
    var id: String
    var type: String
    var status = "completed"
    var role: String?
    var content: [Part]?
    var callID: String?
    var name: String?
    var arguments: String?
    var output: String?

    init(_ item: ResponsesRequest.InputItem, id response: String, index: Int) {
        let suffix = "\(response.hasPrefix("resp_") ? String(response.dropFirst(5)) : response)_\(index)"
        switch item {
        case .message(let role, let text):
            id = "msg_" + suffix
            type = "message"
            self.role = role
            content = [Part(type: role == "assistant" ? "output_text" : "input_text", text: text)]
        case .functionCall(let callID, let name, let arguments):
            id = "fc_" + suffix
            type = "function_call"
            self.callID = callID
            self.name = name
            self.arguments = arguments
        case .functionCallOutput(let callID, let output):
            id = "fco_" + suffix
            type = "function_call_output"
            self.callID = callID
            self.output = output
        }
    }

    enum CodingKeys: String, CodingKey {
        case id, type, status, role, content, name, arguments, output
        case callID = "call_id"
    }
}

/// A page of input items.
struct InputItemList: Encodable {
    var object = "list"
    var data: [InputItemBody]
    var firstID: String?
    var lastID: String?
    var hasMore: Bool

    enum CodingKeys: String, CodingKey {
        case object, data
        case firstID = "first_id", lastID = "last_id", hasMore = "has_more"
    }

    func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(object, forKey: .object)
        try c.encode(data, forKey: .data)
        try c.encode(firstID, forKey: .firstID)    // null on an empty page, as OpenAI sends
        try c.encode(lastID, forKey: .lastID)
        try c.encode(hasMore, forKey: .hasMore)
    }
}
