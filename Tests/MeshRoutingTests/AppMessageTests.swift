import MeshIdentity
import MeshRouting
import Testing

@Suite struct AppMessageTests {
    @Test func roundTripsAndRejectsMalformed() {
        let address = PrivateKey().address
        let messages: [AppMessage] = [
            .resolveRequest(query: 7, address: address),
            .resolveReply(query: 7, address: address, hosted: true),
            .gossip([1, 2, 3]),
        ]
        for m in messages { #expect(AppMessage(parsing: m.serialize()) == m) }
        #expect(AppMessage(parsing: []) == nil)
        #expect(AppMessage(parsing: [0x7f]) == nil)
        #expect(AppMessage(parsing: Array(messages[0].serialize().dropLast())) == nil)
        #expect(AppMessage(parsing: messages[1].serialize().dropLast() + [2]) == nil)
        #expect(AppMessage(parsing: [0x20, 0, 0, 0, 0, 0, 0, 0, 1]) == nil)
    }
}
