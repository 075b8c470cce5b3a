import Testing
import Kernels
import Model

/// The configured key/value storage: names, the head-dimension check, and the kernels' row layout.
struct KVCacheTypeTests {
    @Test func namesParseAndTheHeadDimensionIsChecked() throws {
        #expect(try KVCacheType(parsing: "Q8_0") == .q8_0)
        #expect(throws: ModelError.unknownKVCacheType("q4_0")) { try KVCacheType(parsing: "q4_0") }
        #expect(ModelError.unknownKVCacheType("q4_0").description.contains("f32, f16, q8_0"))
        #expect(throws: ModelError.kvCacheTypeNeedsBlocks(type: "q8_0", headDimension: 80)) {
            try KVCacheType.q8_0.validate(headDimension: 80)
        }
        try KVCacheType.f16.validate(headDimension: 80)
    }

    @Test(arguments: KVCacheType.allCases)
    func eachTypeNamesItsOwnRowLayout(type: KVCacheType) {
        let bytes: [KVCacheType: Int] = [.f32: 256, .f16: 128, .q8_0: 68]
        #expect(type.rowFormat.rowBytes(values: 64) == bytes[type])
    }
}
