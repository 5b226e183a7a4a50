import MeshIdentity
import MeshWire

/// Link datagram formats (docs/links.md). The first byte is the message type; its values lie outside the
/// ranges RFC 7983 gives STUN (0–3), DTLS (20–63) and RTP (128–191), so STUN can share the port later.
public enum LinkMessageType: UInt8, Sendable {
    case handshakeInit = 0xE1
    case handshakeResponse = 0xE2
    case transport = 0xE3
}

public enum LinkWire {
    public static let version: UInt8 = 1
    public static let ephemeralBytes = 32
    public static let signatureBytes = 65
    /// type, version, sender index, ephemeral, timestamp, signature.
    public static let initBytes = 1 + 1 + 4 + ephemeralBytes + 8 + signatureBytes
    /// type, version, sender index, receiver index, ephemeral, signature.
    public static let responseBytes = 1 + 1 + 4 + 4 + ephemeralBytes + signatureBytes
    /// type, receiver index, counter.
    public static let transportHeaderBytes = 1 + 4 + 8
    /// Smallest transport datagram: header and the AEAD tag of an empty payload.
    public static let transportMinBytes = transportHeaderBytes + LinkCrypto.tagBytes
    /// Counters stop well before the nonce space ends; a session is rekeyed long before.
    public static let counterLimit: UInt64 = 1 << 60

    static let initLabel = Array("meshlink/v1/init".utf8)
    static let responseLabel = Array("meshlink/v1/response".utf8)
    static let keysLabel = Array("meshlink/v1/keys".utf8)
}

/// A parsed handshake initiation: the initiator's ephemeral X25519 key, signed by its node key.
struct HandshakeInit {
    var senderIndex: UInt32
    var ephemeral: [UInt8]
    var timestampMs: UInt64
    var signature: Signature

    static func signedPart(senderIndex: UInt32, ephemeral: [UInt8], timestampMs: UInt64) -> [UInt8] {
        var w = ByteWriter(capacity: LinkWire.initBytes)
        w.write(LinkMessageType.handshakeInit.rawValue)
        w.write(LinkWire.version)
        w.write(senderIndex)
        w.write(bytes: ephemeral)
        w.write(timestampMs)
        return w.bytes
    }

    static func digest(signedPart: [UInt8]) -> [UInt8] { Keccak.hash256(LinkWire.initLabel + signedPart) }

    init(senderIndex: UInt32, ephemeral: [UInt8], timestampMs: UInt64, signature: Signature) {
        self.senderIndex = senderIndex
        self.ephemeral = ephemeral
        self.timestampMs = timestampMs
        self.signature = signature
    }

    init?(parsing bytes: [UInt8]) {
        guard bytes.count == LinkWire.initBytes else { return nil }
        var r = ByteReader(bytes, offset: 1)
        guard r.readUInt8() == LinkWire.version,
              let index = r.readUInt32(),
              let eph = r.readBytes(LinkWire.ephemeralBytes),
              let ts = r.readUInt64(),
              let sigBytes = r.readBytes(LinkWire.signatureBytes),
              let sig = Signature(bytes: sigBytes) else { return nil }
        self.init(senderIndex: index, ephemeral: eph, timestampMs: ts, signature: sig)
    }

    var signedPart: [UInt8] { Self.signedPart(senderIndex: senderIndex, ephemeral: ephemeral, timestampMs: timestampMs) }
    var serialized: [UInt8] { signedPart + signature.bytes }
}

/// A parsed handshake response: the responder's ephemeral key, signed together with the whole initiation.
struct HandshakeResponse {
    var senderIndex: UInt32
    var receiverIndex: UInt32
    var ephemeral: [UInt8]
    var signature: Signature

    static func signedPart(senderIndex: UInt32, receiverIndex: UInt32, ephemeral: [UInt8]) -> [UInt8] {
        var w = ByteWriter(capacity: LinkWire.responseBytes)
        w.write(LinkMessageType.handshakeResponse.rawValue)
        w.write(LinkWire.version)
        w.write(senderIndex)
        w.write(receiverIndex)
        w.write(bytes: ephemeral)
        return w.bytes
    }

    /// The responder signs the initiation it answers too, binding both ephemerals to both identities.
    static func digest(initMessage: [UInt8], signedPart: [UInt8]) -> [UInt8] {
        Keccak.hash256(LinkWire.responseLabel + initMessage + signedPart)
    }

    init(senderIndex: UInt32, receiverIndex: UInt32, ephemeral: [UInt8], signature: Signature) {
        self.senderIndex = senderIndex
        self.receiverIndex = receiverIndex
        self.ephemeral = ephemeral
        self.signature = signature
    }

    init?(parsing bytes: [UInt8]) {
        guard bytes.count == LinkWire.responseBytes else { return nil }
        var r = ByteReader(bytes, offset: 1)
        guard r.readUInt8() == LinkWire.version,
              let sender = r.readUInt32(),
              let receiver = r.readUInt32(),
              let eph = r.readBytes(LinkWire.ephemeralBytes),
              let sigBytes = r.readBytes(LinkWire.signatureBytes),
              let sig = Signature(bytes: sigBytes) else { return nil }
        self.init(senderIndex: sender, receiverIndex: receiver, ephemeral: eph, signature: sig)
    }

    var signedPart: [UInt8] { Self.signedPart(senderIndex: senderIndex, receiverIndex: receiverIndex, ephemeral: ephemeral) }
    var serialized: [UInt8] { signedPart + signature.bytes }
}

/// Messages inside an authenticated transport datagram. The first plaintext byte says which.
enum InnerType: UInt8 {
    case keepalive = 0
    case ping = 1
    case pong = 2
    /// The sender is shutting down: take the link down now rather than after the dead-link timeout.
    case close = 3
    case application = 16
}
