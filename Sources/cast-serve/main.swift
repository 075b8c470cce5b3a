import ArgumentParser
import Foundation
import GGUF
import Model
import Engine
import Tokenizer
import ChatTemplate

/// cast-serve: the CastServe executable. stdout carries only results; progress and logs go to stderr.
struct CastServe: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cast-serve",
        abstract: "An OpenAI-compatible LLM inference server with cost-aware speculative decoding.",
        subcommands: [Serve.self, Generate.self, Tokenize.self, Detokenize.self],
        defaultSubcommand: Serve.self)
}

/// Writes a progress or log line to stderr.
func note(_ message: String) {
    FileHandle.standardError.write(Data(("cast-serve: " + message + "\n").utf8))
}

/// The `--model` option every subcommand shares.
struct ModelOption: ParsableArguments {
    @Option(help: "Path to a llama-family GGUF model (default: the model `make model` fetches).")
    var model = "models/SmolLM2-135M-Instruct.Q4_1.gguf"

    func open() throws -> GGUFFile { try GGUFFile(path: model) }
}

extension CastServe {
    /// One-shot generation, streamed to stdout as tokens come.
    struct Generate: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Generate a continuation of a prompt and print it.")

        @OptionGroup var modelOption: ModelOption

        @Option(help: "The prompt text.")
        var prompt: String

        @Flag(help: "Render the prompt as one user message through the model's chat template.")
        var chat = false

        @Option(help: "A system message (with --chat).")
        var system: String?

        @Option(help: "Most tokens to generate.")
        var maxTokens = 256

        @Option(help: "Sampling temperature; 0 is greedy.")
        var temperature: Double = 0

        @Option(help: "Keep only the K most likely tokens (0 = off).")
        var topK = 0

        @Option(help: "Nucleus sampling mass (1 = off).")
        var topP: Double = 1

        @Option(help: "Seed for reproducible sampling.")
        var seed: UInt64?

        @Option(help: "Compute threads (default: all cores).")
        var threads = ProcessInfo.processInfo.activeProcessorCount

        func validate() throws {
            guard maxTokens > 0 else { throw ValidationError("--max-tokens must be at least 1") }
            guard temperature >= 0 && temperature <= 5 else { throw ValidationError("--temperature must be between 0 and 5") }
            guard topP > 0 && topP <= 1 else { throw ValidationError("--top-p must be in (0, 1]") }
            guard topK >= 0 else { throw ValidationError("--top-k must be 0 (off) or positive") }
            guard system == nil || chat else { throw ValidationError("--system needs --chat") }
        }

        func run() throws {
            let file = try modelOption.open()
            let clock = ContinuousClock()
            let t0 = clock.now
            let model = try Transformer(file: file, threads: threads, maxStepRows: 512, maxLogitRows: 1, maxContext: 4096)
            let formatter = try PromptFormatter(file: file)
            note(String(format: "loaded %@ (%@, %d layers) in %.2f s", modelOption.model, model.config.name,
                        model.config.layerCount, (clock.now - t0).seconds))
            var messages: [ChatMessage] = []
            if let system { messages.append(ChatMessage(role: "system", content: system)) }
            messages.append(ChatMessage(role: "user", content: prompt))
            let tokens = chat ? try formatter.chatTokens(messages) : formatter.completionTokens(prompt)
            let engine = Engine(model: model, configuration: EngineConfiguration(slots: 1, contextLength: 4096, maxWaiting: 0,
                                                                                 prefillChunk: 512))
            defer { engine.shutdown() }
            let request = GenerationRequest(
                promptTokens: tokens, maxTokens: maxTokens,
                sampling: SamplingParameters(temperature: Float(temperature), topK: topK, topP: Float(topP), seed: seed),
                stopTokens: formatter.stopTokens)
            let printer = TokenPrinter(formatter: formatter)
            let stats = try engine.generate(request) { printer.append($0) }
            printer.finish()
            note(String(format: "prompt %d tokens, %.1f tok/s; completion %d tokens, %.1f tok/s; finish: %@",
                        stats.promptTokens, Double(stats.promptTokens) / stats.prefillSeconds, stats.completionTokens,
                        Double(max(stats.completionTokens - 1, 0)) / max(stats.decodeSeconds, 1e-9), stats.finishReason.rawValue))
        }
    }

    /// Prints the token ids of a text as a JSON array.
    struct Tokenize: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print the token ids of TEXT as a JSON array (special tokens parsed).")

        @OptionGroup var modelOption: ModelOption

        @Argument(help: "The text to tokenize.")
        var text: String

        func run() throws {
            let tokenizer = try Tokenizer(gguf: modelOption.open())
            let ids = tokenizer.encode(text, parseSpecial: true)
            print("[" + ids.map(String.init).joined(separator: ",") + "]")
        }
    }

    /// Prints the text of token ids.
    struct Detokenize: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print the text of token IDS (a JSON array or comma/space-separated).")

        @OptionGroup var modelOption: ModelOption

        @Argument(help: "Token ids, e.g. '[504, 3575]' or '504 3575'.")
        var ids: [String]

        func run() throws {
            let tokenizer = try Tokenizer(gguf: modelOption.open())
            let joined = ids.joined(separator: " ")
            let parts = joined.split(whereSeparator: { "[], \n\t".contains($0) })
            let tokens = try parts.map { part -> Int32 in
                guard let id = Int32(part), id >= 0, Int(id) < tokenizer.vocabularySize else {
                    throw ValidationError("'\(part)' is not a token id (0..<\(tokenizer.vocabularySize))")
                }
                return id
            }
            print(tokenizer.decode(tokens))
        }
    }
}

/// Writes generated text to stdout as tokens arrive (stop tokens are not printed). Called on the
/// engine thread, one token at a time.
final class TokenPrinter: @unchecked Sendable {
    private let stopTokens: Set<Int32>
    private var decoder: Tokenizer.StreamingDecoder
    private let out = FileHandle.standardOutput

    init(formatter: PromptFormatter) {
        stopTokens = formatter.stopTokens
        decoder = Tokenizer.StreamingDecoder(tokenizer: formatter.tokenizer, skipSpecial: true)
    }

    func append(_ token: Int32) {
        guard !stopTokens.contains(token) else { return }
        let text = decoder.append(token)
        if !text.isEmpty { out.write(Data(text.utf8)) }
    }

    /// Writes what the decoder still holds and a newline.
    func finish() { out.write(Data((decoder.finish() + "\n").utf8)) }
}

CastServe.main()
