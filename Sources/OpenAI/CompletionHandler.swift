import ChatTemplate
import Engine
import Foundation
import Grammar
import HTTP
import Model
import Tokenizer

/// POST /v1/chat/completions and /v1/completions: validated request -> prompts -> one engine
/// request per (prompt, choice) -> streamed chunks or one typed response.
///
/// One home each: the context check (`checkContext`), stop strings (`ChoiceState`, which
/// cancels its engine request here when one matches), and a client that went away
/// (`clientGone`, polled while waiting and on a failed write, cancels every choice).
extension OpenAIService {
    // MARK: - Prompts

    /// Refuses a prompt the context cannot hold with at least one more position.
    func checkContext(_ ids: [Int32], _ b: Backend, param: String) throws {
        guard !ids.isEmpty else { throw OpenAIError.invalid(param, "The prompt is empty after tokenization") }
        guard ids.count < b.contextLength else {
            throw OpenAIError(status: .badRequest,
                              message: "This model's context length is \(b.contextLength) tokens, but the prompt has \(ids.count) tokens; shorten the prompt (at least one token must remain for the completion)",
                              type: "invalid_request_error", param: param, code: "context_length_exceeded")
        }
    }

    /// Prompt token ids of every prompt of `r`, and per prompt whether its rendered text opened a
    /// think block (`ReasoningSplitter.opensReasoning(prompt:)`).
    func promptTokens(_ r: CompletionRequest, chat: Bool, _ b: Backend) throws -> (ids: [[Int32]], opensReasoning: [Bool]) {
        let tokenizer = b.formatter.tokenizer
        var out: [[Int32]] = []
        var opens: [Bool] = []
        if chat { try r.checkTemplateContext(b.formatter.template) }
        for p in r.prompts {
            switch p {
            case .chat(let messages):
                func render(_ toolRoleAsUser: Bool) throws -> (text: String, tokens: [Int32]) {
                    let (m, tools) = ToolCallFormat.templateMessages(r, messages: messages, template: b.formatter.template, toolRoleAsUser: toolRoleAsUser)
                    return try b.formatter.chatPrompt(m, tools: tools, context: r.templateContext)
                }
                let prompt: (text: String, tokens: [Int32])
                do {
                    prompt = try render(false)
                } catch {
                    // Templates that refuse a `tool` role get tool results as user messages.
                    guard messages.contains(where: { $0.role == "tool" }), let rendered = try? render(true) else {
                        throw OpenAIError.invalid("messages", "The chat template could not render these messages: \(error)")
                    }
                    prompt = rendered
                }
                out.append(prompt.tokens)
                opens.append(ReasoningSplitter.opensReasoning(prompt: prompt.text))
            case .text(let t):
                out.append(b.formatter.completionTokens(t))
                opens.append(false)
            case .tokens(let ids):
                if let bad = ids.first(where: { Int($0) >= tokenizer.vocabularySize }) {
                    throw OpenAIError.invalid("prompt", "token id \(bad) is outside the vocabulary (0..<\(tokenizer.vocabularySize))")
                }
                out.append(ids)
                opens.append(false)
            }
        }
        for ids in out { try checkContext(ids, b, param: chat ? "messages" : "prompt") }
        return (out, opens)
    }

    // MARK: - Generation

    func complete(_ request: HTTPRequest, chat: Bool, _ responder: HTTPResponder, _ log: inout RequestLog,
                  start: ContinuousClock.Instant) throws {
        let b = try ready()
        let r = try CompletionRequest.parse(request.body, chat: chat, defaults: settings.samplingDefaults)
        guard r.model == b.modelID || settings.modelAliases.contains(r.model) else {
            throw OpenAIError.modelNotFound(r.model, available: [b.modelID] + settings.modelAliases)
        }
        let tokenizer = b.formatter.tokenizer
        if let bad = r.logitBias.keys.first(where: { Int($0) >= tokenizer.vocabularySize }) {
            throw OpenAIError.invalid("logit_bias", "'logit_bias' names token \(bad), outside the vocabulary (0..<\(tokenizer.vocabularySize))")
        }
        let (prompts, opensReasoning) = try promptTokens(r, chat: chat, b)
        // Thinking models' replies are split into reasoning and content (ReasoningOutput).
        let splitsReasoning = chat && settings.reasoningFormat == .auto && (b.formatter.template?.thinks ?? false)
        let grammar: TokenGrammar? = try r.outputGrammar.map { text in
            do {
                return try grammarCache.grammar(text, formatter: b.formatter)
            } catch {
                throw OpenAIError.invalid(r.outputGrammarParam ?? "grammar", "the output grammar could not be built: \(error)")
            }
        }
        let maxTokens = r.maxTokens ?? settings.defaultMaxTokens
        let scorePrompt = !chat && r.echo && r.logprobs
        let queue = EventQueue()
        var choices: [ChoiceState] = []
        let stopTokens = b.formatter.stopTokens
        for (p, ids) in prompts.enumerated() {
            for k in 0..<r.n {
                let index = p * r.n + k
                let sampling = SamplingParameters(temperature: r.temperature, topK: r.topK, topP: r.topP, minP: r.minP,
                                                  presencePenalty: r.presencePenalty, frequencyPenalty: r.frequencyPenalty,
                                                  seed: r.seed.map { $0 &+ UInt64(index) })
                let g = GenerationRequest(promptTokens: ids, maxTokens: min(maxTokens, b.contextLength - ids.count), sampling: sampling,
                                          stopTokens: stopTokens, logprobs: r.logprobs, topLogprobs: r.topLogprobs, speculation: r.speculation,
                                          grammar: grammar, logitBias: r.logitBias, promptLogprobs: scorePrompt ? r.topLogprobs : nil)
                var state = ChoiceState(tokenizer: tokenizer, stops: r.stop)
                state.readsToolCalls = r.usesTools
                if splitsReasoning { state.splitReasoning(startingInside: r.startsInReasoning(promptOpensReasoning: opensReasoning[p])) }
                do {
                    state.handle = try b.engine.submit(g) { queue.push(index, $0) }
                } catch let e as EngineError {
                    for c in choices { if let h = c.handle { b.engine.cancel(h) } }
                    throw OpenAIError.from(e)
                }
                choices.append(state)
            }
        }
        let cancelAll = { for c in choices { if let h = c.handle { b.engine.cancel(h) } } }
        responder.onDisconnect { cancelAll() }
        var run = CompletionRun(service: self, backend: b, request: r, chat: chat, prompts: prompts,
                                id: (chat ? "chatcmpl-" : "cmpl-") + responder.requestID, created: Int(Date().timeIntervalSince1970))
        var stream: HTTPStream?
        if r.stream {
            stream = responder.startEventStream()
            for i in choices.indices { if let opening = run.openingChunk(i) { try? stream?.sendEvent(opening) } }
        }
        let clock = ContinuousClock()
        var firstToken = true
        var lastGoneCheck = clock.now
        /// The one place a vanished client ends the request.
        func clientGone() {
            cancelAll()
            log.status = 499
            log.error = "client disconnected"
        }
        while choices.contains(where: { !$0.isDone }) {
            let next = queue.pop(timeout: 1)
            // Poll the socket now and then even while tokens flow: a non-streaming response writes
            // nothing until the end, so nothing else would notice a client that went away.
            if next == nil || clock.now - lastGoneCheck > .milliseconds(200) {
                lastGoneCheck = clock.now
                if responder.isClientGone { clientGone(); return }
            }
            guard let (index, event) = next else { continue }
            if case .token = event, firstToken {
                firstToken = false
                metrics.timeToFirstToken.record(clock.now - start)
                log.ttft = clock.now - start
            }
            let wasDone = choices[index].finish != nil
            let piece = choices[index].take(event, stopTokens: stopTokens)
            if !wasDone, choices[index].finish == .stop, case .token = event, let h = choices[index].handle {
                b.engine.cancel(h)  // a stop string ended this choice
            }
            guard let stream else { continue }
            do {
                for chunk in run.chunks(index, event: event, piece: piece, state: choices[index], finished: !wasDone && choices[index].finish != nil) {
                    try stream.sendEvent(chunk)
                }
            } catch {
                clientGone()
                return
            }
        }
        if let failure = choices.compactMap(\.failed).first {
            if let stream {
                try? stream.sendEvent(String(decoding: OpenAIError.from(failure).body, as: UTF8.self))
                stream.finish()
                log.status = 200
                return
            }
            throw OpenAIError.from(failure)
        }
        let usage = run.usage(choices)
        metrics.promptTokens.increment(by: Int64(usage.promptTokens))
        metrics.promptCachedTokens.increment(by: Int64(usage.promptTokensDetails.cachedTokens))
        metrics.completionTokens.increment(by: Int64(usage.completionTokens))
        log.promptTokens = usage.promptTokens
        log.completionTokens = usage.completionTokens
        log.status = 200
        if let stream {
            if r.includeUsage { try? stream.sendEvent(run.usageChunk(usage)) }
            try? stream.sendEvent("[DONE]")
            stream.finish()
            return
        }
        responder.send(jsonResponse(run.response(choices, usage: usage)))
    }
}

/// The response side of one completion request: chunk and body shapes, log-probabilities,
/// echo, tool calls.
struct CompletionRun {
    let service: OpenAIService
    let backend: Backend
    let request: CompletionRequest
    let chat: Bool
    let prompts: [[Int32]]
    let id: String
    let created: Int
    /// Per choice: tool-call deltas sent so far (streaming), and whether its reply is calls.
    var toolStreams: [Int: ToolCallStream] = [:]

    var tokenizer: Tokenizer { backend.formatter.tokenizer }
    var model: String { backend.modelID }

    init(service: OpenAIService, backend: Backend, request: CompletionRequest, chat: Bool, prompts: [[Int32]], id: String, created: Int) {
        self.service = service
        self.backend = backend
        self.request = request
        self.chat = chat
        self.prompts = prompts
        self.id = id
        self.created = created
    }

    func text<T: Encodable>(_ value: T) -> String { String(decoding: encodeJSON(value), as: UTF8.self) }

    // MARK: - Streaming

    /// The first chunk of choice `i` (chat: the role); completions send their echo at `started`.
    func openingChunk(_ i: Int) -> String? {
        if chat {
            let delta = ChatDelta(role: "assistant", content: request.usesTools ? nil : "")
            return text(ChatCompletionChunk(id: id, created: created, model: model,
                                            choices: [ChatChunkChoice(index: i, delta: delta, logprobs: nil, finishReason: nil)]))
        }
        return nil
    }

    /// The chunks an engine event of choice `i` produces (`piece`: its new text).
    mutating func chunks(_ i: Int, event: TokenEvent, piece: String, state: ChoiceState, finished: Bool) -> [String] {
        var out: [String] = []
        if !chat, request.echo, case .started = event {
            // The prompt comes first, with its own log-probabilities when asked.
            let prefix = echoPrefix(i)
            let lp = request.logprobs ? promptLogprobs(state, choice: i) : nil
            out.append(text(Completion(id: id, created: created, model: model,
                                       choices: [CompletionChoice(index: i, text: prefix, logprobs: lp, finishReason: nil)])))
        }
        if case .token(let t) = event, !backend.formatter.stopTokens.contains(t.id) || !piece.isEmpty || (!chat && request.logprobs) {
            let generated = !backend.formatter.stopTokens.contains(t.id)
            if chat {
                var delta = ChatDelta()
                var logprobs: ChatLogprobs?
                if request.logprobs && generated { logprobs = ChatLogprobs(content: [chatLogprob(t)]) }
                if request.usesTools, case .calls = ToolCallFormat.read(state.raw) {
                    var s = toolStreams[i] ?? ToolCallStream()
                    let deltas = s.deltas(state.raw)
                    toolStreams[i] = s
                    if !deltas.isEmpty { delta.toolCalls = deltas }
                } else if !piece.isEmpty {
                    delta.content = piece
                }
                delta.setReasoning(state.reasoningPiece)
                if delta.toolCalls != nil || delta.content != nil || delta.reasoningContent != nil || logprobs != nil {
                    out.append(text(ChatCompletionChunk(id: id, created: created, model: model,
                                                        choices: [ChatChunkChoice(index: i, delta: delta, logprobs: logprobs, finishReason: nil)])))
                }
            } else if !piece.isEmpty || request.logprobs {
                var lp: CompletionLogprobs?
                if request.logprobs {
                    var l = CompletionLogprobs()
                    appendTokens(&l, [t], offset: 0)
                    lp = l
                }
                out.append(text(Completion(id: id, created: created, model: model,
                                           choices: [CompletionChoice(index: i, text: piece, logprobs: lp, finishReason: nil)])))
            }
        } else if case .finished = event, !piece.isEmpty || !state.reasoningPiece.isEmpty {
            if chat {
                var delta = ChatDelta(content: piece.isEmpty ? nil : piece)
                delta.setReasoning(state.reasoningPiece)
                out.append(text(ChatCompletionChunk(id: id, created: created, model: model,
                                                    choices: [ChatChunkChoice(index: i, delta: delta, logprobs: nil, finishReason: nil)])))
            } else {
                out.append(text(Completion(id: id, created: created, model: model,
                                           choices: [CompletionChoice(index: i, text: piece, logprobs: nil, finishReason: nil)])))
            }
        }
        if finished, let reason = state.finish {
            let finish = finishReason(reason, state: state)
            if chat {
                out.append(text(ChatCompletionChunk(id: id, created: created, model: model,
                                                    choices: [ChatChunkChoice(index: i, delta: ChatDelta(), logprobs: nil, finishReason: finish)])))
            } else {
                out.append(text(Completion(id: id, created: created, model: model,
                                           choices: [CompletionChoice(index: i, text: "", logprobs: nil, finishReason: finish)])))
            }
        }
        return out
    }

    func usageChunk(_ usage: Usage) -> String {
        chat ? text(ChatCompletionChunk(id: id, created: created, model: model, choices: [], usage: usage))
            : text(Completion(id: id, created: created, model: model, choices: [], usage: usage))
    }

    // MARK: - Whole responses

    func usage(_ choices: [ChoiceState]) -> Usage {
        let promptTotal = prompts.reduce(0) { $0 + $1.count } * request.n
        let completionTotal = choices.reduce(0) { $0 + $1.completionTokens }
        let cachedTotal = choices.reduce(0) { $0 + $1.cachedTokens }
        var usage = Usage(promptTokens: promptTotal, completionTokens: completionTotal, totalTokens: promptTotal + completionTotal,
                          promptTokensDetails: PromptTokensDetails(cachedTokens: cachedTotal))
        if backend.engine.configuration.speculation {
            // An extension: clients that do not know the field ignore it.
            let sum = { (f: (SpeculationUsage) -> Int) in choices.reduce(0) { $0 + f($1.speculation) } }
            let drafted = sum { $0.draftedTokens }, accepted = sum { $0.acceptedTokens }
            usage.speculation = SpeculationBody(draftedTokens: drafted, acceptedTokens: accepted, decodeSteps: sum { $0.decodeSteps },
                                                speculativeSteps: sum { $0.speculativeSteps },
                                                acceptanceRate: drafted > 0 ? Double(accepted) / Double(drafted) : 0,
                                                forcedDraftedTokens: sum { $0.forcedDraftedTokens },
                                                forcedAcceptedTokens: sum { $0.forcedAcceptedTokens })
        }
        return usage
    }

    func response(_ choices: [ChoiceState], usage: Usage) -> Data {
        let stopTokens = backend.formatter.stopTokens
        if chat {
            let body = ChatCompletion(id: id, created: created, model: model, choices: choices.enumerated().map { i, c in
                let generated = c.tokens.filter { !stopTokens.contains($0.id) }
                var message = ChatMessageBody(content: c.text)
                message.setReasoning(c.reasoningText)
                if request.usesTools, c.finish != .length, case .calls(let calls) = ToolCallFormat.read(c.raw), !calls.isEmpty,
                   calls.allSatisfy(\.complete) {
                    message.content = nil
                    message.toolCalls = calls.map { ToolCallBody(id: ToolCallFormat.newID(), function: FunctionCallBody(name: $0.name ?? "", arguments: $0.arguments)) }
                }
                return ChatChoice(index: i, message: message,
                                  logprobs: request.logprobs ? ChatLogprobs(content: generated.map(chatLogprob)) : nil,
                                  finishReason: message.toolCalls != nil ? "tool_calls" : finishReason(c.finish ?? .length, state: c))
            }, usage: usage)
            return encodeJSON(body)
        }
        let body = Completion(id: id, created: created, model: model, choices: choices.enumerated().map { i, c in
            let prefix = request.echo ? echoPrefix(i) : ""
            var lp: CompletionLogprobs?
            if request.logprobs {
                var l = request.echo ? promptLogprobs(c, choice: i) : CompletionLogprobs()
                // A stop token the model generated is listed too (its text is not): scorers such as
                // lm-eval expect one entry per prompt token plus one per generated token.
                appendTokens(&l, c.tokens, offset: prefix.unicodeScalars.count)
                lp = l
            }
            return CompletionChoice(index: i, text: prefix + c.text, logprobs: lp, finishReason: (c.finish ?? .length).apiValue)
        }, usage: usage)
        return encodeJSON(body)
    }

    func finishReason(_ reason: FinishReason, state: ChoiceState) -> String {
        if chat, request.usesTools, reason == .stop, case .calls(let calls) = ToolCallFormat.read(state.raw), !calls.isEmpty { return "tool_calls" }
        return reason.apiValue
    }

    // MARK: - Log-probabilities and echo

    /// The echoed prompt text of choice `i`: the request's own text, or its tokens decoded.
    func echoPrefix(_ i: Int) -> String {
        if case .text(let t) = request.prompts[i / request.n] { return t }
        return tokenizer.decode(prompts[i / request.n])
    }

    /// The prompt's entries of the legacy logprobs object (the first token's logprob is null).
    func promptLogprobs(_ state: ChoiceState, choice i: Int) -> CompletionLogprobs {
        var l = CompletionLogprobs()
        var offset = 0
        // A text prompt's BOS is not part of the echoed text: it is left out.
        let skipBOS: Bool = { if case .text = request.prompts[i / request.n] { return tokenizer.addsBOS } else { return false } }()
        for (k, t) in state.promptScores.enumerated() where !(k == 0 && skipBOS) {
            let piece = tokenizer.decode([t.id])
            l.append(token: piece, logprob: t.logprob.map(Double.init), top: t.logprob == nil ? nil : topMap(t), offset: offset)
            offset += piece.unicodeScalars.count
        }
        return l
    }

    func appendTokens(_ l: inout CompletionLogprobs, _ tokens: [GeneratedToken], offset: Int) {
        var position = offset
        for t in tokens {
            let piece = tokenizer.decode([t.id])
            l.append(token: piece, logprob: Double(t.logprob ?? 0), top: topMap(t), offset: position)
            position += piece.unicodeScalars.count
        }
    }

    func topMap(_ t: GeneratedToken) -> [String: Double] {
        Dictionary(t.topLogprobs.map { (tokenizer.decode([$0.id]), Double($0.logprob)) }, uniquingKeysWith: max)
    }

    func chatLogprob(_ t: GeneratedToken) -> ChatTokenLogprob {
        let text = tokenizer.decode([t.id])
        return ChatTokenLogprob(token: text, logprob: Double(t.logprob ?? 0), bytes: Array(text.utf8).map(Int.init),
                                topLogprobs: t.topLogprobs.map {
                                    let s = tokenizer.decode([$0.id])
                                    return ChatTopLogprob(token: s, logprob: Double($0.logprob), bytes: Array(s.utf8).map(Int.init))
                                })
    }
}
