import MeshWire
import Testing
@testable import MeshStun

/// The sample messages of RFC 5769 ("Test Vectors for STUN"), copied from its text, and malformed variants.
@Suite struct StunMessageTests {
    static func bytes(_ hex: String) -> [UInt8] {
        let digits = hex.filter(\.isHexDigit)
        return stride(from: 0, to: digits.count, by: 2).map {
            let start = digits.index(digits.startIndex, offsetBy: $0)
            return UInt8(digits[start..<digits.index(start, offsetBy: 2)], radix: 16)!
        }
    }

    static let transactionID = bytes("b7e7a701 bc34d686 fa87dfae")

    /// RFC 5769 §2.1: a Binding Request with SOFTWARE, PRIORITY, ICE-CONTROLLED, USERNAME, MESSAGE-INTEGRITY and
    /// FINGERPRINT (the USERNAME "evtj:h6vY" is padded with spaces, as the RFC's sample does).
    static let sampleRequest = bytes("""
        00010058 2112a442 b7e7a701 bc34d686 fa87dfae
        80220010 5354554e 20746573 7420636c 69656e74
        00240004 6e0001ff
        80290008 932ff9b1 51263b36
        00060009 6576746a 3a683676 59202020
        00080014 9aeaa70c bfd8cb56 781ef2b5 b2d3f249 c1b571a2
        80280004 e57a3bcf
        """)

    /// RFC 5769 §2.2: the response carrying 192.0.2.1:32853.
    static let sampleIPv4Response = bytes("""
        0101003c 2112a442 b7e7a701 bc34d686 fa87dfae
        8022000b 74657374 20766563 746f7220
        00200008 0001a147 e112a643
        00080014 2b91f599 fd9e90c3 8c7489f9 2af9ba53 f06be7d7
        80280004 c07d4c96
        """)

    /// RFC 5769 §2.3: the response carrying [2001:db8:1234:5678:11:2233:4455:6677]:32853.
    static let sampleIPv6Response = bytes("""
        01010048 2112a442 b7e7a701 bc34d686 fa87dfae
        8022000b 74657374 20766563 746f7220
        00200014 0002a147 0113a9fa a5d3f179 bc25f4b5 bed2b9d9
        00080014 a382954e 4be67bf1 1784c97c 8292c275 bfe3ed41
        80280004 c8fb0b4c
        """)

    static let ipv4 = StunAddress(ip: [192, 0, 2, 1], port: 32853)!
    static let ipv6 = StunAddress(ip: bytes("20010db8 12345678 00112233 44556677"), port: 32853)!

    @Test func crc32MatchesTheStandardCheckValue() {
        #expect(CRC32.checksum(Array("123456789".utf8)) == 0xCBF4_3926)
    }

    @Test func theSampleRequestParsesWithItsFingerprint() throws {
        let message = try StunMessage(parsing: Self.sampleRequest)
        #expect(message.type == .bindingRequest)
        #expect(message.type.method == 1 && message.type.messageClass == 0)
        #expect(message.transactionID == Self.transactionID)
        #expect(message.hadFingerprint)
        #expect(message.attributes.map(\.type) == [0x8022, 0x0024, 0x8029, 0x0006, 0x0008])
        #expect(message.attribute(StunMessage.AttributeType.username) == Array("evtj:h6vY".utf8))
        #expect(message.attribute(StunMessage.AttributeType.software) == Array("STUN test client".utf8))
    }

    @Test func theSampleResponsesCarryTheirMappedAddresses() throws {
        let v4 = try StunMessage(parsing: Self.sampleIPv4Response)
        #expect(v4.type == .bindingSuccess && v4.type.messageClass == 2)
        #expect(v4.hadFingerprint)
        #expect(v4.xorMappedAddress == Self.ipv4)
        #expect(v4.attribute(StunMessage.AttributeType.software) == Array("test vector".utf8))
        let v6 = try StunMessage(parsing: Self.sampleIPv6Response)
        #expect(v6.xorMappedAddress == Self.ipv6)
        #expect(Self.ipv6.description == "[2001:db8:1234:5678:11:2233:4455:6677]:32853")
    }

    /// The encoder writes the RFC's XOR-MAPPED-ADDRESS bytes, and the samples re-serialize to themselves except for
    /// padding (the RFC pads SOFTWARE with a space, the encoder with zeros), fingerprint recomputed.
    @Test func theEncoderReproducesTheSamples() throws {
        for (sample, address) in [(Self.sampleIPv4Response, Self.ipv4), (Self.sampleIPv6Response, Self.ipv6)] {
            let parsed = try StunMessage(parsing: sample)
            #expect(parsed.attribute(StunMessage.AttributeType.xorMappedAddress) == address.xorMappedValue(transactionID: Self.transactionID))
            let again = parsed.serialized()
            #expect(again.count == sample.count)
            #expect(try StunMessage(parsing: again) == parsed)
            var zeroPadded = sample
            zeroPadded[35] = 0
            #expect(Array(again.prefix(sample.count - 4)) == Array(zeroPadded.prefix(sample.count - 4)))
        }
        // The request's SOFTWARE fills its 16 bytes and USERNAME's padding is spaces: only the latter changes.
        let request = try StunMessage(parsing: Self.sampleRequest)
        #expect(try StunMessage(parsing: request.serialized()) == request)
    }

    @Test func aBindingExchangeRoundTrips() throws {
        let request = StunMessage.bindingRequest(transactionID: Self.transactionID)
        #expect(request.count == 28)
        let response = StunMessage.bindingSuccess(transactionID: Self.transactionID, mapped: Self.ipv4)
        #expect(response.count == 40)
        let parsed = try StunMessage(parsing: response)
        #expect(parsed.type == .bindingSuccess && parsed.hadFingerprint && parsed.xorMappedAddress == Self.ipv4)
        #expect(try StunMessage(parsing: StunMessage.bindingSuccess(transactionID: Self.transactionID, mapped: Self.ipv6)).xorMappedAddress == Self.ipv6)
    }

    @Test func malformedMessagesAreRefused() {
        func refused(_ bytes: [UInt8]) -> StunError.Kind? {
            do {
                _ = try StunMessage(parsing: bytes)
                return nil
            } catch {
                return error.kind
            }
        }
        let good = Self.sampleIPv4Response
        #expect(refused(Array(good.prefix(19))) == .tooShort)
        #expect(refused([0x40] + good.dropFirst()) == .notStun)
        // Without the cookie it is an RFC 3489 message: a 128-bit id, and FINGERPRINT is an attribute like others.
        var noCookie = good
        noCookie[4] = 0x22
        let classic = try? StunMessage(parsing: noCookie)
        #expect(classic?.isClassic == true && classic?.transactionID.count == 16 && classic?.xorMappedAddress == nil)
        #expect(classic?.attributes.last?.type == StunMessage.AttributeType.fingerprint)
        var oddLength = good
        oddLength[3] = 0x3d
        #expect(refused(oddLength) == .badLength)
        #expect(refused(good + [0, 0, 0, 0]) == .badLength)
        var badFingerprint = good
        badFingerprint[good.count - 1] ^= 1
        #expect(refused(badFingerprint) == .badFingerprint)
        var flipped = good
        flipped[30] ^= 0x80
        #expect(refused(flipped) == .badFingerprint)
        // An attribute claiming more bytes than the message has.
        var overrun = StunMessage(type: .bindingRequest, transactionID: Self.transactionID).serialized(fingerprint: false)
        overrun[3] = 8
        overrun += [0x80, 0x22, 0x00, 0x10, 1, 2, 3, 4]
        #expect(refused(overrun) == .truncatedAttribute)
        // A value of 5 bytes without its 3 bytes of padding.
        var unpadded = StunMessage(type: .bindingRequest, transactionID: Self.transactionID).serialized(fingerprint: false)
        unpadded[3] = 12
        unpadded += [0x80, 0x22, 0x00, 0x05, 1, 2, 3, 4, 5, 0, 0, 0]
        #expect(refused(unpadded) == nil)
        unpadded[3] = 8
        #expect(refused(Array(unpadded.prefix(28))) == .truncatedAttribute)
        // Anything after FINGERPRINT.
        var trailing = StunMessage.bindingRequest(transactionID: Self.transactionID)
        trailing[3] += 8
        trailing += [0x80, 0x22, 0x00, 0x04, 1, 2, 3, 4]
        #expect(refused(trailing) == .attributeAfterFingerprint)
        #expect(refused([UInt8](repeating: 0, count: StunMessage.maxBytes + 1)) == .tooLong)
    }

    /// libnice 0.1.21's gathering request as captured here: 20 bytes, no cookie. The answer carries MAPPED-ADDRESS
    /// with the whole 128-bit id and no FINGERPRINT (RFC 5389 §12.2).
    @Test func anRFC3489RequestGetsAClassicAnswer() throws {
        let request = Self.bytes("00010000 b344e571 73d5379a 492fda89 06c05600")
        let parsed = try StunMessage(parsing: request)
        #expect(parsed.isClassic && parsed.type == .bindingRequest && parsed.attributes.isEmpty)
        let answer = StunMessage.bindingSuccess(transactionID: parsed.transactionID, mapped: Self.ipv4)
        #expect(answer == Self.bytes("0101000c b344e571 73d5379a 492fda89 06c05600 00010008 00018055 c0000201"))
        let back = try StunMessage(parsing: answer)
        #expect(back.mappedAddress == Self.ipv4 && back.xorMappedAddress == nil && !back.hadFingerprint)
    }

    @Test func aBadXorMappedAddressIsNotAnAddress() {
        #expect(StunAddress(xorMappedValue: [0, 3, 0, 0, 1, 2, 3, 4], transactionID: Self.transactionID) == nil)
        #expect(StunAddress(xorMappedValue: [0, 1, 0, 0, 1, 2, 3], transactionID: Self.transactionID) == nil)
        #expect(StunAddress(xorMappedValue: [0, 2, 0, 0, 1, 2, 3, 4], transactionID: Self.transactionID) == nil)
    }

    /// Every prefix and every single-byte change of the samples parses or is refused, never traps.
    @Test func truncationsAndBitFlipsNeverTrap() {
        for sample in [Self.sampleRequest, Self.sampleIPv4Response, Self.sampleIPv6Response] {
            for n in 0...sample.count { _ = try? StunMessage(parsing: Array(sample.prefix(n))) }
            for i in sample.indices {
                var changed = sample
                changed[i] ^= 0xFF
                _ = try? StunMessage(parsing: changed)
            }
        }
    }
}
