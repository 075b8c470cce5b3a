import Testing
import Model
@Test func moduleLinks() { #expect(Bool(true)) }
