import Engine
import Foundation
import HTTP
import Model

/// POST /v1/embeddings (every input runs through the engine as a prompt with no completion: the
/// mean of its rows' final hidden states, L2-normalised) and GET /tokenizer_info (vLLM's
/// tokenizer description, which lm-evaluation-harness's remote tokenizer reads).
extension OpenAIService {
    func embeddings(_ request: HTTPRequest, _ responder: HTTPResponder, _ log: inout RequestLog, start: ContinuousClock.Instant) throws {
        let b = try ready()
        let json = try JSONFields.body(request.body)
        try json.refuseUnknown(["model", "input", "encoding_format", "dimensions", "user"], route: "/v1/embeddings")
        guard let model = try json.string("model"), !model.isEmpty else {
            throw OpenAIError.invalid("model", "'model' is required: the loaded model's id or 'default'", code: "missing_required_parameter")
        }
        try checkModel(model, b)
        let base64: Bool
        switch json["encoding_format"] {
        case nil: base64 = false
        case .string(let f)? where f == "float" || f == "base64": base64 = f == "base64"
        default: throw OpenAIError.invalid("encoding_format", "'encoding_format' must be 'float' or 'base64'")
        }
        let width = b.engine.model.config.embeddingLength
        if let d = json["dimensions"] {
            guard JSONFields.integer(d) == width else {
                throw OpenAIError.invalid("dimensions", "'dimensions' must be \(width), this model's embedding size (it cannot be shortened)")
            }
        }
        _ = try json.string("user")
        let tokenizer = b.formatter.tokenizer
        let bad = OpenAIError.invalid("input", "'input' must be a non-empty string, a list of non-empty strings, a list of token ids, or a list of token-id lists")
        guard let raw = json["input"] else { throw OpenAIError.invalid("input", "'input' is required", code: "missing_required_parameter") }
        let prompts = try CompletionRequest.prompts(raw, param: "input")
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
        let generation = GenerationRequest(promptTokens: [], maxTokens: 0, sampling: .greedy, stopTokens: [], speculation: false, embedding: true)
        let run = try startRun(RunRequest(prompts: inputs, promptParam: "input", generation: generation), b)
        let outcome = run.drive(responder) { _ in }
        record(run, outcome, &log, start: start)
        switch outcome {
        case .clientGone: return
        case .failed(let failure): throw OpenAIError.from(failure)
        case .completed: break
        }
        let promptTotal = run.usage.promptTokens
        let data = run.choices.enumerated().map { i, s -> EmbeddingItem in
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
        let info = TokenizerInfoBody(modelMaxLength: b.contextLength, eosToken: tokenizer.eosID.flatMap { tokenizer.tokenText($0) },
                                     bosToken: tokenizer.bosID.flatMap { tokenizer.tokenText($0) }, padToken: nil,
                                     addBosToken: tokenizer.addsBOS, chatTemplate: b.formatter.template?.source)
        responder.send(json(info))
    }
}
