import MeshWire

/// A STUN message (RFC 8489, which RFC 5389 preceded with the same wire format): a 20-byte header — two zero
/// bits, the 14-bit type, the length of the attributes (a multiple of 4), the magic cookie 0x2112A442 and a 96-bit
/// transaction id — then attributes as type, length and value padded to 4 bytes. Parsing is strict: a message
/// that breaks any of these rules is refused as a whole (`StunError`), never half-read.
///
/// A header without the magic cookie is an RFC 3489 ("classic STUN") message, whose 128-bit transaction id takes
/// the cookie's place: `transactionID` then has 16 bytes (`isClassic`). libnice 0.1.21 gathers server-reflexive
/// candidates with such requests (checked here: a 20-byte Binding Request without the cookie), and reads the
/// answer's MAPPED-ADDRESS, so the node must answer them (RFC 5389 §12.2). Classic messages have no FINGERPRINT.
public struct StunMessage: Sendable, Equatable {
    public static let magicCookie: UInt32 = 0x2112_A442
    public static let headerBytes = 20
    /// The largest message the codec reads or writes. RFC 8489 §6.2.1 lets UDP messages be as large as the path
    /// allows but advises staying under 576 bytes; anything a binding exchange needs fits easily.
    public static let maxBytes = 1_280
    /// FINGERPRINT's value is CRC-32 of the message before it, XORed with this ("STUN", RFC 8489 §14.7).
    public static let fingerprintXor: UInt32 = 0x5354_554E

    /// The 14-bit message type: a method and a class interleaved (RFC 8489 §5).
    public struct MessageType: Sendable, Hashable, CustomStringConvertible {
        public let rawValue: UInt16
        public init(rawValue: UInt16) { self.rawValue = rawValue & 0x3FFF }

        public static let bindingRequest = MessageType(rawValue: 0x0001)
        public static let bindingIndication = MessageType(rawValue: 0x0011)
        public static let bindingSuccess = MessageType(rawValue: 0x0101)
        public static let bindingError = MessageType(rawValue: 0x0111)

        /// The type of `method` (12 bits) in class `messageClass` (0–3): the class's two bits go between the method's
        /// (RFC 8489 §5: M11–M7, C1, M6–M4, C0, M3–M0).
        public init(method: UInt16, messageClass: UInt8) {
            precondition(method < 0x1000 && messageClass < 4, "a STUN method has 12 bits, a class 2")
            let c = UInt16(messageClass)
            self.init(rawValue: (method & 0x000F) | (method & 0x0070) << 1 | (method & 0x0F80) << 2 | (c & 1) << 4 | (c & 2) << 7)
        }

        /// The method (12 bits; Binding is 1).
        public var method: UInt16 { (rawValue & 0x000F) | (rawValue & 0x00E0) >> 1 | (rawValue & 0x3E00) >> 2 }
        /// The class: 0 request, 1 indication, 2 success response, 3 error response.
        public var messageClass: UInt8 { UInt8((rawValue & 0x0010) >> 4 | (rawValue & 0x0100) >> 7) }
        public var description: String { "0x" + String(rawValue, radix: 16) }
    }

    /// Methods this module reads or writes: STUN's Binding (RFC 8489 §18.2) and TURN's (RFC 8656 §17).
    public enum Method {
        public static let binding: UInt16 = 0x001
        public static let allocate: UInt16 = 0x003
        public static let refresh: UInt16 = 0x004
        public static let createPermission: UInt16 = 0x008
        public static let channelBind: UInt16 = 0x009
    }

    /// The four message classes (RFC 8489 §5).
    public enum MessageClass {
        public static let request: UInt8 = 0
        public static let indication: UInt8 = 1
        public static let success: UInt8 = 2
        public static let error: UInt8 = 3
    }

    /// Attribute types this module reads or writes (RFC 8489 §18.3; TURN's, RFC 8656 §18).
    public enum AttributeType {
        public static let mappedAddress: UInt16 = 0x0001
        /// RFC 5780 (RFC 3489 before it): asks the server to answer from another address or port.
        public static let changeRequest: UInt16 = 0x0003
        public static let username: UInt16 = 0x0006
        public static let messageIntegrity: UInt16 = 0x0008
        public static let errorCode: UInt16 = 0x0009
        public static let channelNumber: UInt16 = 0x000C
        public static let lifetime: UInt16 = 0x000D
        public static let xorPeerAddress: UInt16 = 0x0012
        public static let xorRelayedAddress: UInt16 = 0x0016
        public static let requestedTransport: UInt16 = 0x0019
        public static let xorMappedAddress: UInt16 = 0x0020
        public static let software: UInt16 = 0x8022
        public static let fingerprint: UInt16 = 0x8028

        /// 0x0000–0x7FFF must be understood by the receiver, 0x8000–0xFFFF may be ignored (RFC 8489 §14).
        public static func isComprehensionRequired(_ type: UInt16) -> Bool { type < 0x8000 }
    }

    public struct Attribute: Sendable, Equatable {
        public var type: UInt16
        public var value: [UInt8]
        public init(type: UInt16, value: [UInt8]) {
            self.type = type
            self.value = value
        }
    }

    public var type: MessageType
    /// 12 bytes, or 16 for an RFC 3489 message.
    public var transactionID: [UInt8]
    public var attributes: [Attribute]
    /// Whether the parsed message ended with a FINGERPRINT that matched (RFC 8489 §14.7); a FINGERPRINT that
    /// does not match, or one that is not last, refuses the message.
    public private(set) var hadFingerprint = false

    public init(type: MessageType, transactionID: [UInt8], attributes: [Attribute] = []) {
        precondition(transactionID.count == 12 || transactionID.count == 16, "a STUN transaction id is 96 bits (128 in RFC 3489)")
        self.type = type
        self.transactionID = transactionID
        self.attributes = attributes
    }

    /// An RFC 3489 message: no magic cookie, a 128-bit transaction id, no FINGERPRINT.
    public var isClassic: Bool { transactionID.count == 16 }

    /// The first value of an attribute type.
    public func attribute(_ type: UInt16) -> [UInt8]? { attributes.first { $0.type == type }?.value }

    /// Parses a whole datagram. Refused: shorter than the header, leading bits set, a length that is not a multiple
    /// of 4 or disagrees with the datagram's size, an attribute running past the end, padding that is missing, and
    /// (with the magic cookie) attributes after FINGERPRINT or a FINGERPRINT that does not match. Attributes after
    /// MESSAGE-INTEGRITY other than FINGERPRINT are kept (the caller ignores them, RFC 8489 §14.5).
    public init(parsing bytes: [UInt8]) throws(StunError) {
        guard bytes.count >= Self.headerBytes else { throw StunError(.tooShort) }
        guard bytes.count <= Self.maxBytes else { throw StunError(.tooLong) }
        var reader = ByteReader(bytes)
        guard let rawType = reader.readUInt16(), rawType & 0xC000 == 0, let length = reader.readUInt16() else {
            throw StunError(.notStun)
        }
        let classic = !bytes[4..<8].elementsEqual([0x21, 0x12, 0xA4, 0x42])
        if !classic { _ = reader.readUInt32() }
        guard let transactionID = reader.readBytes(classic ? 16 : 12) else { throw StunError(.tooShort) }
        guard length % 4 == 0 else { throw StunError(.badLength) }
        guard Int(length) == bytes.count - Self.headerBytes else { throw StunError(.badLength) }
        var attributes: [Attribute] = []
        var fingerprinted = false
        while !reader.isAtEnd {
            guard !fingerprinted else { throw StunError(.attributeAfterFingerprint) }
            let start = reader.offset
            guard let type = reader.readUInt16(), let valueLength = reader.readUInt16(),
                  let value = reader.readBytes(Int(valueLength)) else { throw StunError(.truncatedAttribute) }
            let padding = (4 - Int(valueLength) % 4) % 4
            guard reader.readBytes(padding) != nil else { throw StunError(.truncatedAttribute) }
            if type == AttributeType.fingerprint && !classic {
                guard value.count == 4 else { throw StunError(.badFingerprint) }
                let expected = Self.fingerprint(of: bytes[..<start], lengthThroughFingerprint: start - Self.headerBytes + 8)
                let got = value.withUnsafeBufferPointer { UInt32($0[0]) << 24 | UInt32($0[1]) << 16 | UInt32($0[2]) << 8 | UInt32($0[3]) }
                guard got == expected else { throw StunError(.badFingerprint) }
                fingerprinted = true
            }
            attributes.append(Attribute(type: type, value: value))
        }
        self.type = MessageType(rawValue: rawType)
        self.transactionID = transactionID
        self.attributes = classic ? attributes : attributes.filter { $0.type != AttributeType.fingerprint }
        hadFingerprint = fingerprinted
    }

    /// The datagram: header, attributes (each padded with zeros), and a FINGERPRINT last when `fingerprint` (never
    /// for an RFC 3489 message).
    public func serialized(fingerprint requested: Bool = true) -> [UInt8] {
        let fingerprint = requested && !isClassic
        var body = ByteWriter(capacity: 64)
        for attribute in attributes {
            precondition(attribute.value.count <= Int(UInt16.max), "STUN attribute too long")
            body.write(attribute.type)
            body.write(UInt16(attribute.value.count))
            body.write(bytes: attribute.value)
            body.write(bytes: repeatElement(0 as UInt8, count: (4 - attribute.value.count % 4) % 4))
        }
        var out = ByteWriter(capacity: Self.headerBytes + body.bytes.count + 8)
        out.write(type.rawValue)
        out.write(UInt16(body.bytes.count + (fingerprint ? 8 : 0)))
        if !isClassic { out.write(Self.magicCookie) }
        out.write(bytes: transactionID)
        out.write(bytes: body.bytes)
        guard fingerprint else { return out.bytes }
        let crc = Self.fingerprint(of: out.bytes[...], lengthThroughFingerprint: body.bytes.count + 8)
        out.write(AttributeType.fingerprint)
        out.write(UInt16(4))
        out.write(crc)
        return out.bytes
    }

    /// FINGERPRINT over `prefix` (header and attributes before it), whose header length field must already count
    /// the FINGERPRINT attribute (RFC 8489 §14.7): the length field is patched in the CRC's input when it does not.
    static func fingerprint(of prefix: ArraySlice<UInt8>, lengthThroughFingerprint: Int) -> UInt32 {
        var crc = CRC32()
        let start = prefix.startIndex
        crc.update(prefix[start..<start + 2])
        crc.update([UInt8(truncatingIfNeeded: lengthThroughFingerprint >> 8), UInt8(truncatingIfNeeded: lengthThroughFingerprint)])
        crc.update(prefix[(start + 4)...])
        return crc.value ^ fingerprintXor
    }
}

/// Why bytes were refused as a STUN message.
public struct StunError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Kind: String, Sendable {
        case tooShort, tooLong, notStun, badLength, truncatedAttribute, attributeAfterFingerprint, badFingerprint
    }

    public let kind: Kind
    public init(_ kind: Kind) { self.kind = kind }
    public var description: String { "STUN: \(kind.rawValue)" }
}
