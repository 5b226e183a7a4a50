import Testing
@testable import MeshStun

/// TURN's pieces of the codec (RFC 8656): message types, the requests a client sends, the attributes of the answers,
/// ERROR-CODE and ChannelData. The byte vectors were worked out by hand from the RFCs' layouts (the FINGERPRINTs with
/// Python's zlib.crc32), with RFC 5769's transaction id and address.
@Suite struct TurnMessageTests {
    static let transactionID = StunMessageTests.transactionID
    static let peer = StunMessageTests.ipv4

    /// RFC 8656 §17's types: request, success and error of Allocate, CreatePermission and ChannelBind.
    @Test func methodAndClassMakeTheRFCsTypes() {
        typealias T = StunMessage.MessageType
        let m = StunMessage.Method.self, c = StunMessage.MessageClass.self
        #expect(T(method: m.allocate, messageClass: c.request).rawValue == 0x0003)
        #expect(T(method: m.allocate, messageClass: c.success).rawValue == 0x0103)
        #expect(T(method: m.allocate, messageClass: c.error).rawValue == 0x0113)
        #expect(T(method: m.createPermission, messageClass: c.request).rawValue == 0x0008)
        #expect(T(method: m.createPermission, messageClass: c.success).rawValue == 0x0108)
        #expect(T(method: m.channelBind, messageClass: c.success).rawValue == 0x0109)
        #expect(T(method: m.channelBind, messageClass: c.error).rawValue == 0x0119)
        #expect(T(method: m.binding, messageClass: c.indication) == .bindingIndication)
        #expect(T(method: m.binding, messageClass: c.success) == .bindingSuccess)
        // Every method and class survives the interleaving both ways.
        for method in stride(from: UInt16(0), to: 0x1000, by: 7) {
            for messageClass in UInt8(0)...3 {
                let type = T(method: method, messageClass: messageClass)
                #expect(type.method == method && type.messageClass == messageClass)
            }
        }
    }

    @Test func anAllocateRequestAsksForUDP() throws {
        let request = StunMessage.allocateRequest(transactionID: Self.transactionID)
        #expect(request == StunMessageTests.bytes("""
            00030010 2112a442 b7e7a701 bc34d686 fa87dfae
            00190004 11000000
            80280004 f3996fc8
            """))
        let parsed = try StunMessage(parsing: request)
        #expect(parsed.type.method == StunMessage.Method.allocate && parsed.hadFingerprint)
    }

    /// CHANNEL-NUMBER 0x4000 and XOR-PEER-ADDRESS 192.0.2.1:32853 (the XOR bytes are RFC 5769 §2.2's).
    @Test func aChannelBindRequestMatchesItsBytes() throws {
        let request = StunMessage.channelBindRequest(transactionID: Self.transactionID, channel: 0x4000, peer: Self.peer)
        #expect(request == StunMessageTests.bytes("""
            0009001c 2112a442 b7e7a701 bc34d686 fa87dfae
            000c0004 40000000
            00120008 0001a147 e112a643
            80280004 ccd1d1ab
            """))
        let parsed = try StunMessage(parsing: request)
        #expect(parsed.type == StunMessage.MessageType(rawValue: 0x0009))
        #expect(parsed.channelNumber == 0x4000 && parsed.xorPeerAddress == Self.peer)
    }

    @Test func aCreatePermissionRequestRoundTrips() throws {
        for peer in [Self.peer, StunMessageTests.ipv6] {
            let parsed = try StunMessage(parsing: StunMessage.createPermissionRequest(transactionID: Self.transactionID, peer: peer))
            #expect(parsed.type.method == StunMessage.Method.createPermission && parsed.type.messageClass == StunMessage.MessageClass.request)
            #expect(parsed.xorPeerAddress == peer)
        }
    }

    /// LIFETIME 0 deletes the allocation.
    @Test func aRefreshRequestCarriesItsLifetime() throws {
        for lifetime: UInt32 in [0, 600, 0x0102_0304] {
            let parsed = try StunMessage(parsing: StunMessage.refreshRequest(transactionID: Self.transactionID, lifetime: lifetime))
            #expect(parsed.type == StunMessage.MessageType(rawValue: 0x0004) && parsed.lifetime == lifetime)
        }
        #expect(Array(StunMessage.refreshRequest(transactionID: Self.transactionID, lifetime: 0)[20..<28]) == [0x00, 0x0D, 0, 4, 0, 0, 0, 0])
    }

    /// An Allocate success response as a server writes it: XOR-RELAYED-ADDRESS, LIFETIME, XOR-MAPPED-ADDRESS.
    @Test func anAllocateSuccessGivesItsRelayedAddressAndLifetime() throws {
        let relayed = StunAddress(ip: [127, 0, 0, 1], port: 49_170)!
        let response = StunMessage(
            type: StunMessage.MessageType(method: StunMessage.Method.allocate, messageClass: StunMessage.MessageClass.success),
            transactionID: Self.transactionID, attributes: [
                .init(type: StunMessage.AttributeType.xorRelayedAddress, value: relayed.xorMappedValue(transactionID: Self.transactionID)),
                .init(type: StunMessage.AttributeType.lifetime, value: [0, 0, 0x02, 0x58]),
                .init(type: StunMessage.AttributeType.xorMappedAddress, value: Self.peer.xorMappedValue(transactionID: Self.transactionID)),
            ]).serialized()
        let parsed = try StunMessage(parsing: response)
        #expect(parsed.xorRelayedAddress == relayed && parsed.lifetime == 600 && parsed.xorMappedAddress == Self.peer)
        #expect(parsed.errorCode == nil && parsed.xorPeerAddress == nil && parsed.channelNumber == nil)
    }

    @Test func errorCodesRoundTripAndMalformedOnesAreRefused() throws {
        let mismatch = try #require(StunMessage.ErrorCode(code: 437, reason: "Allocation Mismatch"))
        #expect(mismatch.value == [0, 0, 4, 37] + Array("Allocation Mismatch".utf8))
        #expect(StunMessage.ErrorCode(value: mismatch.value) == mismatch)
        #expect(mismatch.description == "437 Allocation Mismatch")
        let response = StunMessage(type: StunMessage.MessageType(rawValue: 0x0113), transactionID: Self.transactionID,
                                   attributes: [.init(type: StunMessage.AttributeType.errorCode, value: mismatch.value)]).serialized()
        #expect(try StunMessage(parsing: response).errorCode == mismatch)
        #expect(StunMessage.ErrorCode(value: [0, 0, 4]) == nil)
        #expect(StunMessage.ErrorCode(value: [0, 0, 7, 0]) == nil)
        #expect(StunMessage.ErrorCode(value: [0, 0, 2, 99]) == nil)
        #expect(StunMessage.ErrorCode(value: [0, 0, 4, 100]) == nil)
        #expect(StunMessage.ErrorCode(value: [0, 1, 4, 1]) == nil)
        #expect(StunMessage.ErrorCode(value: [0, 0, 4, 1])?.description == "401")
        #expect(StunMessage.ErrorCode(code: 437, reason: "Mismatched allocation: wrong transaction ID \0")?.description
                == "437 Mismatched allocation: wrong transaction ID")
        #expect(StunMessage.ErrorCode(code: 700, reason: "") == nil)
    }

    @Test func channelDataFramesAndParses() {
        let framed = ChannelData.frame(channel: 0x4000, data: [1, 2, 3, 4, 5])
        #expect(framed == [0x40, 0x00, 0x00, 0x05, 1, 2, 3, 4, 5])
        #expect(ChannelData.parse(framed).map { [$0.channel] + $0.data.map(UInt16.init) } == [0x4000, 1, 2, 3, 4, 5])
        // Padding to 4 bytes (as over TCP) is accepted, more is not; nor a short datagram or a channel out of range.
        #expect(ChannelData.parse(framed + [0, 0, 0])?.data == [1, 2, 3, 4, 5])
        #expect(ChannelData.parse(framed + [0, 0, 0, 0]) == nil)
        #expect(ChannelData.parse(Array(framed.dropLast())) == nil)
        #expect(ChannelData.parse([0x40, 0x00, 0x00]) == nil)
        #expect(ChannelData.parse(ChannelData.frame(channel: 0x3FFF, data: [1])) == nil)
        #expect(ChannelData.parse(ChannelData.frame(channel: 0x5000, data: [1])) == nil)
        #expect(ChannelData.parse(ChannelData.frame(channel: 0x4FFF, data: []))?.channel == 0x4FFF)
    }
}
