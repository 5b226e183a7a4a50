import MeshWire

/// A transport address as STUN carries it: family, port, and 4 (IPv4) or 16 (IPv6) address bytes.
public struct StunAddress: Sendable, Hashable, CustomStringConvertible {
    /// 4 or 16 bytes, network order.
    public let ip: [UInt8]
    public let port: UInt16

    public init?(ip: [UInt8], port: UInt16) {
        guard ip.count == 4 || ip.count == 16 else { return nil }
        self.ip = ip
        self.port = port
    }

    public var isIPv4: Bool { ip.count == 4 }

    public var description: String {
        if isIPv4 { return ip.map(String.init).joined(separator: ".") + ":\(port)" }
        let groups = stride(from: 0, to: 16, by: 2).map { String(UInt16(ip[$0]) << 8 | UInt16(ip[$0 + 1]), radix: 16) }
        return "[" + groups.joined(separator: ":") + "]:\(port)"
    }

    /// The value of an XOR-MAPPED-ADDRESS (RFC 8489 §14.2): port XOR the cookie's high 16 bits; the address XOR
    /// the cookie (IPv4) or the cookie and the transaction id (IPv6). TURN's XOR-PEER-ADDRESS and
    /// XOR-RELAYED-ADDRESS are encoded the same way (RFC 8656 §18.3, §18.5).
    public func xorMappedValue(transactionID: [UInt8]) -> [UInt8] {
        var out = ByteWriter(capacity: 20)
        out.write(UInt8(0))
        out.write(UInt8(isIPv4 ? 1 : 2))
        out.write(port ^ UInt16(StunMessage.magicCookie >> 16))
        let key = Self.xorKey(transactionID)
        out.write(bytes: ip.enumerated().map { $0.element ^ key[$0.offset] })
        return out.bytes
    }

    /// Reads an XOR-MAPPED-ADDRESS (or XOR-PEER-ADDRESS, XOR-RELAYED-ADDRESS) value; nil when the family byte or
    /// the length is wrong.
    public init?(xorMappedValue value: [UInt8], transactionID: [UInt8]) {
        var reader = ByteReader(value)
        guard reader.readUInt8() != nil, let family = reader.readUInt8(), let xPort = reader.readUInt16() else { return nil }
        let size: Int
        switch family {
        case 1: size = 4
        case 2: size = 16
        default: return nil
        }
        guard reader.remaining == size, let xAddress = reader.readBytes(size) else { return nil }
        let key = Self.xorKey(transactionID)
        self.init(ip: xAddress.enumerated().map { $0.element ^ key[$0.offset] },
                  port: xPort ^ UInt16(StunMessage.magicCookie >> 16))
    }

    /// The value of a MAPPED-ADDRESS (RFC 8489 §14.1, RFC 3489 §11.2.1): family, port, address in the clear.
    public var mappedValue: [UInt8] {
        [0, isIPv4 ? 1 : 2, UInt8(port >> 8), UInt8(port & 0xFF)] + ip
    }

    /// Reads a MAPPED-ADDRESS value.
    public init?(mappedValue value: [UInt8]) {
        guard value.count == 8 && value[1] == 1 || value.count == 20 && value[1] == 2 else { return nil }
        self.init(ip: Array(value[4...]), port: UInt16(value[2]) << 8 | UInt16(value[3]))
    }

    /// The magic cookie followed by the transaction id: 16 bytes.
    private static func xorKey(_ transactionID: [UInt8]) -> [UInt8] {
        [0x21, 0x12, 0xA4, 0x42] + transactionID
    }
}

extension StunMessage {
    /// A Binding Request with a FINGERPRINT and nothing else, as a client asking "what is my address?" sends it
    /// (RFC 8489 §6.1).
    public static func bindingRequest(transactionID: [UInt8]) -> [UInt8] {
        StunMessage(type: .bindingRequest, transactionID: transactionID).serialized()
    }

    /// The Binding Success Response to `transactionID`: XOR-MAPPED-ADDRESS `mapped`, then FINGERPRINT; to an RFC 3489
    /// transaction id (16 bytes), MAPPED-ADDRESS alone, as RFC 5389 §12.2 asks.
    public static func bindingSuccess(transactionID: [UInt8], mapped: StunAddress) -> [UInt8] {
        let attribute = transactionID.count == 16
            ? Attribute(type: AttributeType.mappedAddress, value: mapped.mappedValue)
            : Attribute(type: AttributeType.xorMappedAddress, value: mapped.xorMappedValue(transactionID: transactionID))
        return StunMessage(type: .bindingSuccess, transactionID: transactionID, attributes: [attribute]).serialized()
    }

    /// The reflexive address in a Binding Success Response (its XOR-MAPPED-ADDRESS; none in RFC 3489 messages).
    public var xorMappedAddress: StunAddress? { xorAddress(AttributeType.xorMappedAddress) }

    /// The first attribute of `type` read as an XOR-encoded address (XOR-MAPPED-ADDRESS, XOR-PEER-ADDRESS,
    /// XOR-RELAYED-ADDRESS); nil when absent or malformed, and in RFC 3489 messages, which have no cookie to XOR with.
    public func xorAddress(_ type: UInt16) -> StunAddress? {
        guard !isClassic else { return nil }
        return attribute(type).flatMap { StunAddress(xorMappedValue: $0, transactionID: transactionID) }
    }

    /// The reflexive address as MAPPED-ADDRESS carries it (RFC 3489 servers, and RFC 5389 servers answering them).
    public var mappedAddress: StunAddress? { attribute(AttributeType.mappedAddress).flatMap(StunAddress.init(mappedValue:)) }
}
