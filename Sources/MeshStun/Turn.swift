import MeshWire

/// What a TURN client (RFC 8656, "Traversal Using Relays around NAT") sends and reads to relay UDP through a channel:
/// Allocate, CreatePermission, ChannelBind and Refresh requests, the answers' XOR-RELAYED-ADDRESS, LIFETIME and ERROR-CODE,
/// and ChannelData framing. No long-term credentials (USERNAME, REALM, NONCE, MESSAGE-INTEGRITY): a server that
/// wants them answers 401, which `errorCode` reads.
extension StunMessage {
    /// REQUESTED-TRANSPORT's protocol number for UDP (RFC 8656 §18.6).
    public static let udpTransport: UInt8 = 17

    /// An Allocate request for a UDP relay (REQUESTED-TRANSPORT 17, RFC 8656 §7.1), without credentials.
    public static func allocateRequest(transactionID: [UInt8]) -> [UInt8] {
        StunMessage(type: MessageType(method: Method.allocate, messageClass: MessageClass.request), transactionID: transactionID,
                    attributes: [Attribute(type: AttributeType.requestedTransport, value: [udpTransport, 0, 0, 0])]).serialized()
    }

    /// A CreatePermission request for `peer`'s IP address (XOR-PEER-ADDRESS, RFC 8656 §9.1).
    public static func createPermissionRequest(transactionID: [UInt8], peer: StunAddress) -> [UInt8] {
        StunMessage(type: MessageType(method: Method.createPermission, messageClass: MessageClass.request), transactionID: transactionID,
                    attributes: [Attribute(type: AttributeType.xorPeerAddress, value: peer.xorMappedValue(transactionID: transactionID))])
            .serialized()
    }

    /// A ChannelBind request binding `channel` (0x4000–0x4FFF) to `peer` (CHANNEL-NUMBER and XOR-PEER-ADDRESS,
    /// RFC 8656 §12.1); the binding also installs a permission for the peer's IP address.
    public static func channelBindRequest(transactionID: [UInt8], channel: UInt16, peer: StunAddress) -> [UInt8] {
        precondition(ChannelData.channels.contains(channel), "a TURN channel number is 0x4000–0x4FFF")
        return StunMessage(type: MessageType(method: Method.channelBind, messageClass: MessageClass.request), transactionID: transactionID,
                           attributes: [Attribute(type: AttributeType.channelNumber, value: [UInt8(channel >> 8), UInt8(channel & 0xFF), 0, 0]),
                                        Attribute(type: AttributeType.xorPeerAddress, value: peer.xorMappedValue(transactionID: transactionID))])
            .serialized()
    }

    /// A Refresh request asking for `lifetime` more seconds of the allocation; 0 deletes it (RFC 8656 §8.1).
    public static func refreshRequest(transactionID: [UInt8], lifetime: UInt32) -> [UInt8] {
        StunMessage(type: MessageType(method: Method.refresh, messageClass: MessageClass.request), transactionID: transactionID,
                    attributes: [Attribute(type: AttributeType.lifetime, value: (0..<4).map { UInt8(truncatingIfNeeded: lifetime >> (24 - 8 * $0)) })])
            .serialized()
    }

    /// The relayed transport address an Allocate success response gives (XOR-RELAYED-ADDRESS).
    public var xorRelayedAddress: StunAddress? { xorAddress(AttributeType.xorRelayedAddress) }

    /// The peer of a CreatePermission or ChannelBind request (its first XOR-PEER-ADDRESS).
    public var xorPeerAddress: StunAddress? { xorAddress(AttributeType.xorPeerAddress) }

    /// The channel of a ChannelBind request (CHANNEL-NUMBER: the number, then two reserved bytes).
    public var channelNumber: UInt16? {
        guard let value = attribute(AttributeType.channelNumber), value.count == 4 else { return nil }
        return UInt16(value[0]) << 8 | UInt16(value[1])
    }

    /// Seconds an allocation lives unless refreshed (LIFETIME, RFC 8656 §18.2).
    public var lifetime: UInt32? {
        guard let value = attribute(AttributeType.lifetime), value.count == 4 else { return nil }
        return value.reduce(0) { $0 << 8 | UInt32($1) }
    }

    /// An error response's ERROR-CODE; nil when absent or malformed.
    public var errorCode: ErrorCode? { attribute(AttributeType.errorCode).flatMap(ErrorCode.init(value:)) }

    /// ERROR-CODE (RFC 8489 §14.8): 21 reserved zero bits, the hundreds digit (3 bits, 3–6), the rest (0–99), and a
    /// UTF-8 reason phrase.
    public struct ErrorCode: Sendable, Equatable, CustomStringConvertible {
        /// 300–699.
        public let code: Int
        public let reason: String

        public init?(code: Int, reason: String) {
            guard (300...699).contains(code) else { return nil }
            self.code = code
            self.reason = reason
        }

        public init?(value: [UInt8]) {
            guard value.count >= 4, value[0] == 0, value[1] == 0, value[2] & 0xF8 == 0, value[3] < 100 else { return nil }
            self.init(code: Int(value[2]) * 100 + Int(value[3]), reason: String(decoding: value[4...], as: UTF8.self))
        }

        public var value: [UInt8] { [0, 0, UInt8(code / 100), UInt8(code % 100)] + Array(reason.utf8) }

        /// "486 Allocation Quota Reached" (the reason without the trailing spaces or NULs some servers send).
        public var description: String {
            let reason = String(reason.reversed().drop { $0.isWhitespace || $0 == "\0" }.reversed())
            return reason.isEmpty ? String(code) : "\(code) \(reason)"
        }
    }
}

/// TURN's ChannelData message (RFC 8656 §12.4): `[channel u16][length u16][data]`, the data of one datagram to or
/// from the peer bound to the channel. Over UDP the data need not be padded to 4 bytes (§12.5), and is not here.
public enum ChannelData {
    public static let headerBytes = 4
    /// The channel numbers a client may bind (RFC 8656 §12).
    public static let channels: ClosedRange<UInt16> = 0x4000...0x4FFF

    /// `data` on `channel`, unpadded. The channel is written as given: a sender that fills it in later (a template
    /// stamped per packet) may leave it 0 until then.
    public static func frame(channel: UInt16, data: [UInt8]) -> [UInt8] {
        precondition(data.count <= Int(UInt16.max), "ChannelData carries at most 65,535 bytes")
        var out = ByteWriter(capacity: headerBytes + data.count)
        out.write(channel)
        out.write(UInt16(data.count))
        out.write(bytes: data)
        return out.bytes
    }

    /// The channel and data of a ChannelData datagram; nil when the channel is outside 0x4000–0x4FFF, the datagram is
    /// shorter than its length says, or more than 3 bytes (padding) follow the data.
    public static func parse(_ bytes: [UInt8]) -> (channel: UInt16, data: ArraySlice<UInt8>)? {
        guard bytes.count >= headerBytes else { return nil }
        let channel = UInt16(bytes[0]) << 8 | UInt16(bytes[1])
        let length = Int(bytes[2]) << 8 | Int(bytes[3])
        guard channels.contains(channel), (0...3).contains(bytes.count - headerBytes - length) else { return nil }
        return (channel, bytes[headerBytes..<headerBytes + length])
    }
}
