import Testing
import Kernels
@Test func moduleLinks() { #expect(Bool(true)) }
