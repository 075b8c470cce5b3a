import Testing
import Kernels

/// Choosing a kernel set: what this CPU runs, what `auto` picks, and the errors for the rest.
@Suite struct KernelSetTests {
    /// The log says which sets the tests run here and which this CPU cannot run, and why.
    @Test func reportsWhichSetsRunHere() {
        for name in KernelSet.Name.allCases {
            if let missing = KernelSet.missingFeatures(name) {
                print("kernel set \(name): not run on this CPU (\(missing))")
            } else {
                print("kernel set \(name): tested on this CPU")
            }
        }
        #expect(runnableSets.first?.name == .scalar, "the scalar reference runs everywhere")
        #expect(runnableSets.contains(KernelSet.best))
        #expect(KernelSet.best.name != .scalar || simdSets.isEmpty, "auto never picks scalar when a SIMD set runs")
        #expect(KernelSet.current == KernelSet.best, "the process default is the best set until select changes it")
    }

    /// Forcing a set this CPU lacks is a typed error naming the missing features and the sets that run.
    @Test func unsupportedSetsAreTypedErrors() {
        for name in KernelSet.Name.allCases {
            guard let missing = KernelSet.missingFeatures(name) else {
                #expect((try? KernelSet.named(name))?.name == name)
                continue
            }
            #expect(!missing.isEmpty)
            do {
                _ = try KernelSet.named(name)
                Issue.record("\(name) was allowed although this CPU lacks \(missing)")
            } catch let error as KernelError {
                #expect(error == .kernelSetUnsupported(name.rawValue, missing: missing, available: runnableSets.map(\.name.rawValue)))
                #expect(error.description.contains(missing) && error.description.contains("auto"), "\(error)")
            } catch {
                Issue.record("unexpected error \(error)")
            }
        }
    }

    @Test func choicesParse() throws {
        #expect(try KernelChoice(parsing: "auto") == .auto)
        #expect(try KernelChoice(parsing: "AVX2") == .named(.avx2))
        #expect(try KernelChoice(parsing: "neon") == .named(.neon))
        #expect(throws: KernelError.unknownKernelSet("sse4")) { try KernelChoice(parsing: "sse4") }
        #expect(KernelError.unknownKernelSet("sse4").description.contains("auto, scalar, avx2, avx512, neon"))
    }
}
