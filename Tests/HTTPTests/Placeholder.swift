import Testing
import HTTP
@Test func moduleLinks() { #expect(Bool(true)) }
