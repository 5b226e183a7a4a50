import MeshMedia
import MeshWire
import Testing

@Suite struct RTPPacketTests {
    @Test func roundTrip() {
        let packet = RTPPacket(payloadType: 111, marker: true, sequence: 0xfffe, timestamp: 0xdead_beef,
                               ssrc: 0x0102_0304, payload: [1, 2, 3, 4, 5])
        let bytes = packet.serialize()
        #expect(Hex.encode(bytes) == "80effffedeadbeef010203040102030405")
        #expect(RTPPacket(parsing: bytes) == packet)
        let empty = RTPPacket(payloadType: 0, sequence: 1, timestamp: 2, ssrc: 3, payload: [])
        #expect(RTPPacket(parsing: empty.serialize()) == empty)
    }

    @Test func oneByteExtensionsRoundTrip() throws {
        let packet = RTPPacket(payloadType: 112, sequence: 9, timestamp: 960, ssrc: 5, payload: [7],
                               extensions: [1: [0x10, 0x20], 3: [UInt8](repeating: 0xee, count: 16)])
        let bytes = packet.serialize()
        // X set; 0xBEDE; 2 + 1 + 16 + 1 = 20 bytes = 5 words; elements in ID order, zero-padded.
        #expect(Hex.encode(Array(bytes.prefix(1))) == "90")
        #expect(Hex.encode(Array(bytes[12..<20])) == "bede00051110203f")
        #expect(bytes.count == 12 + 4 + 20 + 1)
        #expect(RTPPacket(parsing: bytes) == packet)
    }

    @Test func skipsCSRCAndPaddingKeepsExtension() throws {
        // V=2, P=1, X=1, CC=2; PT 111; then 2 CSRCs, a one-word extension (padding byte, element ID 2 of 2
        // bytes), payload, 3 bytes of padding.
        let hex: String = "b26f0007" + "000003c0" + "0000abcd" + "11111111" + "22222222" + "bede0001" + "0021abcd"
            + "c0ffee" + "000003"
        let bytes = try #require(Hex.decode(hex))
        let packet = try #require(RTPPacket(parsing: bytes))
        #expect(packet.payloadType == 111)
        #expect(!packet.marker)
        #expect(packet.sequence == 7)
        #expect(packet.timestamp == 960)
        #expect(packet.ssrc == 0xabcd)
        #expect(packet.payload == [0xc0, 0xff, 0xee])
        #expect(packet.extensions == [2: [0xab, 0xcd]])
        let twoByte = try #require(Hex.decode("90ef00010000000200000003" + "10000001" + "0102aabb" + "c0"))
        #expect(RTPPacket(parsing: twoByte)?.payload == [0xc0])
        #expect(RTPPacket(parsing: twoByte)?.extensions == [:])
    }

    @Test(arguments: [
        "",  // empty
        "80ef0001000000020000",  // shorter than the fixed header
        "40ef00010000000200000003aa",  // version 1
        "c0ef00010000000200000003aa",  // version 3
        "83ef00010000000200000003aabbccdd",  // 3 CSRCs announced, 1 present
        "90ef00010000000200000003bede0002aabbccdd",  // extension of 2 words, 1 present
        "90ef00010000000200000003bede",  // extension header cut off
        "90ef00010000000200000003bede0001a3bbccdd",  // one-byte element of 4 bytes in a 3-byte rest
        "90ef00010000000200000003bede000105bbccdd",  // one-byte element with the reserved ID 0
        "a0ef00010000000200000003aabb00",  // padding count 0
        "a0ef00010000000200000003aa05",  // padding longer than the payload
        "a0ef00010000000200000003",  // padding bit, no room for the count
    ])
    func rejectsMalformed(hex: String) throws {
        #expect(RTPPacket(parsing: try #require(Hex.decode(hex))) == nil)
    }
}
