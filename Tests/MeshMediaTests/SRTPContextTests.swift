import MeshMedia
import Testing

@Suite struct SRTPContextTests {
    let key = (0..<30).map { UInt8($0 * 7 + 1) }

    func rtp(sequence: UInt16) -> [UInt8] {
        RTPPacket(payloadType: 111, sequence: sequence, timestamp: UInt32(sequence) * 960, ssrc: 0x1234_5678,
                  payload: Array(repeating: 0x5a, count: 60)).serialize()
    }

    @Test func roundTrip() throws {
        let sender = try SRTPContext(masterKeyAndSalt: key, direction: .outbound)
        let receiver = try SRTPContext(masterKeyAndSalt: key, direction: .inbound)
        for sequence in UInt16(0)..<20 {
            let plain = rtp(sequence: sequence)
            let protected = try sender.protect(plain)
            #expect(protected.count == plain.count + 10)  // HMAC-SHA1-80 tag
            #expect(protected.prefix(12) == plain.prefix(12))  // the header stays clear
            #expect(protected[12..<plain.count] != plain[12...])  // the payload does not
            #expect(receiver.unprotect(protected) == plain)
        }
    }

    @Test func refusesTamperingReplayAndWrongKey() throws {
        let sender = try SRTPContext(masterKeyAndSalt: key, direction: .outbound)
        let receiver = try SRTPContext(masterKeyAndSalt: key, direction: .inbound)
        let first = try sender.protect(rtp(sequence: 1))
        var tampered = first
        tampered[20] ^= 1
        #expect(receiver.unprotect(tampered) == nil)
        #expect(receiver.unprotect(first) != nil)
        #expect(receiver.unprotect(first) == nil)  // replay

        var otherKey = key
        otherKey[0] ^= 0xff
        let stranger = try SRTPContext(masterKeyAndSalt: otherKey, direction: .inbound)
        #expect(stranger.unprotect(try sender.protect(rtp(sequence: 2))) == nil)
        #expect(receiver.unprotect([1, 2, 3]) == nil)
    }

    @Test func refusesBadKeyLength() {
        #expect(throws: MediaError.self) { try SRTPContext(masterKeyAndSalt: [UInt8](repeating: 1, count: 16), direction: .outbound) }
    }
}
