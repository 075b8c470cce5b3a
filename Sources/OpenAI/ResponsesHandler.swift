import Engine
import Foundation
import HTTP

/// `POST /v1/responses` (the OpenAI Responses API), an adapter over the request core
/// (`RequestRun`): the body becomes one chat conversation and the `CompletionRequest` it equals
/// (so the prompt, grammar and limits are chat's), the run's updates (a thinking model's reasoning
/// split off, as chat's `reasoning_content`) become output items and stream events
/// (`ResponseOutput`), and the finished response
/// goes to the `ResponseStore` unless `store` is false. `GET` and `DELETE /v1/responses/{id}`
/// read and remove stored ones.
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
            responseStore.store(id, ResponseStore.Entry(body: encoded, conversation: continued))
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
        let notFound = OpenAIError(status: .notFound,
                                   message: "Response with id '\(id)' not found: it was never stored ('store': false), was deleted, or was evicted (the server keeps the latest \(responseStore.capacity) responses, config responses_store_size)",
                                   type: "invalid_request_error", param: nil, code: "not_found")
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
}
