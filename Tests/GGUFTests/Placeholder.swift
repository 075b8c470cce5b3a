import Testing
import GGUF
@Test func moduleLinks() { #expect(Bool(true)) }
