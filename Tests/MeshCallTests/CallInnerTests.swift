import MeshCall
import Testing

@Suite struct CallInnerTests {
    @Test func callBytesInsideAChainRoundTrip() {
        for inner in [CallInner.signal([1, 2, 3]), .media(Array(repeating: 9, count: 100))] {
            #expect(CallInner(parsing: inner.serialize()) == inner)
        }
        #expect(CallInner(parsing: []) == nil)
        #expect(CallInner(parsing: [0x20]) == nil)
        #expect(CallInner(parsing: [0x7f, 1]) == nil)
        #expect(CallInner(parsing: [0x20] + Array(repeating: 1, count: 1_401)) == nil)
    }
}
