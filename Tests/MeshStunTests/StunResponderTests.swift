import Testing
@testable import MeshStun

@Suite struct StunResponderTests {
    static let client = StunAddress(ip: [198, 18, 0, 7], port: 40_000)!
    static let txid: [UInt8] = Array(1...12)

    @Test func aBindingRequestIsAnsweredWithTheSourceAddress() throws {
        var responder = StunResponder(nowMs: 0)
        let verdict = responder.receive(StunMessage.bindingRequest(transactionID: Self.txid), from: Self.client, nowMs: 0)
        guard case .answer(let bytes) = verdict else {
            Issue.record("not answered: \(verdict)")
            return
        }
        let response = try StunMessage(parsing: bytes)
        #expect(response.type == .bindingSuccess && response.transactionID == Self.txid && response.xorMappedAddress == Self.client)
        // A request without FINGERPRINT, or with SOFTWARE (comprehension-optional), is answered too.
        let plain = StunMessage(type: .bindingRequest, transactionID: Self.txid).serialized(fingerprint: false)
        #expect(responder.receive(plain, from: Self.client, nowMs: 0) != .drop(.malformed))
        let software = StunMessage(type: .bindingRequest, transactionID: Self.txid,
                                   attributes: [.init(type: StunMessage.AttributeType.software, value: Array("libnice".utf8))]).serialized()
        guard case .answer = responder.receive(software, from: Self.client, nowMs: 0) else {
            Issue.record("SOFTWARE refused")
            return
        }
        #expect(responder.counters.requests == 3 && responder.counters.answered == 3)
    }

    /// RFC 3489 requests (libnice's, Debian's `stun`): answered with MAPPED-ADDRESS, also with a CHANGE-REQUEST that
    /// asks for no change; RESPONSE-ADDRESS (answer elsewhere) is refused.
    @Test func classicRequestsAreAnsweredWithMappedAddress() throws {
        var responder = StunResponder(nowMs: 0)
        let id = Array(1...16).map(UInt8.init)
        for attributes in [[], [StunMessage.Attribute(type: StunMessage.AttributeType.changeRequest, value: [0, 0, 0, 0])]] {
            let request = StunMessage(type: .bindingRequest, transactionID: id, attributes: attributes).serialized()
            guard case .answer(let bytes) = responder.receive(request, from: Self.client, nowMs: 0) else {
                Issue.record("not answered: \(attributes)")
                continue
            }
            let response = try StunMessage(parsing: bytes)
            #expect(response.isClassic && response.transactionID == id && response.mappedAddress == Self.client)
        }
        let elsewhere = StunMessage(type: .bindingRequest, transactionID: id,
                                    attributes: [.init(type: 0x0002, value: [0, 1, 0, 80, 10, 0, 0, 1])]).serialized()
        #expect(responder.receive(elsewhere, from: Self.client, nowMs: 0) == .drop(.unknownAttribute))
    }

    @Test func everythingElseIsDroppedAndCounted() {
        var responder = StunResponder(nowMs: 0)
        #expect(responder.receive([0, 1, 0, 0], from: Self.client, nowMs: 0) == .drop(.malformed))
        #expect(responder.receive(StunMessageTests.sampleIPv4Response, from: Self.client, nowMs: 0) == .drop(.notBindingRequest))
        let indication = StunMessage(type: .bindingIndication, transactionID: Self.txid).serialized()
        #expect(responder.receive(indication, from: Self.client, nowMs: 0) == .drop(.notBindingRequest))
        // RFC 5769's request carries USERNAME, MESSAGE-INTEGRITY and PRIORITY: the node has no credentials.
        #expect(responder.receive(StunMessageTests.sampleRequest, from: Self.client, nowMs: 0) == .drop(.unknownAttribute))
        let changeRequest = StunMessage(type: .bindingRequest, transactionID: Self.txid,
                                        attributes: [.init(type: 0x0003, value: [0, 0, 0, 6])]).serialized()
        #expect(responder.receive(changeRequest, from: Self.client, nowMs: 0) == .drop(.unknownAttribute))
        let c = responder.counters
        #expect(c.malformed == 1 && c.notBindingRequest == 2 && c.unknownAttribute == 2 && c.answered == 0 && c.requests == 2)
    }

    /// One host gets its burst, then 10 answers a second; another host is not affected; the total caps everyone.
    @Test func answersAreLimitedPerHostAndInTotal() {
        var config = StunResponder.Config()
        config.total = .init(perSecond: 100, burst: 50)
        config.maxTracked = 64
        var responder = StunResponder(config: config, nowMs: 0)
        let request = StunMessage.bindingRequest(transactionID: Self.txid)
        let answered = (0..<100).filter { _ in responder.receive(request, from: Self.client, nowMs: 0) != .drop(.rateLimited) }.count
        #expect(answered == 20)
        let other = StunAddress(ip: [198, 18, 0, 8], port: 1)!
        #expect(responder.receive(request, from: other, nowMs: 0) != .drop(.rateLimited))
        #expect((0..<10).filter { _ in responder.receive(request, from: Self.client, nowMs: 1_000) != .drop(.rateLimited) }.count == 10)
        // Many hosts: the total's 50-token burst is spent by now.
        let many = (0..<200).filter { i in
            responder.receive(request, from: StunAddress(ip: [10, 0, UInt8(i / 256), UInt8(i % 256)], port: 1)!, nowMs: 1_000) != .drop(.rateLimited)
        }.count
        #expect(many < 60)
        #expect(responder.trackedHosts <= 64 + 1)
        #expect(responder.counters.rateLimited == 100 - 20 + 200 - many)
    }
}
