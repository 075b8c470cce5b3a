import Engine
import Foundation
import HTTP
import Model

/// POST /v1/embeddings (every input runs through the engine as a prompt with no completion: the
/// mean of its rows' final hidden states, L2-normalised) and GET /tokenizer_info (vLLM's
/// tokenizer description, which lm-evaluation-harness's remote tokenizer reads).
extension OpenAIService {
    func embeddings(_ request: HTTPRequest, _ responder: HTTPResponder, _ log: inout RequestLog) throws {
        let b = try ready()
        guard let object = try? JSONSerialization.jsonObject(with: request.body), let json = object as? [String: Any] else {
            throw OpenAIError.invalid("body", "The request body must be a JSON object", code: "invalid_json")
        }
        for key in json.keys where !["model", "input", "encoding_format", "dimensions", "user"].contains(key) {
            throw OpenAIError.invalid(key, "'\(key)' is not a field of /v1/embeddings; send model, input, encoding_format, dimensions or user")
        }
        guard let model = json["model"] as? String, !model.isEmpty else {
            throw OpenAIError.invalid("model", "'model' is required: the loaded model's id or 'default'", code: "missing_required_parameter")
        }
        guard model == b.modelID || settings.modelAliases.contains(model) else {
            throw OpenAIError.modelNotFound(model, available: [b.modelID] + settings.modelAliases)
        }
        let base64: Bool
        switch json["encoding_format"] {
        case nil, is NSNull: base64 = false
        case let f as String where f == "float" || f == "base64": base64 = f == "base64"
        default: throw OpenAIError.invalid("encoding_format", "'encoding_format' must be 'float' or 'base64'")
        }
        let width = b.engine.model.config.embeddingLength
        if let d = json["dimensions"], !(d is NSNull) {
            guard let n = d as? NSNumber, !isJSONBool(d), n.intValue == width, n.doubleValue == Double(width) else {
                throw OpenAIError.invalid("dimensions", "'dimensions' must be \(width), this model's embedding size (it cannot be shortened)")
            }
        }
        let tokenizer = b.formatter.tokenizer
        let bad = OpenAIError.invalid("input", "'input' must be a non-empty string, a list of non-empty strings, a list of token ids, or a list of token-id lists")
        guard let raw = json["input"] else { throw OpenAIError.invalid("input", "'input' is required", code: "missing_required_parameter") }
        let prompts = try CompletionRequest.prompts(raw)
        guard prompts.count <= 2048 else { throw OpenAIError.invalid("input", "'input' holds \(prompts.count) items; at most 2048") }
        var inputs: [[Int32]] = []
        for p in prompts {
            switch p {
            case .text(let t):
                guard !t.isEmpty else { throw bad }
                var ids = tokenizer.encode(t, parseSpecial: false)
                if tokenizer.addsBOS, let bos = tokenizer.bosID { ids.insert(bos, at: 0) }
                inputs.append(ids)
            case .tokens(let ids):
                if let t = ids.first(where: { Int($0) >= tokenizer.vocabularySize }) {
                    throw OpenAIError.invalid("input", "token id \(t) is outside the vocabulary (0..<\(tokenizer.vocabularySize))")
                }
                inputs.append(ids)
            case .chat: throw bad
            }
        }
        for ids in inputs { try checkContext(ids, b, param: "input") }
        let queue = EventQueue()
        var states: [ChoiceState] = []
        for (i, ids) in inputs.enumerated() {
            var state = ChoiceState(tokenizer: tokenizer, stops: [])
            do {
                state.handle = try b.engine.submit(GenerationRequest(promptTokens: ids, maxTokens: 0, sampling: .greedy, stopTokens: [],
                                                                     speculation: false, embedding: true)) { queue.push(i, $0) }
            } catch let e as EngineError {
                for s in states { if let h = s.handle { b.engine.cancel(h) } }
                throw OpenAIError.from(e)
            }
            states.append(state)
        }
        let cancelAll = { for s in states { if let h = s.handle { b.engine.cancel(h) } } }
        responder.onDisconnect { cancelAll() }
        while states.contains(where: { !$0.isDone }) {
            guard let (i, event) = queue.pop(timeout: 1) else {
                if responder.isClientGone {
                    cancelAll()
                    log.status = 499
                    log.error = "client disconnected"
                    return
                }
                continue
            }
            _ = states[i].take(event, stopTokens: [])
        }
        if let failure = states.compactMap(\.failed).first { throw OpenAIError.from(failure) }
        let promptTotal = inputs.reduce(0) { $0 + $1.count }
        metrics.promptTokens.increment(by: Int64(promptTotal))
        log.promptTokens = promptTotal
        let data = states.enumerated().map { i, s -> EmbeddingItem in
            guard base64 else { return EmbeddingItem(index: i, embedding: .floats(s.embedding)) }
            var bytes = Data(capacity: s.embedding.count * 4)
            for f in s.embedding { withUnsafeBytes(of: f.bitPattern.littleEndian) { bytes.append(contentsOf: $0) } }
            return EmbeddingItem(index: i, embedding: .base64(bytes.base64EncodedString()))
        }
        let body = EmbeddingResponse(data: data, model: b.modelID, usage: EmbeddingUsage(promptTokens: promptTotal, totalTokens: promptTotal))
        responder.send(jsonResponse(encodeJSON(body)))
    }

    func tokenizerInfo(_ responder: HTTPResponder) throws {
        let b = try ready()
        let tokenizer = b.formatter.tokenizer
        var info: [String: Any] = [
            "tokenizer_class": "ByteLevelBPE", "model_max_length": b.contextLength,
            "eos_token": tokenizer.eosID.flatMap { tokenizer.tokenText($0) } ?? NSNull(),
            "bos_token": tokenizer.bosID.flatMap { tokenizer.tokenText($0) } ?? NSNull(),
            "pad_token": NSNull(), "add_bos_token": tokenizer.addsBOS,
        ]
        info["chat_template"] = b.formatter.template?.source ?? NSNull()
        responder.send(json(info))
    }
}
