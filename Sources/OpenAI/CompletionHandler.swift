import ChatTemplate
import Engine
import Foundation
import Grammar
import HTTP
import Model
import Tokenizer

/// POST /v1/chat/completions and /v1/completions, an adapter over the request core: the body
/// parses into a `CompletionRequest`, becomes a `RunRequest` (`runRequest`, which the Anthropic
/// messages adapter shares), and `CompletionRun` maps the run's updates to OpenAI's chunks and
/// bodies. The context check, stop handling and a client that went away are `RequestRun`'s.
extension OpenAIService {
    // MARK: - Request

    /// Refuses a model name that is neither the loaded model's id nor one of its aliases.
    func checkModel(_ name: String, _ b: Backend) throws {
        guard name == b.modelID || settings.modelAliases.contains(name) else {
            throw OpenAIError.modelNotFound(name, available: [b.modelID] + settings.modelAliases)
        }
    }

    /// Prompt token ids of every prompt of `r` (chat messages through the template, with the tool
    /// instructions when tools are used).
    func promptTokens(_ r: CompletionRequest, _ b: Backend) throws -> [[Int32]] {
        try prompts(r, b).ids
    }

    /// Prompt token ids of every prompt of `r`, and per prompt whether its rendered text opened a
    /// think block (`ReasoningSplitter.opensReasoning(prompt:)`). Chat prompts get the request's
    /// template variables (`chat_template_kwargs`), each checked against what the template reads.
    func prompts(_ r: CompletionRequest, _ b: Backend) throws -> (ids: [[Int32]], opensReasoning: [Bool]) {
        let tokenizer = b.formatter.tokenizer
        var out: [[Int32]] = []
        var opens: [Bool] = []
        if !r.templateContext.isEmpty { try r.checkTemplateContext(b.formatter.template) }
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
        return (out, opens)
    }

    /// The core's request for a validated chat or completions request: prompts rendered and
    /// tokenized, the output grammar bound to the vocabulary, sampling and limits.
    ///
    /// `reasoning`: split a thinking model's replies into reasoning and content (ReasoningOutput;
    /// only when `reasoning_format` is `auto` and the template writes think blocks). An adapter
    /// that asks must map `ChoiceUpdate.reasoning` and `ChoiceState.reasoningText` to its wire
    /// format; one that does not gets the think block in the text.
    func runRequest(_ r: CompletionRequest, chat: Bool, reasoning: Bool = false, _ b: Backend) throws -> RunRequest {
        let tokenizer = b.formatter.tokenizer
        if let bad = r.logitBias.keys.first(where: { Int($0) >= tokenizer.vocabularySize }) {
            throw OpenAIError.invalid("logit_bias", "'logit_bias' names token \(bad), outside the vocabulary (0..<\(tokenizer.vocabularySize))")
        }
        let (prompts, opensReasoning) = try self.prompts(r, b)
        let grammar: TokenGrammar? = try r.outputGrammar.map { text in
            do {
                return try grammarCache.grammar(text, formatter: b.formatter)
            } catch {
                throw OpenAIError.invalid(r.outputGrammarParam ?? "grammar", "the output grammar could not be built: \(error)")
            }
        }
        let scorePrompt = !chat && r.echo && r.logprobs
        let sampling = SamplingParameters(temperature: r.temperature, topK: r.topK, topP: r.topP, minP: r.minP,
                                          presencePenalty: r.presencePenalty, frequencyPenalty: r.frequencyPenalty, seed: r.seed)
        let generation = GenerationRequest(promptTokens: [], maxTokens: r.maxTokens ?? settings.defaultMaxTokens, sampling: sampling,
                                           stopTokens: [], logprobs: r.logprobs, topLogprobs: r.topLogprobs, speculation: r.speculation,
                                           grammar: grammar, logitBias: r.logitBias, promptLogprobs: scorePrompt ? r.topLogprobs : nil)
        var run = RunRequest(prompts: prompts, promptParam: chat ? "messages" : "prompt", choicesPerPrompt: r.n,
                             generation: generation, stop: r.stop, readsToolCalls: r.usesTools)
        if chat && reasoning && settings.reasoningFormat == .auto && (b.formatter.template?.thinks ?? false) {
            run.reasoningStarts = opensReasoning.map { r.startsInReasoning(promptOpensReasoning: $0) }
        }
        return run
    }

    // MARK: - Generation

    func complete(_ request: HTTPRequest, chat: Bool, _ responder: HTTPResponder, _ log: inout RequestLog,
                  start: ContinuousClock.Instant) throws {
        let b = try ready()
        let r = try CompletionRequest.parse(request.body, chat: chat, defaults: settings.samplingDefaults)
        try checkModel(r.model, b)
        let run = try startRun(try runRequest(r, chat: chat, reasoning: chat, b), b)
        let wire = CompletionRun(backend: b, request: r, chat: chat, prompts: run.request.prompts,
                                 id: (chat ? "chatcmpl-" : "cmpl-") + responder.requestID, created: Int(Date().timeIntervalSince1970))
        var stream: HTTPStream?
        if r.stream {
            stream = responder.startEventStream()
            for i in run.choices.indices { if let opening = wire.openingChunk(i) { try? stream?.sendEvent(opening) } }
        }
        let outcome = run.drive(responder) { update in
            guard let stream else { return }
            for chunk in wire.chunks(update, run: run) { try stream.sendEvent(chunk) }
        }
        record(run, outcome, &log, start: start)
        switch outcome {
        case .clientGone: return
        case .failed(let failure):
            guard let stream else { throw OpenAIError.from(failure) }
            try? stream.sendEvent(String(decoding: OpenAIError.from(failure).body, as: UTF8.self))
            stream.finish()
            log.status = 200
            return
        case .completed: break
        }
        let usage = wire.usage(run.usage)
        if let stream {
            if r.includeUsage { try? stream.sendEvent(wire.usageChunk(usage)) }
            try? stream.sendEvent("[DONE]")
            stream.finish()
            return
        }
        responder.send(jsonResponse(wire.response(run, usage: usage)))
    }
}

/// The wire side of one chat or completions request: chunk and body shapes, log-probabilities,
/// echo, tool calls.
struct CompletionRun {
    let backend: Backend
    let request: CompletionRequest
    let chat: Bool
    let prompts: [[Int32]]
    let id: String
    let created: Int

    var tokenizer: Tokenizer { backend.formatter.tokenizer }
    var model: String { backend.modelID }

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

    /// The chunks one update of the run produces.
    func chunks(_ u: ChoiceUpdate, run: RequestRun) -> [String] {
        let i = u.choice
        let state = run.choices[i]
        var out: [String] = []
        switch u.kind {
        case .started where !chat && request.echo:
            // The prompt comes first, with its own log-probabilities when asked.
            let lp = request.logprobs ? promptLogprobs(state, choice: i) : nil
            out.append(text(Completion(id: id, created: created, model: model,
                                       choices: [CompletionChoice(index: i, text: echoPrefix(i), logprobs: lp, finishReason: nil)])))
        case .token(let t, let endOfTurn) where !endOfTurn || !u.text.isEmpty || !u.reasoning.isEmpty || (!chat && request.logprobs):
            if chat {
                var delta = ChatDelta()
                var logprobs: ChatLogprobs?
                if request.logprobs && !endOfTurn { logprobs = ChatLogprobs(content: [chatLogprob(t)]) }
                if let calls = u.toolCalls {
                    if !calls.isEmpty { delta.toolCalls = calls }
                } else if !u.text.isEmpty {
                    delta.content = u.text
                }
                delta.setReasoning(u.reasoning)
                if delta.toolCalls != nil || delta.content != nil || delta.reasoningContent != nil || logprobs != nil {
                    out.append(text(ChatCompletionChunk(id: id, created: created, model: model,
                                                        choices: [ChatChunkChoice(index: i, delta: delta, logprobs: logprobs, finishReason: nil)])))
                }
            } else if !u.text.isEmpty || request.logprobs {
                var lp: CompletionLogprobs?
                if request.logprobs {
                    var l = CompletionLogprobs()
                    appendTokens(&l, [t], offset: 0)
                    lp = l
                }
                out.append(text(Completion(id: id, created: created, model: model,
                                           choices: [CompletionChoice(index: i, text: u.text, logprobs: lp, finishReason: nil)])))
            }
        case .ended where !u.text.isEmpty || !u.reasoning.isEmpty:
            if chat {
                var delta = ChatDelta(content: u.text.isEmpty ? nil : u.text)
                delta.setReasoning(u.reasoning)
                out.append(text(ChatCompletionChunk(id: id, created: created, model: model,
                                                    choices: [ChatChunkChoice(index: i, delta: delta, logprobs: nil, finishReason: nil)])))
            } else {
                out.append(text(Completion(id: id, created: created, model: model,
                                           choices: [CompletionChoice(index: i, text: u.text, logprobs: nil, finishReason: nil)])))
            }
        default: break
        }
        if u.finished, let reason = state.finish {
            let finish = chat && run.endedWithToolCalls(i) ? "tool_calls" : reason.apiValue
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

    func usage(_ run: RunUsage) -> Usage {
        var usage = Usage(promptTokens: run.promptTokens, completionTokens: run.completionTokens,
                          totalTokens: run.promptTokens + run.completionTokens,
                          promptTokensDetails: PromptTokensDetails(cachedTokens: run.cachedTokens))
        usage.speculation = SpeculationBody(run.speculation, backend: backend)
        return usage
    }

    func response(_ run: RequestRun, usage: Usage) -> Data {
        let stopTokens = backend.formatter.stopTokens
        let choices = run.choices
        if chat {
            let body = ChatCompletion(id: id, created: created, model: model, choices: choices.enumerated().map { i, c in
                let generated = c.tokens.filter { !stopTokens.contains($0.id) }
                var message = ChatMessageBody(content: c.text)
                message.setReasoning(c.reasoningText)
                if let calls = run.toolCalls(i) {
                    message.content = nil
                    message.toolCalls = calls.map { ToolCallBody(id: $0.id, function: FunctionCallBody(name: $0.name, arguments: $0.arguments)) }
                }
                let finish = message.toolCalls != nil || run.endedWithToolCalls(i) ? "tool_calls" : (c.finish ?? .length).apiValue
                return ChatChoice(index: i, message: message,
                                  logprobs: request.logprobs ? ChatLogprobs(content: generated.map(chatLogprob)) : nil,
                                  finishReason: finish)
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
