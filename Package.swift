// swift-tools-version:6.0
import PackageDescription

/// Release builds of the hot targets skip overflow and exclusivity checks: the kernels and the
/// forward pass check their shapes once with `precondition` at entry instead.
let hotLoopSettings: [SwiftSetting] = [
    .unsafeFlags(["-Ounchecked", "-enforce-exclusivity=unchecked"], .when(configuration: .release)),
]

let package = Package(
    name: "CastServe",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "cast-serve", targets: ["cast-serve"]),
        .executable(name: "cast-bench", targets: ["cast-bench"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.0.0"),
    ],
    targets: [
        .target(
            name: "CKernels",
            cSettings: [.unsafeFlags(["-O3", "-fno-strict-aliasing", "-ffp-contract=off"])]
        ),
        .target(name: "GGUF", exclude: ["README.md"]),
        .target(
            name: "Kernels",
            dependencies: ["CKernels"],
            exclude: ["README.md"],
            swiftSettings: hotLoopSettings,
            linkerSettings: [.linkedLibrary("openblas")]
        ),
        // Text to token ids and back (byte-level BPE, SentencePiece), incremental UTF-8-safe decoding.
        .target(name: "Tokenizer", dependencies: ["GGUF"], exclude: ["README.md"]),
        // JSON text as json.dumps writes it: the one writer ChatTemplate and Grammar share.
        .target(name: "JSONText", exclude: ["README.md"]),
        // Chat templates (the Jinja subset real GGUF templates use) and PromptFormatter: messages to prompt tokens.
        .target(name: "ChatTemplate", dependencies: ["GGUF", "Tokenizer", "JSONText"], exclude: ["README.md"]),
        .target(name: "Model", dependencies: ["GGUF", "Kernels"], exclude: ["README.md"],
                swiftSettings: hotLoopSettings),
        .target(name: "Speculation", dependencies: ["Model", "Kernels", "GGUF", "Grammar"], exclude: ["README.md"]),
        // Grammars for constrained decoding: GBNF, JSON schema -> grammar, token masks over a vocabulary trie.
        .target(name: "Grammar", dependencies: ["JSONText"], exclude: ["README.md"], swiftSettings: hotLoopSettings),
        .target(name: "Engine", dependencies: ["Model", "Speculation", "Grammar"], exclude: ["README.md"]),
        .systemLibrary(name: "COpenSSL", path: "Sources/COpenSSL", providers: [.apt(["libssl-dev"])]),
        .systemLibrary(name: "CZlib", path: "Sources/CZlib", providers: [.apt(["zlib1g-dev"])]),
        .target(name: "HTTP", dependencies: ["COpenSSL", "CZlib"], exclude: ["README.md"]),
        // The page at GET / (chat and the engine view): HTML, CSS and JS embedded in the binary.
        .target(
            name: "WebPage",
            exclude: ["README.md"],
            resources: [
                .embedInCode("Resources/index.html"), .embedInCode("Resources/app.js"),
                .embedInCode("Resources/app.css"), .embedInCode("Resources/favicon.svg"),
            ]
        ),
        .target(
            name: "OpenAI",
            dependencies: [
                "HTTP", "Engine", "Model", "Tokenizer", "ChatTemplate", "Grammar", "WebPage",
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Logging", package: "swift-log"),
            ],
            exclude: ["README.md"],
            // Compiled for testing in every configuration: OpenAITests imports it @testable, and so
            // one `swift build -c release --build-tests` serves both the binaries and `swift test
            // --skip-build` (`make test`); otherwise `swift test` recompiles every module.
            swiftSettings: [.unsafeFlags(["-enable-testing"])]
        ),
        .executableTarget(
            name: "cast-serve",
            dependencies: [
                "GGUF", "Model", "Tokenizer", "ChatTemplate", "Engine", "HTTP", "OpenAI", "Speculation", "Kernels", "COpenSSL",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .executableTarget(
            name: "cast-bench",
            dependencies: [
                "GGUF", "Model", "ChatTemplate", "Engine", "Speculation", "Kernels",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        // Heap allocation counting for the steady-state decode test (tests/test_allocations.py).
        .target(name: "AllocationCounter"),
        .executableTarget(name: "alloc-probe", dependencies: ["AllocationCounter", "Engine", "Model", "Kernels", "GGUF", "Speculation"]),
        // Fuzz targets (fuzz/README.md): ordinary builds make corpus replayers; fuzz/run.sh builds them
        // with --sanitize=fuzzer -Xswiftc -parse-as-library -Xswiftc -DFUZZING.
        .target(name: "FuzzSupport", exclude: ["README.md"]),
        .executableTarget(name: "fuzz-http-parser", dependencies: ["FuzzSupport", "HTTP"]),
        .executableTarget(name: "fuzz-request-json", dependencies: ["FuzzSupport", "OpenAI"]),
        .testTarget(name: "GGUFTests", dependencies: ["GGUF"]),
        .testTarget(name: "KernelsTests", dependencies: ["Kernels"]),
        .testTarget(name: "ModelTests", dependencies: ["Model", "Kernels", "GGUF", "Tokenizer", "ChatTemplate", "Grammar"]),
        .testTarget(name: "HTTPTests", dependencies: ["HTTP"]),
        .testTarget(name: "EngineTests", dependencies: ["Engine", "Speculation", "Grammar", "Model", "Kernels", "GGUF", "ChatTemplate"]),
        .testTarget(name: "GrammarTests", dependencies: ["Grammar"]),
        .testTarget(name: "OpenAITests", dependencies: ["OpenAI", "Engine", "Model", "Tokenizer", "Grammar"]),
        .testTarget(name: "SpeculationTests", dependencies: ["Speculation", "Model", "Kernels", "GGUF", "ChatTemplate"]),
    ],
    swiftLanguageModes: [.v5]
)
